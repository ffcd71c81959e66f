package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// DefaultDialTimeout is the Config.DialTimeout used when none is set. It
	// is short because a Raft leader dials followers on its replication and
	// heartbeat paths: a peer that cannot be reached within a couple of
	// seconds is better reported as failed so raft can back off and retry.
	DefaultDialTimeout = 2 * time.Second

	// DefaultHandshakeTimeout is the Config.HandshakeTimeout used when none
	// is set. It is longer than DefaultDialTimeout so that a legitimate
	// client, whose own dial budget expires first, is never cut off by the
	// server before it gives up by itself.
	DefaultHandshakeTimeout = 5 * time.Second
)

// Config configures a StreamLayer. The zero value is plain TCP with default
// timeouts. A Config must not be modified after it has been passed to
// NewStreamLayer or Listen; the *tls.Config values it points to must not be
// modified either, as they are shared by every connection.
type Config struct {
	// ServerTLS, when set, wraps every accepted connection in TLS (server
	// side). Nil means plain TCP. Set ClientAuth to
	// tls.RequireAndVerifyClientCert (with ClientCAs) for mutual TLS, which
	// is strongly recommended: without it anyone who can reach the port can
	// send Raft RPCs, including votes and log entries.
	ServerTLS *tls.Config

	// ClientTLS, when set, is used for outgoing connections. Nil means plain
	// TCP. If ServerName is empty it is derived, per dial, from the host part
	// of the dialed address, so one Config can verify every peer as long as
	// each peer's certificate names the host (DNS name or IP) it is
	// advertised under. ClientTLS itself is never modified.
	ClientTLS *tls.Config

	// DialTimeout bounds TCP connect plus TLS handshake of outgoing
	// connections. Raft also passes a timeout to every dial (the transport's
	// RPC timeout); the smaller of the two applies. Zero or negative means
	// DefaultDialTimeout. Lower values detect dead peers faster but risk
	// spurious failures on slow or distant links.
	DialTimeout time.Duration

	// HandshakeTimeout bounds the server-side TLS handshake on accepted
	// connections. The handshake runs in the background after Accept
	// returns, so a slow or malicious peer never blocks Accept for others;
	// when the timeout expires the connection is closed and its first Read
	// fails. Zero or negative means DefaultHandshakeTimeout. Lower values
	// shed idle half-open connections sooner; higher values tolerate slower
	// peers. It is ignored when ServerTLS is nil.
	HandshakeTimeout time.Duration

	// Dial, when set, replaces net.Dialer for outgoing connections;
	// fault-injection harnesses use it to drop, delay or blackhole traffic
	// per node pair. It receives the target address as given to
	// StreamLayer.Dial, and a context that expires after the effective dial
	// timeout (or when the StreamLayer is closed) which it must honour. TLS,
	// when configured, is layered on top of the returned connection.
	Dial func(ctx context.Context, address string) (net.Conn, error)
}

// StreamLayer implements raft.StreamLayer over TCP, with optional TLS on
// both the accepting and the dialing side. It is safe for concurrent use.
type StreamLayer struct {
	ln        net.Listener
	advertise net.Addr

	serverTLS        *tls.Config
	clientTLS        *tls.Config
	dialTimeout      time.Duration
	handshakeTimeout time.Duration
	dial             func(ctx context.Context, address string) (net.Conn, error)

	// ctx is cancelled by Close; it aborts in-flight dials and server-side
	// handshakes.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards closed so that no handshake goroutine is added to
	// handshakes once Close has started waiting for them.
	mu         sync.Mutex
	closed     bool
	handshakes sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Compile-time check that StreamLayer satisfies raft's interface.
var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer wraps ln, which the StreamLayer then owns and closes on
// Close. advertise is the address other nodes use to reach this one; when nil
// ln.Addr() is used. The address must be dialable by peers: an unspecified
// host (0.0.0.0, ::) or port 0 yields an error wrapping ErrUnadvertisable. On
// error ln is left open and remains the caller's responsibility.
func NewStreamLayer(ln net.Listener, advertise net.Addr, cfg Config) (*StreamLayer, error) {
	if ln == nil {
		return nil, fmt.Errorf("%w: nil listener", ErrInvalidConfig)
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if err := validateAdvertise(advertise); err != nil {
		return nil, err
	}
	if err := validateConfig(cfg); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &StreamLayer{
		ln:               ln,
		advertise:        advertise,
		serverTLS:        cfg.ServerTLS,
		clientTLS:        cfg.ClientTLS,
		dialTimeout:      orDefault(cfg.DialTimeout, DefaultDialTimeout),
		handshakeTimeout: orDefault(cfg.HandshakeTimeout, DefaultHandshakeTimeout),
		dial:             orNetDial(cfg.Dial),
		ctx:              ctx,
		cancel:           cancel,
	}, nil
}

// Listen is a convenience that listens on bindAddr with net.Listen("tcp")
// and wraps the listener with NewStreamLayer. advertise may be empty, in
// which case the bound address is advertised; that fails with
// ErrUnadvertisable when bindAddr has an unspecified host such as
// "0.0.0.0:7000". A non-empty advertise may use a DNS name. The listener is
// closed again if the StreamLayer cannot be created.
func Listen(bindAddr, advertise string, cfg Config) (*StreamLayer, error) {
	ln, adv, err := listenAdvertised("raft", bindAddr, advertise)
	if err != nil {
		return nil, err
	}
	sl, err := NewStreamLayer(ln, adv, cfg)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return sl, nil
}

// listenAdvertised listens on bindAddr and returns the listener with the
// address to advertise: advertise when given (it may be a DNS name), else
// the bound address, which must then be dialable (no wildcard host).
func listenAdvertised(what, bindAddr, advertise string) (net.Listener, net.Addr, error) {
	var adv net.Addr
	if advertise != "" {
		a, err := parseAdvertise(advertise)
		if err != nil {
			return nil, nil, err
		}
		adv = a
	}
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for %s on %s: %w", what, bindAddr, err)
	}
	if adv == nil {
		adv = ln.Addr()
	}
	if err := validateAdvertise(adv); err != nil {
		_ = ln.Close()
		return nil, nil, err
	}
	return ln, adv, nil
}

// validateConfig rejects configurations that could never complete a
// handshake.
func validateConfig(cfg Config) error {
	s := cfg.ServerTLS
	if s != nil && len(s.Certificates) == 0 && s.GetCertificate == nil && s.GetConfigForClient == nil {
		return fmt.Errorf("%w: ServerTLS has no certificate", ErrInvalidConfig)
	}
	return nil
}

// orDefault returns d when v is not positive, and v otherwise.
func orDefault(v, d time.Duration) time.Duration {
	if v <= 0 {
		return d
	}
	return v
}

// orNetDial returns dial, or a plain net.Dialer-based dial function when dial
// is nil.
func orNetDial(dial func(context.Context, string) (net.Conn, error)) func(context.Context, string) (net.Conn, error) {
	if dial != nil {
		return dial
	}
	var d net.Dialer
	return func(ctx context.Context, address string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", address)
	}
}

// Accept waits for and returns the next inbound connection. It implements
// net.Listener.
//
// With ServerTLS set, Accept returns a *tls.Conn immediately and performs the
// server handshake in a background goroutine bounded by HandshakeTimeout, so
// one slow or silent peer cannot stall Accept for everybody else. The first
// Read or Write on the connection waits for that handshake; if it failed or
// timed out, they return its error (on timeout the connection is closed).
// Connection deadlines are never touched, so callers remain free to set
// their own.
//
// After Close, Accept returns an error wrapping net.ErrClosed; raft's
// NetworkTransport relies on Accept failing to stop its accept loop.
func (s *StreamLayer) Accept() (net.Conn, error) {
	conn, err := s.ln.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept raft connection: %w", err)
	}
	if s.serverTLS == nil {
		return conn, nil
	}
	return s.startServerHandshake(conn)
}

// startServerHandshake wraps conn in TLS and starts its handshake in the
// background. It fails, closing conn, if the StreamLayer is closing.
func (s *StreamLayer) startServerHandshake(conn net.Conn) (net.Conn, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = conn.Close()
		return nil, fmt.Errorf("accept raft connection: %w", net.ErrClosed)
	}
	s.handshakes.Add(1)
	s.mu.Unlock()

	tlsConn := tls.Server(conn, s.serverTLS)
	go s.serverHandshake(tlsConn)
	return tlsConn, nil
}

// serverHandshake runs the server side of a TLS handshake, bounded by
// HandshakeTimeout and by the StreamLayer's lifetime. crypto/tls closes the
// connection when the context expires mid-handshake and remembers any
// handshake error, which later Reads and Writes then return; nothing else
// needs to be done with the result here.
func (s *StreamLayer) serverHandshake(conn *tls.Conn) {
	defer s.handshakes.Done()
	ctx, cancel := context.WithTimeout(s.ctx, s.handshakeTimeout)
	defer cancel()
	_ = conn.HandshakeContext(ctx)
}

// Close stops listening: it closes the listener, aborts in-flight dials and
// server-side handshakes, and waits for the handshake goroutines to exit.
// Connections already handed out are not closed; they belong to the caller.
// Close is idempotent; every call returns the listener's Close error.
func (s *StreamLayer) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		s.closeErr = s.ln.Close()
		s.handshakes.Wait()
	})
	return s.closeErr
}

// Addr returns the advertised address, which raft records as this node's
// address and hands to peers. It implements net.Listener.
func (s *StreamLayer) Addr() net.Addr {
	return s.advertise
}

// Dial opens a connection to the raft peer at address. It implements
// raft.StreamLayer.
//
// The whole dial, TCP connect plus TLS handshake, is bounded by the smaller
// of timeout (supplied by raft; zero or negative means none) and
// Config.DialTimeout. Errors are wrapped with the peer address and can be
// inspected with errors.Is and errors.As. Dials in flight when the
// StreamLayer is closed are aborted; dials started after Close fail with an
// error wrapping net.ErrClosed.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	addr := string(address)
	if s.ctx.Err() != nil {
		return nil, fmt.Errorf("dial raft peer %s: %w", addr, net.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.effectiveDialTimeout(timeout))
	defer cancel()

	conn, err := s.dialConn(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial raft peer %s: %w", addr, err)
	}
	if s.clientTLS == nil {
		return conn, nil
	}
	tlsConn, err := s.clientHandshake(ctx, conn, addr)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dial raft peer %s: tls handshake: %w", addr, err)
	}
	return tlsConn, nil
}

// effectiveDialTimeout returns the smaller of raft's timeout and the
// configured DialTimeout, ignoring a non-positive raft timeout.
func (s *StreamLayer) effectiveDialTimeout(timeout time.Duration) time.Duration {
	if timeout > 0 && timeout < s.dialTimeout {
		return timeout
	}
	return s.dialTimeout
}

// errNilConn guards against a Config.Dial hook returning neither a
// connection nor an error.
var errNilConn = errors.New("dial hook returned a nil connection")

// dialConn opens the raw connection through the configured dial function.
func (s *StreamLayer) dialConn(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := s.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errNilConn
	}
	return conn, nil
}

// clientHandshake performs the client side of the TLS handshake on conn.
// The handshake is bounded both by a deadline on conn and by ctx (whose
// expiry makes crypto/tls close conn), so it cannot outlive the dial budget
// even if conn ignores deadlines. The deadline is cleared on success because
// raft manages its own per-RPC deadlines from then on.
func (s *StreamLayer) clientHandshake(ctx context.Context, conn net.Conn, addr string) (*tls.Conn, error) {
	cfg := s.clientTLS.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = dialHost(addr)
	}
	tlsConn := tls.Client(conn, cfg)
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return nil, fmt.Errorf("set handshake deadline: %w", err)
		}
	}
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear handshake deadline: %w", err)
	}
	return tlsConn, nil
}
