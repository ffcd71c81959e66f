package cluster_test

import (
	"context"
	"crypto/tls"
	"errors"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testpki"
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"github.com/ordinal-dev/ordinal/tlsutil"
	"github.com/ordinal-dev/ordinal/transport"
)

// The attacks of issue #10, tried against a cluster secured as the README
// says (peer mutual TLS, client TLS with client certificates, admin by
// certificate name): each must be refused and leave the cluster as it
// was.

// fakeSequencer is what an attacker would like followers to forward STRONG
// calls to: it answers 1 to everything and counts the calls it got.
type fakeSequencer struct {
	ordinalv1.UnimplementedSequencerServiceServer
	calls atomic.Int64
}

func (f *fakeSequencer) GetNextId(context.Context, *ordinalv1.GetNextIdRequest) (*ordinalv1.GetNextIdResponse, error) {
	f.calls.Add(1)
	return &ordinalv1.GetNextIdResponse{NextId: 1}, nil
}

func (f *fakeSequencer) GetNextIds(context.Context, *ordinalv1.GetNextIdsRequest) (*ordinalv1.GetNextIdsResponse, error) {
	f.calls.Add(1)
	return &ordinalv1.GetNextIdsResponse{FirstId: 1, Count: 1}, nil
}

func startFakeSequencer(t *testing.T) (*fakeSequencer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSequencer{}
	srv := grpc.NewServer()
	ordinalv1.RegisterSequencerServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f, lis.Addr().String()
}

func dialWith(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// strongThroughFollowers takes n STRONG IDs, alternating between the
// followers, and checks that they strictly increase.
func strongThroughFollowers(t *testing.T, c *testcluster.Cluster, n int) {
	t.Helper()
	followers := c.Followers(c.Leader())
	var last int64
	for i := 0; i < n; i++ {
		nd := followers[i%len(followers)]
		resp, err := nd.Sequencer().GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "attack", Options: strongOpts})
		if err != nil {
			t.Fatalf("STRONG via %s: %v", nd.ID, err)
		}
		if resp.GetNextId() <= last {
			t.Fatalf("STRONG via %s: %d after %d: a duplicate or a regression", nd.ID, resp.GetNextId(), last)
		}
		last = resp.GetNextId()
	}
}

// membersOf returns node ID -> (raft address, gRPC address, voter) as the
// leader lists them, once every member has published its gRPC address
// (nodes do so in the background after they start).
func membersOf(t *testing.T, c *testcluster.Cluster) map[string]*ordinalv1.Member {
	t.Helper()
	out := map[string]*ordinalv1.Member{}
	testutil.WaitFor(t, 10*time.Second, "every member's gRPC address", func() bool {
		m, err := c.Leader().Cluster().Members(callCtx(t), &ordinalv1.MembersRequest{})
		if err != nil {
			return false
		}
		clear(out)
		for _, mm := range m.GetMembers() {
			if mm.GetGrpcAddr() == "" {
				return false
			}
			mm.Reachable, mm.AppliedIndex, mm.Lag, mm.Leader = false, 0, 0, false
			out[mm.GetNodeId()] = mm
		}
		return true
	})
	return out
}

func sameMembers(t *testing.T, before, after map[string]*ordinalv1.Member) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("members changed: %v -> %v", before, after)
	}
	for id, b := range before {
		a := after[id]
		if a == nil || a.GetRaftAddr() != b.GetRaftAddr() || a.GetGrpcAddr() != b.GetGrpcAddr() || a.GetVoter() != b.GetVoter() {
			t.Fatalf("member %s changed: %v -> %v", id, b, a)
		}
	}
}

// Callers with an application's certificate (role ids) make none of the
// admin calls, and callers without one do not get past TLS.
func TestAdminCallsNeedTheAdminRole(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	follower := c.Followers(leader)[0]
	_, fakeAddr := startFakeSequencer(t)
	before := membersOf(t, c)

	app := dialWith(t, follower.GRPCAddr, c.DialOptions("app")...)
	adminCalls := []struct {
		name string
		call func(ctx context.Context, conn *grpc.ClientConn) error
	}{
		{"Join publishing a fake address for the leader", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := ordinalv1.NewClusterServiceClient(conn).Join(ctx, &ordinalv1.JoinRequest{NodeId: leader.ID, RaftAddr: leader.RaftAddr, GrpcAddr: fakeAddr, HasState: true})
			return err
		}},
		{"Remove the leader", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := ordinalv1.NewClusterServiceClient(conn).Remove(ctx, &ordinalv1.RemoveRequest{NodeId: leader.ID})
			return err
		}},
		{"TransferLeadership", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := ordinalv1.NewClusterServiceClient(conn).TransferLeadership(ctx, &ordinalv1.TransferLeadershipRequest{NodeId: follower.ID})
			return err
		}},
		{"Join a node of the attacker's", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := ordinalv1.NewClusterServiceClient(conn).Join(ctx, &ordinalv1.JoinRequest{NodeId: "evil", RaftAddr: "127.0.0.1:42999"})
			return err
		}},
		{"Join moving a voter's Raft address", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := ordinalv1.NewClusterServiceClient(conn).Join(ctx, &ordinalv1.JoinRequest{NodeId: follower.ID, RaftAddr: "127.0.0.1:42998", HasState: true})
			return err
		}},
		{"SetFloor exhausting a key", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := ordinalv1.NewSequencerServiceClient(conn).SetFloor(ctx, &ordinalv1.SetFloorRequest{Key: "attack", Floor: math.MaxInt64 - 807})
			return err
		}},
		{"Members", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := ordinalv1.NewClusterServiceClient(conn).Members(ctx, &ordinalv1.MembersRequest{})
			return err
		}},
	}
	for _, a := range adminCalls {
		if err := a.call(callCtx(t), app); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s with role ids: %v, want PermissionDenied", a.name, err)
		}
	}

	// Without a client certificate, or in plain text, nothing gets past
	// the TLS handshake.
	noCert := dialWith(t, follower.GRPCAddr, c.DialOptions("")...)
	plain := dialWith(t, follower.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	for _, conn := range []*grpc.ClientConn{noCert, plain} {
		for _, a := range adminCalls {
			if err := a.call(callCtx(t), conn); err == nil {
				t.Errorf("%s without a client certificate succeeded", a.name)
			}
		}
		_, err := ordinalv1.NewSequencerServiceClient(conn).GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "attack"})
		if err == nil {
			t.Error("an ID without a client certificate")
		}
	}

	// The calls between nodes are not on the client port at all, whatever
	// the certificate: not even an admin learns a node's incarnation there.
	for _, conn := range []*grpc.ClientConn{app, follower.Conn()} {
		_, err := ordinalv1.NewPeerServiceClient(conn).ConfirmTerm(callCtx(t), &ordinalv1.ConfirmTermRequest{Term: 1})
		if status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.Unimplemented {
			t.Errorf("PeerService/ConfirmTerm on the client port: %v, want refused", err)
		}
		_, err = ordinalv1.NewPeerServiceClient(conn).Reserve(callCtx(t), &ordinalv1.ReserveRequest{Key: "attack", Want: math.MaxInt64, Need: 1})
		if status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.Unimplemented {
			t.Errorf("PeerService/Reserve on the client port: %v, want refused", err)
		}
	}

	sameMembers(t, before, membersOf(t, c))
	strongThroughFollowers(t, c, 6)
	// The application's role does take IDs.
	if _, err := ordinalv1.NewSequencerServiceClient(app).GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "attack", Options: strongOpts}); err != nil {
		t.Fatalf("STRONG with role ids: %v", err)
	}
}

// A process without a peer certificate of the cluster's CA gets nothing
// from the peer port: it cannot join, reserve, or ask for terms; and a
// member that asks for too much is refused too.
func TestPeerPortRefusesRogues(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	before := membersOf(t, c)
	pki := c.PKI()

	rogueCert, rogueKey := pki.ForeignPeer("evil")
	rogues := map[string]transport.PeerConfig{
		"no TLS":                         {NodeID: "evil"},
		"certificate of a CA of its own": {NodeID: "evil", TLS: loadPeerTLS(t, rogueCert, rogueKey, pki.PeerCAFile)},
	}
	for name, cfg := range rogues {
		port, err := transport.ListenPeer("127.0.0.1:0", "", cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer port.Close()
		conn := dialWith(t, leader.RaftAddr, port.DialOptions("")...)
		peer := ordinalv1.NewPeerServiceClient(conn)
		if _, err := peer.Join(callCtx(t), &ordinalv1.PeerServiceJoinRequest{NodeId: "evil", RaftAddr: port.Addr().String()}); err == nil {
			t.Errorf("%s: Join accepted", name)
		}
		if _, err := peer.ConfirmTerm(callCtx(t), &ordinalv1.ConfirmTermRequest{Term: 1}); err == nil {
			t.Errorf("%s: ConfirmTerm answered", name)
		}
		if _, err := peer.Reserve(callCtx(t), &ordinalv1.ReserveRequest{Key: "attack", Want: 10, Need: 1}); err == nil {
			t.Errorf("%s: Reserve served", name)
		}
		if _, err := port.Probe(callCtx(t), leader.RaftAddr, ""); !errors.Is(err, transport.ErrPermissionDenied) && err == nil {
			t.Errorf("%s: probe succeeded", name)
		}
	}

	// A member (a peer certificate of the cluster) asking for more IDs
	// than any node would: refused, the key is not exhausted.
	member := c.PeerClient(leader, "n9")
	for _, req := range []*ordinalv1.ReserveRequest{
		{Key: "attack", Want: math.MaxInt64, Need: 1},
		{Key: "attack", Want: math.MaxInt64, Need: math.MaxInt64},
		{Key: "attack", Want: 2_000_000, Need: 2_000_000},
	} {
		if _, err := member.Reserve(callCtx(t), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Reserve want %d need %d: %v, want InvalidArgument", req.Want, req.Need, err)
		}
	}
	// A node may ask to join only as itself.
	if _, err := member.Join(callCtx(t), &ordinalv1.PeerServiceJoinRequest{NodeId: "n2", RaftAddr: "127.0.0.1:42997", HasState: true}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("n9 asking to join as n2: %v, want PermissionDenied", err)
	}
	sameMembers(t, before, membersOf(t, c))
	strongThroughFollowers(t, c, 4)
}

func loadPeerTLS(t *testing.T, certFile, keyFile, caFile string) *transport.PeerTLS {
	t.Helper()
	p, err := transport.LoadPeerTLS(certFile, keyFile, caFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Nodes started for one cluster never join another, even when the other
// answers at one of their --join addresses: not with the peer CA as the
// cluster's identity, not with a cluster token.
func TestNodesNeverJoinAnotherCluster(t *testing.T) {
	for _, mode := range []string{"peer CA", "cluster token"} {
		t.Run(mode, func(t *testing.T) {
			var opts, otherOpts testcluster.Options
			if mode == "cluster token" {
				opts = tokenOptions("token-of-cluster-a-0123456789")
				otherOpts = tokenOptions("token-of-cluster-b-0123456789")
			}
			b := testcluster.NewWithOptions(t, 1, otherOpts)
			bAddr := b.Node("n1").RaftAddr
			// Three fresh nodes meant for cluster a list b's node first.
			configure := opts.Configure
			opts.Configure = func(id string, cfg *daemon.Config) {
				if configure != nil {
					configure(id, cfg)
				}
				cfg.Cluster.Join = append([]string{bAddr}, cfg.Cluster.Join...)
			}
			a := testcluster.NewWithOptions(t, 3, opts)
			if got := len(membersOf(t, a)); got != 3 {
				t.Fatalf("cluster a has %d members, want its 3", got)
			}
			if got := len(membersOf(t, b)); got != 1 {
				t.Fatalf("cluster b has %d members, want its 1: a node of a joined it", got)
			}

			// A fresh node of a whose only join address is b's node
			// gives up, saying why.
			cfg := daemon.Config{
				Cluster:  cluster.Config{NodeID: "n7", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Join: []string{bAddr}},
				GRPCAddr: "127.0.0.1:0",
			}
			if mode == "cluster token" {
				opts.Configure("n7", &cfg)
				cfg.Cluster.Join = []string{bAddr}
			} else {
				testcluster.Secure(t, a.PKI(), "n7", &cfg)
			}
			d, err := daemon.Start(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := d.WaitReady(ctx); !errors.Is(err, cluster.ErrPeerRefused) {
				t.Fatalf("a node of a joining through b only: %v, want ErrPeerRefused", err)
			}
			if got := len(membersOf(t, b)); got != 1 {
				t.Fatalf("cluster b has %d members after n7 tried", got)
			}
		})
	}
}

// tokenOptions run a test cluster with a cluster token and no TLS: the
// token alone identifies the cluster.
func tokenOptions(token string) testcluster.Options {
	return testcluster.Options{Insecure: true, Configure: func(_ string, cfg *daemon.Config) {
		cfg.Cluster.ClusterToken = []byte(token)
	}}
}

// The forwarding attack of issue #10 in development mode (no TLS, no
// credentials at all): whatever an attacker publishes, followers forward
// STRONG calls only to the node Raft says leads, and never hand out an ID
// from anywhere else.
func TestForwardingCannotBeRedirectedWithoutSecurity(t *testing.T) {
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{Insecure: true})
	leader := c.Leader()
	follower := c.Followers(leader)[0]
	fake, fakeAddr := startFakeSequencer(t)
	before := membersOf(t, c)

	// The old attack: Join for the leader with the fake's address. Admin
	// calls are open in development mode; the call is accepted, but a
	// Join never records another node's address.
	admin := ordinalv1.NewClusterServiceClient(follower.Conn())
	if _, err := admin.Join(callCtx(t), &ordinalv1.JoinRequest{NodeId: leader.ID, RaftAddr: leader.RaftAddr, GrpcAddr: fakeAddr, HasState: true}); err != nil {
		t.Fatalf("Join repeating the leader's own addresses: %v", err)
	}
	// Moving the leader's Raft address to the attacker's: refused.
	if _, err := admin.Join(callCtx(t), &ordinalv1.JoinRequest{NodeId: leader.ID, RaftAddr: fakeAddr, HasState: true}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Join moving the leader: %v, want FailedPrecondition", err)
	}
	// Publish for the leader from a rogue peer: the leader asks itself.
	rogue, err := transport.ListenPeer("127.0.0.1:0", "", transport.PeerConfig{NodeID: "evil"})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	peer := ordinalv1.NewPeerServiceClient(dialWith(t, follower.RaftAddr, rogue.DialOptions(follower.ID)...))
	resp, err := peer.Publish(callCtx(t), &ordinalv1.PublishRequest{NodeId: leader.ID})
	if err != nil || resp.GetGrpcAddr() != leader.GRPCAddr {
		t.Fatalf("Publish for the leader: %v, %v; want its own address %s", resp, err, leader.GRPCAddr)
	}

	strongThroughFollowers(t, c, 6)
	if n := fake.calls.Load(); n != 0 {
		t.Fatalf("the fake sequencer got %d calls", n)
	}
	sameMembers(t, before, membersOf(t, c))
}

// Rotating the client port's certificate needs no restart: new
// connections get the new certificate, connections made before go on.
func TestServerCertificateRotation(t *testing.T) {
	c := testcluster.New(t, 1)
	nd := c.Node("n1")
	before := servedSerial(t, c, nd.GRPCAddr)
	if _, err := nd.Sequencer().GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "rotate"}); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := c.PKI().Server("node", "127.0.0.1", "localhost")
	certPEM, keyPEM, err := c.PKI().ServerCA.Issue(tlsutil.CertRequest{Kind: tlsutil.KindServer, Name: "node",
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// As Kubernetes does: write beside, then rename over.
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, keyPEM}, {certFile, certPEM}} {
		tmp := filepath.Join(filepath.Dir(f.path), ".rotate-"+filepath.Base(f.path))
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "the node to serve the new certificate", func() bool {
		return servedSerial(t, c, nd.GRPCAddr) != before
	})
	// The connection made before the rotation still works.
	if _, err := nd.Sequencer().GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "rotate"}); err != nil {
		t.Fatalf("call on the connection made before the rotation: %v", err)
	}
	fresh := dialWith(t, nd.GRPCAddr, c.DialOptions(testpki.AdminName)...)
	if _, err := ordinalv1.NewSequencerServiceClient(fresh).GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "rotate"}); err != nil {
		t.Fatalf("call on a new connection: %v", err)
	}
}

// servedSerial returns the serial number of the certificate addr serves.
func servedSerial(t *testing.T, c *testcluster.Cluster, addr string) string {
	t.Helper()
	cfg := c.ClientTLS(testpki.AdminName)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// --max-concurrent-streams bounds the calls one connection holds open:
// beyond it, a call waits for a slot (here until its deadline) instead of
// making the node hold one more.
func TestMaxConcurrentStreamsBoundsAConnection(t *testing.T) {
	c := testcluster.NewWithOptions(t, 1, testcluster.Options{Configure: func(_ string, cfg *daemon.Config) {
		cfg.MaxConcurrentStreams = 2
	}})
	nd := c.Node("n1")
	conn := dialWith(t, nd.GRPCAddr, c.DialOptions("app")...)
	seq := ordinalv1.NewSequencerServiceClient(conn)
	for i := 0; i < 2; i++ {
		s, err := seq.NextIdStream(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		// A stream counts once the server has seen it: one round trip.
		if err := s.Send(&ordinalv1.NextIdStreamRequest{Seq: 1, Key: "streams", Count: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := seq.GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: "streams"}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a third call on the connection: %v, want it to wait (DeadlineExceeded)", err)
	}
	// Another connection is not affected.
	other := dialWith(t, nd.GRPCAddr, c.DialOptions("app")...)
	if _, err := ordinalv1.NewSequencerServiceClient(other).GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "streams"}); err != nil {
		t.Fatalf("a call on another connection: %v", err)
	}
}

// Join refuses node IDs and addresses that have no place in a Raft
// configuration, before anything reaches the log.
func TestJoinValidatesNodeIDsAndAddresses(t *testing.T) {
	c := testcluster.New(t, 1)
	admin := c.Node("n1").Cluster()
	long := string(make([]byte, 300))
	for _, req := range []*ordinalv1.JoinRequest{
		{NodeId: "", RaftAddr: "127.0.0.1:1"},
		{NodeId: "a b", RaftAddr: "127.0.0.1:1"},
		{NodeId: "n\x00", RaftAddr: "127.0.0.1:1"},
		{NodeId: "ñ", RaftAddr: "127.0.0.1:1"},
		{NodeId: "n-" + strings.Repeat("x", 130), RaftAddr: "127.0.0.1:1"},
		{NodeId: "n2", RaftAddr: ""},
		{NodeId: "n2", RaftAddr: "no-port"},
		{NodeId: "n2", RaftAddr: "host:0"},
		{NodeId: "n2", RaftAddr: "host:99999"},
		{NodeId: "n2", RaftAddr: "ho st:1"},
		{NodeId: "n2", RaftAddr: long + ":1"},
		{NodeId: "n2", RaftAddr: "127.0.0.1:1", GrpcAddr: "bad"},
	} {
		if _, err := admin.Join(callCtx(t), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Join %q at %q (gRPC %q): %v, want InvalidArgument", req.NodeId, req.RaftAddr, req.GrpcAddr, err)
		}
	}
	if got := len(membersOf(t, c)); got != 1 {
		t.Fatalf("%d members after invalid joins", got)
	}
}
