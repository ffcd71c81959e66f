package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// LeaderHealthService is the service name, for the gRPC health service
// (grpc.health.v1.Health), that a node reports SERVING while it leads:
// while it serves STRONG calls itself instead of forwarding them. Every
// other node reports NOT_SERVING. The health service needs only the ids
// role, so any client may ask. A Client given several nodes watches it to
// send STRONG calls straight to the leader.
const LeaderHealthService = "ordinal.v1.Leader"

// sequencerHealthService is the health service name under which a node
// reports whether it is a healthy member (it knows a leader and is in the
// cluster's configuration).
const sequencerHealthService = "ordinal.v1.SequencerService"

// ErrInvalidAddress is wrapped by the error New and NewConn return for an
// address list they cannot read: an empty entry, or an entry that is
// neither host:port nor a gRPC target with a scheme. It wraps
// ErrInvalidOption, as the address is New's first option.
var ErrInvalidAddress = fmt.Errorf("%w: address", ErrInvalidOption)

// target is one entry of the address list given to New.
type target struct {
	raw string // as given, trimmed
	// host and port split a host:port entry; host is empty for a gRPC
	// target with a scheme, which is dialled as it is.
	host, port string
	// name says host is a DNS name to look up; false for an IP address,
	// an empty host (this host) and a gRPC target.
	name bool
}

// parseTargets splits a comma-separated address list: "host:port",
// "[v6]:port", or a gRPC target with a scheme ("dns:///name:port",
// "unix:///path"). Duplicate entries count once.
func parseTargets(list string) ([]target, error) {
	var out []target
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			return nil, fmt.Errorf("%w %q: an empty entry; give host:port, or several separated by commas (a:1,b:2)", ErrInvalidAddress, list)
		}
		if slices.ContainsFunc(out, func(t target) bool { return t.raw == raw }) {
			continue
		}
		if isGRPCTarget(raw) {
			if strings.Contains(list, ",") {
				return nil, fmt.Errorf("%w %q: a gRPC target with a scheme stands alone; list nodes as host:port (a:1,b:2)", ErrInvalidAddress, raw)
			}
			out = append(out, target{raw: raw})
			continue
		}
		host, port, err := net.SplitHostPort(raw)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %v; give host:port, or several separated by commas (a:1,b:2)", ErrInvalidAddress, raw, errors.Unwrap(err))
		}
		if port == "" {
			return nil, fmt.Errorf("%w %q: no port; give host:port", ErrInvalidAddress, raw)
		}
		_, ipErr := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
		out = append(out, target{raw: raw, host: host, port: port, name: host != "" && ipErr != nil})
	}
	return out, nil
}

// isGRPCTarget reports whether s is a gRPC target with a scheme, which
// gRPC resolves itself, rather than host:port.
func isGRPCTarget(s string) bool {
	if strings.Contains(s, "://") {
		return true
	}
	scheme, _, ok := strings.Cut(s, ":")
	return ok && (strings.EqualFold(scheme, "unix") || strings.EqualFold(scheme, "unix-abstract"))
}

// endpoint is one node as the Client dials it.
type endpoint struct {
	// name is the list entry it came from: the host TLS verifies and the
	// address errors show.
	name string
	// addr is the IP:port dialled, the same as name for an entry that is
	// an address already; empty for a gRPC target, dialled as it is.
	addr string
}

// String names the endpoint as errors show it: the entry, and the
// address it resolved to when that differs.
func (e endpoint) String() string {
	if e.addr == "" || e.addr == e.name {
		return e.name
	}
	return e.name + " (" + e.addr + ")"
}

// lookupFunc returns the IP addresses of a DNS name:
// net.DefaultResolver.LookupHost, or a fake in tests.
type lookupFunc func(ctx context.Context, host string) ([]string, error)

// resolve returns the endpoints of targets: one per entry that is an
// address or a gRPC target, one per address for a DNS name, in the
// order given (a name's addresses sorted), each address once. A name that
// cannot be looked up keeps the endpoints prev has for it, so that a DNS
// server down for a moment does not drop nodes that still answer; the
// error is returned only when no endpoint is left.
func resolve(ctx context.Context, targets []target, lookup lookupFunc, prev []endpoint) ([]endpoint, error) {
	var out []endpoint
	seen := map[string]bool{}
	add := func(e endpoint) {
		key := e.addr
		if key == "" {
			key = e.name
		}
		if !seen[key] {
			seen[key] = true
			out = append(out, e)
		}
	}
	var errs []error
	for _, t := range targets {
		switch {
		case t.host == "" && t.port == "": // a gRPC target
			add(endpoint{name: t.raw})
			continue
		case !t.name:
			add(endpoint{name: t.raw, addr: t.raw})
			continue
		}
		ips, err := lookup(ctx, t.host)
		if err == nil && len(ips) == 0 {
			err = fmt.Errorf("no addresses")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s: %w", t.host, err))
			for _, e := range prev {
				if e.name == t.raw {
					add(e)
				}
			}
			continue
		}
		slices.Sort(ips)
		for _, ip := range ips {
			add(endpoint{name: t.raw, addr: net.JoinHostPort(ip, t.port)})
		}
	}
	if len(out) == 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// names returns the entries of targets, as given.
func names(targets []target) []string {
	out := make([]string, len(targets))
	for i, t := range targets {
		out[i] = t.raw
	}
	return out
}

// allLocal reports whether every target is on this host (loopback or a
// Unix socket), where a token may travel without TLS.
func allLocal(targets []target) bool {
	for _, t := range targets {
		if _, local := targetEndpoint(t.raw); !local {
			return false
		}
	}
	return true
}

// minResolveInterval is the least time between two lookups of the names
// in an address list, however often connections fail.
const minResolveInterval = time.Second

// resolveEvery is how often the names of an address list are looked up
// again while the Client is in use, to follow nodes that move.
const resolveEvery = 30 * time.Second

// dialEndpoint returns a connection to one node. An address is dialled
// through a resolver that knows only it, so that TLS verifies, and
// the :authority header names, the entry it came from: a certificate for
// ordinal.example.com is accepted from each of the addresses the name
// resolves to. A gRPC target is dialled as it is.
func dialEndpoint(e endpoint, o *options, local bool) (*grpc.ClientConn, error) {
	if e.addr == "" {
		return grpc.NewClient(e.name, o.dialOptions(e.name, local)...)
	}
	r := manual.NewBuilderWithScheme(endpointScheme)
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: e.addr}}})
	return grpc.NewClient(endpointScheme+":///"+e.name, append(o.dialOptions(e.name, local), grpc.WithResolvers(r))...)
}

// endpointScheme is the scheme of the targets the Client dials through
// its own resolvers.
const endpointScheme = "ordinal"

// dialList returns one gRPC connection to the nodes of an address list
// (NewConn with several addresses): a resolver of the Client's own looks
// the names up, again when gRPC asks (a connection failed) but at most
// every minResolveInterval, and gRPC's pick_first balancer connects to
// the first node that answers and moves on when it fails. Each address
// carries the entry it came from as its ServerName, which TLS verifies.
func dialList(targets []target, o *options) (*grpc.ClientConn, error) {
	lr := &listResolver{targets: targets, lookup: o.lookupFunc()}
	r := manual.NewBuilderWithScheme(endpointScheme)
	r.BuildCallback = func(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) {
		lr.start(cc)
	}
	r.ResolveNowCallback = func(resolver.ResolveNowOptions) { lr.resolveNow() }
	r.CloseCallback = lr.close
	return grpc.NewClient(endpointScheme+":///"+targets[0].raw, append(o.dialOptions(targets[0].raw, allLocal(targets)), grpc.WithResolvers(r))...)
}

// listResolver feeds a ClientConn the endpoints of an address list.
type listResolver struct {
	targets []target
	lookup  lookupFunc

	mu      sync.Mutex
	cc      resolver.ClientConn
	ctx     context.Context
	cancel  context.CancelFunc
	running bool      // a lookup is in flight
	last    time.Time // when the last lookup started
	eps     []endpoint
}

func (lr *listResolver) start(cc resolver.ClientConn) {
	lr.mu.Lock()
	if lr.cancel != nil {
		lr.cancel() // built again, after the channel was idle
	}
	lr.cc = cc
	lr.ctx, lr.cancel = context.WithCancel(context.Background())
	lr.last = time.Time{}
	lr.mu.Unlock()
	lr.resolveNow()
}

func (lr *listResolver) resolveNow() {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	if lr.cc == nil || lr.running || lr.ctx.Err() != nil || time.Since(lr.last) < minResolveInterval {
		return
	}
	lr.running, lr.last = true, time.Now()
	go lr.run(lr.ctx, lr.cc, lr.eps)
}

func (lr *listResolver) run(ctx context.Context, cc resolver.ClientConn, prev []endpoint) {
	lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	eps, err := resolve(lctx, lr.targets, lr.lookup, prev)
	cancel()
	lr.mu.Lock()
	defer lr.mu.Unlock()
	lr.running = false
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		cc.ReportError(fmt.Errorf("ordinal: no address for %s: %w", strings.Join(names(lr.targets), ", "), err))
		return
	}
	lr.eps = eps
	addrs := make([]resolver.Address, len(eps))
	for i, e := range eps {
		addrs[i] = resolver.Address{Addr: e.addr, ServerName: e.name}
	}
	_ = cc.UpdateState(resolver.State{Addresses: addrs})
}

func (lr *listResolver) close() {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	if lr.cancel != nil {
		lr.cancel()
	}
}

// resolveTimeout bounds one lookup of an address list's names.
const resolveTimeout = 10 * time.Second
