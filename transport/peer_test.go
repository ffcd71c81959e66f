package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/ordinal-dev/ordinal/internal/testpki"
	"github.com/ordinal-dev/ordinal/tlsutil"
)

// peerOpts say how a test node secures its peer port.
type peerOpts struct {
	pki     *testpki.PKI // peer TLS with this PKI's peer CA, nil for none
	foreign bool         // with a certificate of another CA
	token   string
	cluster string
}

// listenPeer opens a peer port for node id on loopback, serving the gRPC
// health service (which tells who called through PeerFromContext) and,
// when raft is set, answering Raft RPCs.
func listenPeer(t *testing.T, id string, o peerOpts) *Peer {
	t.Helper()
	cfg := PeerConfig{NodeID: id, Raft: true, HandshakeTimeout: 2 * time.Second}
	if o.pki != nil {
		certFile, keyFile := o.pki.Peer(id)
		if o.foreign {
			certFile, keyFile = o.pki.ForeignPeer(id)
		}
		cfg.TLS = loadPeerTLS(t, certFile, keyFile, o.pki.PeerCAFile)
	}
	if o.token != "" {
		cfg.Token = []byte(o.token)
	}
	if o.cluster != "" {
		cfg.ClusterID = func() string { return o.cluster }
	}
	p, err := ListenPeer("127.0.0.1:0", "", cfg)
	if err != nil {
		t.Fatalf("ListenPeer %s: %v", id, err)
	}
	srv := grpc.NewServer(p.ServerOption())
	healthpb.RegisterHealthServer(srv, whoHealth{})
	go func() { _ = srv.Serve(p.GRPCListener()) }()
	trans := NewTransport(p.Raft(), RaftConfig{Timeout: testRPCTimeout})
	go func() {
		for rpc := range trans.Consumer() {
			rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil)
		}
	}()
	t.Cleanup(func() {
		srv.Stop()
		_ = trans.Close()
		_ = p.Close()
	})
	return p
}

func loadPeerTLS(t *testing.T, certFile, keyFile, caFile string) *PeerTLS {
	t.Helper()
	pt, err := LoadPeerTLS(certFile, keyFile, caFile, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return pt
}

// whoHealth answers Check with the calling node's ID as the status
// string's service name is unused: it reports SERVING only to calls that
// arrived through the peer handshake.
type whoHealth struct {
	healthpb.UnimplementedHealthServer
}

func (whoHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	info, ok := PeerFromContext(ctx)
	if !ok || info.NodeID != req.GetService() {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// callAs makes one gRPC call from a to b's peer port and returns its error;
// the call succeeds only if b saw it come from node a.
func callAs(t *testing.T, a *Peer, aID string, b *Peer, want string) error {
	t.Helper()
	conn, err := grpc.NewClient(b.Addr().String(), a.DialOptions(want)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var p peer.Peer
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: aID}, grpc.Peer(&p))
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("the server did not see the call come from %s", aID)
	}
	if ai, ok := p.AuthInfo.(AuthInfo); !ok || (want != "" && ai.Peer.NodeID != want) {
		t.Fatalf("client side AuthInfo = %#v, want the server's identity %q", p.AuthInfo, want)
	}
	return nil
}

// raftVote sends a RequestVote from a to b's peer port over Raft.
func raftVote(t *testing.T, a *Peer, b *Peer) error {
	t.Helper()
	trans := NewTransport(a.Raft(), RaftConfig{Timeout: testRPCTimeout})
	var resp raft.RequestVoteResponse
	return trans.RequestVote("b", raft.ServerAddress(b.Addr().String()), &raft.RequestVoteRequest{Term: 1}, &resp)
}

func TestPeerPortCarriesRaftAndGRPC(t *testing.T) {
	pki := testpki.New(t, "")
	for _, tt := range []struct {
		name string
		o    peerOpts
	}{
		{"plain", peerOpts{}},
		{"tls", peerOpts{pki: pki}},
		{"token", peerOpts{token: "0123456789abcdef-token"}},
		{"tls+token+cluster", peerOpts{pki: pki, token: "0123456789abcdef-token", cluster: "c1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := listenPeer(t, "a", tt.o), listenPeer(t, "b", tt.o)
			if err := callAs(t, a, "a", b, "b"); err != nil {
				t.Fatalf("gRPC a -> b: %v", err)
			}
			if err := callAs(t, b, "b", a, ""); err != nil {
				t.Fatalf("gRPC b -> any node at a's address: %v", err)
			}
			var resp raft.RequestVoteResponse
			trans := NewTransport(a.Raft(), RaftConfig{Timeout: testRPCTimeout})
			if err := trans.RequestVote("b", raft.ServerAddress(b.Addr().String()), &raft.RequestVoteRequest{Term: 1}, &resp); err != nil || !resp.Granted {
				t.Fatalf("raft a -> b: %v, %+v", err, resp)
			}
			info, err := a.Probe(context.Background(), b.Addr().String(), "b")
			if err != nil || info.NodeID != "b" || info.Certified != (tt.o.pki != nil) {
				t.Fatalf("probe: %+v, %v", info, err)
			}
		})
	}
}

// Every way in without the cluster's credentials is refused, for Raft and
// for gRPC alike, and the dialer learns why.
func TestPeerPortRefusesOutsiders(t *testing.T) {
	pki := testpki.New(t, "")
	const token = "0123456789abcdef-token"
	for _, tt := range []struct {
		name     string
		server   peerOpts
		attacker peerOpts
		want     error
	}{
		{"no TLS against peer TLS", peerOpts{pki: pki}, peerOpts{}, ErrPermissionDenied},
		{"TLS against a plain node", peerOpts{}, peerOpts{pki: pki}, ErrPermissionDenied},
		{"certificate of another CA", peerOpts{pki: pki}, peerOpts{pki: pki, foreign: true}, ErrPermissionDenied},
		{"no token", peerOpts{token: token}, peerOpts{}, ErrPermissionDenied},
		{"another token", peerOpts{token: token}, peerOpts{token: "another-cluster-token-xx"}, ErrPermissionDenied},
		{"a token the node does not have", peerOpts{}, peerOpts{token: token}, ErrPermissionDenied},
		{"TLS but another token", peerOpts{pki: pki, token: token}, peerOpts{pki: pki, token: "another-cluster-token-xx"}, ErrPermissionDenied},
		{"another cluster", peerOpts{cluster: "A"}, peerOpts{cluster: "B"}, ErrForeignCluster},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := listenPeer(t, "n1", tt.server)
			evil := listenPeer(t, "evil", tt.attacker)
			err := callAs(t, evil, "evil", srv, "")
			if err == nil {
				t.Fatal("gRPC call accepted")
			}
			if err := raftVote(t, evil, srv); err == nil {
				t.Fatal("RequestVote accepted")
			}
			_, err = evil.Probe(context.Background(), srv.Addr().String(), "")
			if !errors.Is(err, tt.want) {
				t.Fatalf("probe: %v, want %v", err, tt.want)
			}
		})
	}
}

// A node reached at an address that now belongs to another node is
// refused, so calls meant for the leader never reach an impostor that
// merely holds its address.
func TestPeerDialRefusesAnotherNode(t *testing.T) {
	pki := testpki.New(t, "")
	for _, o := range []peerOpts{{}, {pki: pki}} {
		a, b := listenPeer(t, "a", o), listenPeer(t, "b", o)
		if err := callAs(t, a, "a", b, "leader"); err == nil {
			t.Fatal("call to 'leader' answered by b")
		}
		if _, err := a.Probe(context.Background(), b.Addr().String(), "leader"); !errors.Is(err, ErrWrongNode) {
			t.Fatalf("probe for 'leader' at b: %v, want ErrWrongNode", err)
		}
	}
}

// With peer TLS the node ID comes from the certificate: a node holding
// a's certificate cannot introduce itself as b, neither as a client nor
// as a server.
func TestPeerCertificateBindsTheNodeID(t *testing.T) {
	pki := testpki.New(t, "")
	srv := listenPeer(t, "b", peerOpts{pki: pki})
	certFile, keyFile := pki.Peer("a")
	stolen := &peerTLS{loadPeerTLS(t, certFile, keyFile, pki.PeerCAFile)}

	// As a client: a's certificate, claiming to be b (a member).
	conn := dialRaw(t, srv.Addr().String())
	_, _, err := clientHandshake(context.Background(), conn, kindGRPC, "", identity{nodeID: "b", tls: stolen})
	if !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), "certificate is for node") {
		t.Fatalf("client with a's certificate claiming b: %v", err)
	}

	// As a server: an impostor with a's certificate answering as b.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// The impostor answers every hello as b.
		_, _ = serverHandshake(c, time.Now().Add(2*time.Second), identity{nodeID: "b", tls: stolen}, func(byte) bool { return true })
	}()
	certFile, keyFile = pki.Peer("c")
	client := &peerTLS{loadPeerTLS(t, certFile, keyFile, pki.PeerCAFile)}
	_, _, err = clientHandshake(context.Background(), dialRaw(t, ln.Addr().String()), kindGRPC, "b", identity{nodeID: "c", tls: client})
	if !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("server with a's certificate answering as b: %v, want ErrPermissionDenied", err)
	}
}

// Certificates that are not peer certificates (a client's, or a server
// certificate of the client port) cannot act as a node, even when their
// CA is the peer CA.
func TestPeerPortRefusesCertificatesWithoutNodeID(t *testing.T) {
	pki := testpki.New(t, "")
	srv := listenPeer(t, "n1", peerOpts{pki: pki})
	ca := pki.PeerCA
	certPEM, keyPEM, err := ca.Issue(tlsutil.CertRequest{Kind: tlsutil.KindClient, Name: "n2", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	conn := dialRaw(t, srv.Addr().String())
	if _, err := conn.Write([]byte{'O', 'R', 'D', 'P', peerVersion, kindRaft, flagTLS}); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v (the chain is the peer CA's: TLS itself accepts it)", err)
	}
	var h hello
	if _, err := readFrame(tc, &h); err != nil {
		t.Fatalf("reading the node's answer: %v", err)
	}
	if h.Error == "" || !strings.Contains(h.Error, "names no node") {
		t.Fatalf("the node answered %+v, want a refusal naming the missing node ID", h)
	}
	// And the connection goes no further.
	if _, err := readFrame(tc, &h); err == nil {
		t.Fatal("the connection stayed open after the refusal")
	}
}

// Plain gRPC and raw Raft clients, which do not speak the peer
// handshake, get nothing from the peer port.
func TestPeerPortRefusesOtherProtocols(t *testing.T) {
	srv := listenPeer(t, "n1", peerOpts{})
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("plain gRPC call served on the peer port")
	}
	trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	var resp raft.RequestVoteResponse
	if err := trans.RequestVote("n1", raft.ServerAddress(srv.Addr().String()), &raft.RequestVoteRequest{Term: 99}, &resp); err == nil {
		t.Fatal("a plain Raft RequestVote was answered on the peer port")
	}
	// Probing a non-peer address (here a plain gRPC server) says so.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()
	if _, err := srv.Probe(context.Background(), lis.Addr().String(), ""); !errors.Is(err, ErrNotPeer) {
		t.Fatalf("probe of a plain gRPC server: %v, want ErrNotPeer", err)
	}
}

// A silent connection holds a handshake slot only until the handshake
// timeout, and does not stop others from connecting meanwhile.
func TestPeerPortSilentConnectionsDoNotBlock(t *testing.T) {
	a, b := listenPeer(t, "a", peerOpts{}), listenPeer(t, "b", peerOpts{})
	for i := 0; i < 10; i++ {
		c := dialRaw(t, b.Addr().String())
		defer c.Close()
	}
	if err := callAs(t, a, "a", b, "b"); err != nil {
		t.Fatalf("call while silent connections wait: %v", err)
	}
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Close returns even when a connection finished its handshake and nobody
// accepts it (the node's gRPC server is not serving yet, or stopped).
func TestPeerCloseWithUnacceptedConnections(t *testing.T) {
	a, err := ListenPeer("127.0.0.1:0", "", PeerConfig{NodeID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b := listenPeer(t, "b", peerOpts{})
	for i := 0; i < 3; i++ {
		if _, err := b.dial(context.Background(), a.Addr().String(), kindGRPC, "a"); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- a.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on connections nobody accepted")
	}
}

// A dial whose context ends after the TLS handshake, while it waits for
// the node's hello, fails at once: the connection is closed under it.
// The close runs on the goroutine context.AfterFunc starts when the
// context's timer fires, while the handshake had replaced its connection
// with the TLS one on its own goroutine: under -race this test caught the
// close reading that variable. The timer, not the test, ends the context,
// so that nothing the test does orders the two goroutines.
func TestPeerDialTimesOutAfterTLSHandshake(t *testing.T) {
	pki := testpki.New(t, "")
	certFile, keyFile := pki.Peer("b")
	server := &peerTLS{loadPeerTLS(t, certFile, keyFile, pki.PeerCAFile)}
	certFile, keyFile = pki.Peer("a")
	client := &peerTLS{loadPeerTLS(t, certFile, keyFile, pki.PeerCAFile)}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A node that completes TLS, reads the client's hello and never
	// answers it; it reports whether it got that far.
	silentNode := func(gotHello chan<- struct{}, release <-chan struct{}) {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		var pre [preambleSize]byte
		if _, err := io.ReadFull(c, pre[:]); err != nil {
			return
		}
		tc := tls.Server(c, server.serverConfig())
		if err := tc.Handshake(); err != nil {
			return
		}
		var h hello
		if _, err := readFrame(tc, &h); err != nil {
			return
		}
		close(gotHello)
		<-release
	}
	// The timeout must end the context after the TLS handshake: on a
	// machine too loaded for that, try again with a longer one.
	for timeout := time.Second; ; timeout *= 2 {
		gotHello, release := make(chan struct{}), make(chan struct{})
		go silentNode(gotHello, release)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		_, _, err := clientHandshake(ctx, dialRaw(t, ln.Addr().String()), kindGRPC, "b", identity{nodeID: "a", tls: client})
		took := time.Since(start)
		cancel()
		close(release)
		if err == nil {
			t.Fatal("the handshake succeeded without the node's hello")
		}
		if took > timeout+5*time.Second {
			t.Fatalf("the handshake returned %v after its context ended (%v): the connection was not closed", took-timeout, err)
		}
		select {
		case <-gotHello:
			return
		default:
		}
		if timeout >= 8*time.Second {
			t.Fatalf("the TLS handshake never finished within %v: %v", timeout, err)
		}
		t.Logf("the context ended before the node read the hello (%v); again with a longer timeout", err)
	}
}
