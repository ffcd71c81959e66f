package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// silentListener accepts TCP connections and never writes to them, like a
// peer that is up at the TCP level but never answers a TLS handshake.
type silentListener struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func newSilentListener(t *testing.T) *silentListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &silentListener{ln: ln, done: make(chan struct{})}
	go s.run()
	t.Cleanup(s.close)
	return s
}

func (s *silentListener) run() {
	defer close(s.done)
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, conn)
		s.mu.Unlock()
	}
}

func (s *silentListener) close() {
	_ = s.ln.Close()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
}

func TestStreamLayer_DialTimeout(t *testing.T) {
	ca := newTestCA(t, "ordinal test CA")
	const short, long = 200 * time.Millisecond, 30 * time.Second
	cases := map[string]struct{ dialTimeout, raftTimeout time.Duration }{
		"DialTimeout is smaller":   {dialTimeout: short, raftTimeout: long},
		"raft timeout is smaller":  {dialTimeout: long, raftTimeout: short},
		"raft timeout is disabled": {dialTimeout: short, raftTimeout: 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			peer := newSilentListener(t)
			sl := newLayer(t, Config{ClientTLS: ca.clientTLS(), DialTimeout: tc.dialTimeout})

			start := time.Now()
			conn, err := sl.Dial(raft.ServerAddress(peer.ln.Addr().String()), tc.raftTimeout)
			elapsed := time.Since(start)
			if err == nil {
				_ = conn.Close()
				t.Fatal("Dial succeeded against a peer that never completes the handshake")
			}
			if elapsed < short/2 || elapsed > 2*time.Second {
				t.Fatalf("Dial failed after %v, want about %v", elapsed, short)
			}
			t.Logf("Dial error after %v (expected): %v", elapsed, err)
			var netErr net.Error
			if !errors.As(err, &netErr) || !netErr.Timeout() {
				t.Fatalf("Dial error = %v, want a timeout", err)
			}
			if want := "dial raft peer " + peer.ln.Addr().String(); !strings.Contains(err.Error(), want) {
				t.Fatalf("Dial error %q does not mention %q", err, want)
			}
		})
	}
}

func TestStreamLayer_DialHookMustHonourContext(t *testing.T) {
	// A blackholing hook that simply waits for its context, as a
	// fault-injection harness would for a partitioned node pair.
	sl := newLayer(t, Config{
		DialTimeout: 200 * time.Millisecond,
		Dial: func(ctx context.Context, _ string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	start := time.Now()
	_, err := sl.Dial("127.0.0.1:1", time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial error = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("Dial took %v, want about 200ms", elapsed)
	}
}

func TestStreamLayer_DialHookNilConn(t *testing.T) {
	sl := newLayer(t, Config{Dial: func(context.Context, string) (net.Conn, error) { return nil, nil }})
	if _, err := sl.Dial("127.0.0.1:1", time.Second); !errors.Is(err, errNilConn) {
		t.Fatalf("Dial error = %v, want %v", err, errNilConn)
	}
}

func TestStreamLayer_AcceptReturnsTLSConn(t *testing.T) {
	ca := newTestCA(t, "ordinal test CA")
	server := newLayer(t, Config{ServerTLS: ca.serverTLS(ca.issue(t, "server"), true)})
	clientTLS := ca.clientTLS(ca.issue(t, "client"))
	client := newLayer(t, Config{ClientTLS: clientTLS})

	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := server.Accept()
		if err != nil {
			t.Errorf("Accept: %v", err)
		}
		accepted <- conn
	}()

	conn, err := client.Dial(raft.ServerAddress(server.Addr().String()), testRPCTimeout)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	if clientTLS.ServerName != "" {
		t.Fatalf("Dial modified ClientTLS.ServerName to %q", clientTLS.ServerName)
	}
	if _, ok := conn.(*tls.Conn); !ok {
		t.Fatalf("Dial returned %T, want *tls.Conn", conn)
	}

	sconn := <-accepted
	if sconn == nil {
		t.FailNow()
	}
	defer sconn.Close()
	tlsConn, ok := sconn.(*tls.Conn)
	if !ok {
		t.Fatalf("Accept returned %T, want *tls.Conn", sconn)
	}
	exchange(t, conn, sconn)
	state := tlsConn.ConnectionState()
	if !state.HandshakeComplete || len(state.PeerCertificates) == 0 {
		t.Fatalf("server side handshake incomplete: %+v", state)
	}
	if cn := state.PeerCertificates[0].Subject.CommonName; cn != "client" {
		t.Fatalf("server saw client certificate %q, want \"client\"", cn)
	}
}

// exchange writes from one side and reads on the other, bounded in time.
func exchange(t *testing.T, from, to net.Conn) {
	t.Helper()
	deadline := time.Now().Add(testRPCTimeout)
	_ = from.SetDeadline(deadline)
	_ = to.SetDeadline(deadline)
	if _, err := from.Write([]byte("ping")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(to, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("Read = %q, %v; want \"ping\"", buf, err)
	}
}

func TestStreamLayer_SlowHandshakeDoesNotBlockOthers(t *testing.T) {
	ca := newTestCA(t, "ordinal test CA")
	serverCfg := ca.mutualConfig(t, "server")
	serverCfg.HandshakeTimeout = 300 * time.Millisecond
	server := newTrans(t, serverCfg)
	client := newTrans(t, ca.mutualConfig(t, "client"))
	got := serve(t, server)

	// A peer that connects and then says nothing.
	silent, err := net.DialTimeout("tcp", string(server.LocalAddr()), testRPCTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer silent.Close()

	// Other peers are served while the silent one is pending.
	testRequestVote(t, client, server, got)

	// The silent peer is disconnected once HandshakeTimeout expires.
	start := time.Now()
	_ = silent.SetReadDeadline(time.Now().Add(testRPCTimeout))
	_, err = silent.Read(make([]byte, 1))
	var netErr net.Error
	if err == nil || (errors.As(err, &netErr) && netErr.Timeout()) {
		t.Fatalf("silent peer Read = %v after %v, want the server to close the connection", err, time.Since(start))
	}
}

func TestStreamLayer_Close(t *testing.T) {
	sl, err := Listen("127.0.0.1:0", "", Config{})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	acceptErr := make(chan error, 1)
	go func() {
		_, err := sl.Accept()
		acceptErr <- err
	}()
	if err := sl.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked Accept returned %v, want net.ErrClosed", err)
		}
	case <-time.After(testRPCTimeout):
		t.Fatal("Close did not unblock Accept")
	}
	if _, err := sl.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
	}
	if _, err := sl.Dial("127.0.0.1:1", time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Dial after Close = %v, want net.ErrClosed", err)
	}
	if err := sl.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestStreamLayer_CloseAbortsPendingHandshakes(t *testing.T) {
	ca := newTestCA(t, "ordinal test CA")
	cfg := ca.mutualConfig(t, "server")
	cfg.HandshakeTimeout = time.Minute
	sl, err := Listen("127.0.0.1:0", "", cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	silent, err := net.DialTimeout("tcp", sl.Addr().String(), testRPCTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer silent.Close()
	conn, err := sl.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	defer conn.Close()

	closed := make(chan error, 1)
	go func() { closed <- sl.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(testRPCTimeout):
		t.Fatal("Close did not abort the pending handshake")
	}
}

// stubListener is a net.Listener that only reports an address.
type stubListener struct{ addr net.Addr }

func (l stubListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (l stubListener) Close() error              { return nil }
func (l stubListener) Addr() net.Addr            { return l.addr }

func tcpAddr(t *testing.T, s string) net.Addr {
	t.Helper()
	addr, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatalf("resolve %q: %v", s, err)
	}
	return addr
}

func TestNewStreamLayer_Advertise(t *testing.T) {
	cases := map[string]struct {
		bound, advertise net.Addr
		want             string // empty means ErrUnadvertisable
	}{
		"bound IPv4 unspecified":       {bound: tcpAddr(t, "0.0.0.0:7000")},
		"bound IPv6 unspecified":       {bound: tcpAddr(t, "[::]:7000")},
		"advertise IPv4 unspecified":   {bound: tcpAddr(t, "127.0.0.1:7000"), advertise: tcpAddr(t, "0.0.0.0:7000")},
		"advertise IPv6 unspecified":   {bound: tcpAddr(t, "127.0.0.1:7000"), advertise: tcpAddr(t, "[::]:7000")},
		"advertise empty host":         {bound: tcpAddr(t, "127.0.0.1:7000"), advertise: hostAddr(":7000")},
		"advertise port zero":          {bound: tcpAddr(t, "127.0.0.1:7000"), advertise: tcpAddr(t, "127.0.0.1:0")},
		"advertise without port":       {bound: tcpAddr(t, "127.0.0.1:7000"), advertise: hostAddr("node1")},
		"bound loopback":               {bound: tcpAddr(t, "127.0.0.1:7000"), want: "127.0.0.1:7000"},
		"unspecified bound, advertise": {bound: tcpAddr(t, "0.0.0.0:7000"), advertise: tcpAddr(t, "10.0.0.1:7000"), want: "10.0.0.1:7000"},
		"advertise hostname":           {bound: tcpAddr(t, "0.0.0.0:7000"), advertise: hostAddr("node1.ordinal:7000"), want: "node1.ordinal:7000"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sl, err := NewStreamLayer(stubListener{tc.bound}, tc.advertise, Config{})
			if tc.want == "" {
				if !errors.Is(err, ErrUnadvertisable) {
					t.Fatalf("NewStreamLayer error = %v, want ErrUnadvertisable", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewStreamLayer: %v", err)
			}
			defer sl.Close()
			if got := sl.Addr().String(); got != tc.want {
				t.Fatalf("Addr() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestListen_Advertise(t *testing.T) {
	for _, adv := range []string{"0.0.0.0:7000", "[::]:7000", ":7000", "127.0.0.1:0", "node1"} {
		if _, err := Listen("127.0.0.1:0", adv, Config{}); !errors.Is(err, ErrUnadvertisable) {
			t.Errorf("Listen with advertise %q: error = %v, want ErrUnadvertisable", adv, err)
		}
	}

	sl := newLayer(t, Config{})
	if addr, ok := sl.Addr().(*net.TCPAddr); !ok || !addr.IP.IsLoopback() || addr.Port == 0 {
		t.Fatalf("Addr() = %v, want the bound loopback address", sl.Addr())
	}

	named, err := Listen("127.0.0.1:0", "node1.ordinal:7000", Config{})
	if err != nil {
		t.Fatalf("Listen with hostname advertise: %v", err)
	}
	defer named.Close()
	if got := named.Addr().String(); got != "node1.ordinal:7000" {
		t.Fatalf("Addr() = %q, want \"node1.ordinal:7000\"", got)
	}
}

func TestNewStreamLayer_InvalidConfig(t *testing.T) {
	bound := tcpAddr(t, "127.0.0.1:7000")
	if _, err := NewStreamLayer(stubListener{bound}, nil, Config{ServerTLS: &tls.Config{}}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("ServerTLS without certificate: error = %v, want ErrInvalidConfig", err)
	}
	if _, err := NewStreamLayer(nil, bound, Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("nil listener: error = %v, want ErrInvalidConfig", err)
	}
}
