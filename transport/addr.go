package transport

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// hostAddr is a net.Addr for an advertised "host:port" whose host is a DNS
// name rather than an IP literal. Resolution is left to the dialing peer so
// that names which move between IPs (for example in Kubernetes) keep working.
type hostAddr string

// Network implements net.Addr.
func (a hostAddr) Network() string { return "tcp" }

// String implements net.Addr.
func (a hostAddr) String() string { return string(a) }

// parseAdvertise turns an advertise string into a net.Addr, using a
// *net.TCPAddr for IP literals and a hostAddr for names. The result is
// validated with validateAdvertise.
func parseAdvertise(s string) (net.Addr, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		addr := net.TCPAddrFromAddrPort(ap)
		return addr, validateAdvertise(addr)
	}
	addr := hostAddr(s)
	return addr, validateAdvertise(addr)
}

// validateAdvertise reports, wrapping ErrUnadvertisable, whether addr cannot
// be dialed by other nodes: nil, not "host:port", an empty or unspecified
// host, or a port outside 1-65535.
func validateAdvertise(addr net.Addr) error {
	if addr == nil {
		return fmt.Errorf("%w: no address", ErrUnadvertisable)
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrUnadvertisable, addr.String(), err)
	}
	if isUnspecifiedHost(host) {
		return fmt.Errorf("%w: %q has an unspecified host", ErrUnadvertisable, addr.String())
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%w: %q has an invalid port", ErrUnadvertisable, addr.String())
	}
	return nil
}

// isUnspecifiedHost reports whether host is empty or an unspecified IP
// (0.0.0.0 or ::), i.e. a bind-all address that means nothing to a peer.
func isUnspecifiedHost(host string) bool {
	if host == "" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsUnspecified()
}

// dialHost returns the host part of a "host:port" dial address, or the whole
// address when it has no port. It is used as the TLS ServerName.
func dialHost(address string) string {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return address
	}
	return host
}
