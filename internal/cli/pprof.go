package cli

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/hashicorp/go-hclog"
)

// IsLoopback reports whether a listen address only accepts connections
// from this host.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// PprofHandler serves Go's runtime profiles under /debug/pprof/ for a
// listener on addr. On a loopback address it serves every request; off
// loopback every request goes through guard first (ordinal serve's admin
// check), which must not be nil then.
func PprofHandler(addr string, guard func(http.Handler) http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	if IsLoopback(addr) {
		return mux
	}
	return guard(mux)
}

// ServePprof serves PprofHandler(addr, guard) on a listener of its own,
// so that profiling never shares a port with the API, until the process
// exits. Without a guard only a loopback address is allowed. It returns
// once the listener is open.
func ServePprof(addr string, guard func(http.Handler) http.Handler, logger hclog.Logger) error {
	if !IsLoopback(addr) && guard == nil {
		return fmt.Errorf("pprof on %s: only a loopback address is allowed here", addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for pprof on %s: %w", addr, err)
	}
	logger.Info("serving pprof", "addr", lis.Addr().String(), "admin_only", !IsLoopback(addr))
	srv := &http.Server{Handler: PprofHandler(addr, guard), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	return nil
}
