// Package admin serves a node's admin HTTP listener (serve --metrics-addr):
// Prometheus metrics at /metrics, liveness at /healthz, readiness at
// /readyz and, when enabled, Go's profiles under /debug/pprof/. It is
// plain HTTP on a port of its own, apart from the gRPC ports, so that
// monitoring and orchestrators reach it without gRPC or client
// certificates. See DESIGN.md.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is the default address of the admin listener: loopback, so
// that a node on a laptop exposes nothing; deployments that are scraped
// or probed from elsewhere set a reachable address.
const DefaultAddr = "127.0.0.1:34906"

// ReadyTimeout bounds one readiness check.
const ReadyTimeout = 2 * time.Second

// ErrPprofUnguarded is returned by Listen when profiles are asked for on a
// non-loopback address without a Guard.
var ErrPprofUnguarded = errors.New("admin: /debug/pprof beyond loopback needs admin credentials")

// Config configures the admin listener.
type Config struct {
	// Addr is the address to listen on; port 0 picks a free port.
	Addr string

	// Gatherer supplies /metrics. Nil serves no /metrics (404).
	Gatherer prometheus.Gatherer

	// Ready reports whether the node should receive traffic; /readyz
	// answers 200 when it returns nil and 503 with its message otherwise.
	// Nil means always ready.
	Ready func(ctx context.Context) error

	// Pprof serves Go's profiles under /debug/pprof/. On a loopback
	// address every request is served; beyond loopback every request goes
	// through Guard first, which must then be set. Profiles reveal memory
	// contents and cost CPU, so they are off by default.
	Pprof bool

	// Guard wraps the profile handlers beyond loopback: the node's admin
	// check (an admin bearer token).
	Guard func(http.Handler) http.Handler

	// Logger receives the listener's logs. Nil means none.
	Logger hclog.Logger
}

// Server is a running admin listener.
type Server struct {
	lis net.Listener
	srv *http.Server
	err chan error
}

// Listen opens the admin listener and serves it in the background until
// Close.
func Listen(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Pprof && !IsLoopback(cfg.Addr) && cfg.Guard == nil {
		return nil, fmt.Errorf("%w: %s is not a loopback address", ErrPprofUnguarded, cfg.Addr)
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", cfg.Addr, err)
	}
	s := &Server{
		lis: lis,
		srv: &http.Server{Handler: Handler(cfg), ReadHeaderTimeout: 10 * time.Second},
		err: make(chan error, 1),
	}
	cfg.Logger.Info("serving metrics and health", "addr", lis.Addr().String(), "pprof", cfg.Pprof)
	go func() { s.err <- s.srv.Serve(lis) }()
	return s, nil
}

// Addr returns the address the listener listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the listener and ends the requests in flight.
func (s *Server) Close() error {
	err := s.srv.Close()
	if serveErr := <-s.err; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}

// Handler returns the admin listener's handler for cfg.
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		// The process answers: it is alive. Whether it should get
		// traffic is /readyz's question; a liveness probe that failed
		// on it would restart nodes that are only waiting for a quorum.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
			defer cancel()
			if err := cfg.Ready(ctx); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
	if cfg.Pprof {
		p := http.NewServeMux()
		p.HandleFunc("/debug/pprof/", pprof.Index)
		p.HandleFunc("/debug/pprof/profile", pprof.Profile)
		p.HandleFunc("/debug/pprof/trace", pprof.Trace)
		p.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		p.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		var h http.Handler = p
		if !IsLoopback(cfg.Addr) {
			h = cfg.Guard(p)
		}
		mux.Handle("/debug/pprof/", h)
	}
	return mux
}

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
