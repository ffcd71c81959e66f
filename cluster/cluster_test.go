package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/apisuite"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
)

var strongOpts = &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ids records every id a test was handed and checks the guarantees.
type ids struct {
	mu   sync.Mutex
	seen map[int64]string
	last int64 // last STRONG id, for strictly increasing sequential calls
}

func newIDs() *ids { return &ids{seen: map[int64]string{}} }

func (s *ids) add(t *testing.T, id int64, who string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, dup := s.seen[id]; dup {
		t.Fatalf("id %d handed out twice: to %s and to %s", id, prev, who)
	}
	s.seen[id] = who
}

// strong takes a STRONG id through nd and checks it is above every STRONG
// id taken before by this sequential caller.
func (s *ids) strong(t *testing.T, nd *testcluster.Node, key string) int64 {
	t.Helper()
	resp, err := nd.Sequencer().GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: key, Options: strongOpts})
	if err != nil {
		t.Fatalf("STRONG via %s: %v", nd.ID, err)
	}
	s.add(t, resp.NextId, "strong via "+nd.ID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if resp.NextId <= s.last {
		t.Fatalf("STRONG via %s returned %d after %d", nd.ID, resp.NextId, s.last)
	}
	s.last = resp.NextId
	return resp.NextId
}

func (s *ids) weak(t *testing.T, nd *testcluster.Node, key string) int64 {
	t.Helper()
	resp, err := nd.Sequencer().GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: key})
	if err != nil {
		t.Fatalf("WEAK via %s: %v", nd.ID, err)
	}
	s.add(t, resp.NextId, "weak via "+nd.ID)
	return resp.NextId
}

func members(t *testing.T, nd *testcluster.Node) *ordinalv1.MembersResponse {
	t.Helper()
	resp, err := nd.Cluster().Members(callCtx(t), &ordinalv1.MembersRequest{})
	if err != nil {
		t.Fatalf("members via %s: %v", nd.ID, err)
	}
	return resp
}

func voterIDs(resp *ordinalv1.MembersResponse) []string {
	var out []string
	for _, m := range resp.Members {
		if m.Voter {
			out = append(out, m.NodeId)
		}
	}
	sort.Strings(out)
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestThreeNodesFormOneClusterAndKeepItAcrossRestarts(t *testing.T) {
	c := testcluster.New(t, 3)
	want := []string{"n1", "n2", "n3"}
	first := members(t, c.Node("n1"))
	for _, nd := range c.Nodes() {
		m := members(t, nd)
		if got := voterIDs(m); !equal(got, want) {
			t.Fatalf("voters seen via %s: %v, want %v", nd.ID, got, want)
		}
		if m.ClusterId == "" || m.ClusterId != first.ClusterId {
			t.Fatalf("cluster id via %s: %q, via n1: %q", nd.ID, m.ClusterId, first.ClusterId)
		}
	}
	got := newIDs()
	for _, nd := range c.Nodes() {
		got.strong(t, nd, "k")
	}

	c.RestartAll()
	m := members(t, c.Leader())
	if m.ClusterId != first.ClusterId || !equal(voterIDs(m), want) {
		t.Fatalf("after restarting every node: cluster %q voters %v, want %q %v", m.ClusterId, voterIDs(m), first.ClusterId, want)
	}
	for _, nd := range c.Nodes() {
		got.strong(t, nd, "k")
	}
}

// TestAPISuiteOverThreeNodes runs the store-agnostic API suite through
// every node of a Raft cluster, followers forwarding to the leader.
func TestAPISuiteOverThreeNodes(t *testing.T) {
	c := testcluster.New(t, 3)
	var targets []apisuite.Target
	for _, nd := range c.Nodes() {
		targets = append(targets, apisuite.Target{Name: nd.ID, Conn: nd.Conn()})
	}
	apisuite.Run(t, targets)
}

func TestAnyNodeServesStrongAndWeak(t *testing.T) {
	c := testcluster.New(t, 3)
	strong, weak := newIDs(), newIDs()
	perNode := map[string]int64{}
	for round := 0; round < 20; round++ {
		for _, nd := range c.Nodes() {
			strong.strong(t, nd, "strong-key")
			id := weak.weak(t, nd, "weak-key")
			if id <= perNode[nd.ID] {
				t.Fatalf("WEAK via %s went from %d to %d", nd.ID, perNode[nd.ID], id)
			}
			perNode[nd.ID] = id
		}
	}
}

func TestStrongSurvivesLeaderAndFollowerLoss(t *testing.T) {
	c := testcluster.New(t, 3)
	got := newIDs()
	for _, nd := range c.Nodes() {
		got.strong(t, nd, "k")
		got.weak(t, nd, "k")
	}
	leader := c.Leader()
	leader.Stop()
	newLeader := c.Leader()
	if newLeader == leader {
		t.Fatal("stopped node still leads")
	}
	for _, nd := range c.Followers(nil) {
		got.strong(t, nd, "k")
		got.weak(t, nd, "k")
	}
	leader.Restart()
	follower := c.Followers(c.Leader())[0]
	follower.Stop()
	for _, nd := range c.Followers(nil) {
		got.strong(t, nd, "k")
		got.weak(t, nd, "k")
	}
	follower.Restart()
	for _, nd := range c.Nodes() {
		got.strong(t, nd, "k")
		got.weak(t, nd, "k")
	}
}

func TestRemoveFollowerThenLeader(t *testing.T) {
	c := testcluster.New(t, 3)
	got := newIDs()
	leader := c.Leader()
	follower := c.Followers(leader)[0]
	if _, err := leader.Cluster().Remove(callCtx(t), &ordinalv1.RemoveRequest{NodeId: follower.ID}); err != nil {
		t.Fatal(err)
	}
	// The removed node stops reporting itself healthy, so load balancers
	// and container orchestrators stop sending it traffic.
	testcluster.WaitFor(t, 10*time.Second, "removed node reports NOT_SERVING", func() bool {
		resp, err := healthpb.NewHealthClient(follower.Conn()).Check(callCtx(t), &healthpb.HealthCheckRequest{})
		return err == nil && resp.Status == healthpb.HealthCheckResponse_NOT_SERVING
	})
	follower.Stop()
	if v := voterIDs(members(t, leader)); len(v) != 2 {
		t.Fatalf("after removing %s voters are %v", follower.ID, v)
	}
	// Ask the remaining follower to remove the leader: the call is
	// forwarded, leadership moves first.
	other := c.Followers(leader)[0]
	if _, err := other.Cluster().Remove(callCtx(t), &ordinalv1.RemoveRequest{NodeId: leader.ID}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 10*time.Second, other.ID+" to lead alone", func() bool {
		m, err := other.Cluster().Members(callCtx(t), &ordinalv1.MembersRequest{})
		return err == nil && equal(voterIDs(m), []string{other.ID}) && other.Daemon().Node().IsLeader()
	})
	leader.Stop()
	got.strong(t, other, "k")
	got.weak(t, other, "k")

	if _, err := other.Cluster().Remove(callCtx(t), &ordinalv1.RemoveRequest{NodeId: "nobody"}); status.Code(err) != codes.NotFound {
		t.Fatalf("removing an unknown node: %v, want NotFound", err)
	}
	if _, err := other.Cluster().Remove(callCtx(t), &ordinalv1.RemoveRequest{NodeId: other.ID}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("removing the last voter: %v, want FailedPrecondition", err)
	}
}

func TestRemoveDownNode(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	down := c.Followers(leader)[0]
	down.Stop()
	if _, err := leader.Cluster().Remove(callCtx(t), &ordinalv1.RemoveRequest{NodeId: down.ID}); err != nil {
		t.Fatalf("removing a node that is down: %v", err)
	}
	if v := voterIDs(members(t, leader)); len(v) != 2 {
		t.Fatalf("voters %v", v)
	}
}

func TestAddNodeWhileServing(t *testing.T) {
	c := testcluster.New(t, 3)
	got := newIDs()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var callErrs []error
	var errMu sync.Mutex
	for _, nd := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := nd.Sequencer().GetNextId(cctx, &ordinalv1.GetNextIdRequest{Key: "load", Options: strongOpts})
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						errMu.Lock()
						callErrs = append(callErrs, err)
						errMu.Unlock()
					}
					continue
				}
				got.add(t, resp.NextId, "load via "+nd.ID)
			}
		}()
	}
	n4 := c.Add("n4")
	testcluster.WaitFor(t, 15*time.Second, "n4 promoted to voter", func() bool {
		m, err := n4.Cluster().Members(callCtx(t), &ordinalv1.MembersRequest{})
		return err == nil && equal(voterIDs(m), []string{"n1", "n2", "n3", "n4"})
	})
	stop()
	wg.Wait()
	if len(callErrs) > 0 {
		t.Fatalf("%d calls failed while a node joined, first: %v", len(callErrs), callErrs[0])
	}
	got.strong(t, n4, "load")
	got.weak(t, n4, "load")
}

// A member that lost its data directory must not come back as if nothing
// happened: it is re-admitted as a new non-voter and promoted once caught
// up.
func TestWipedNodeIsReadmittedAsNew(t *testing.T) {
	c := testcluster.New(t, 3)
	got := newIDs()
	for _, nd := range c.Nodes() {
		got.strong(t, nd, "k")
		got.weak(t, nd, "k")
	}
	wiped := c.Followers(c.Leader())[0]
	wiped.Stop()
	wiped.Wipe()
	wiped.StartJoining()
	testcluster.WaitFor(t, 15*time.Second, "wiped node promoted again", func() bool {
		m, err := wiped.Cluster().Members(callCtx(t), &ordinalv1.MembersRequest{})
		return err == nil && equal(voterIDs(m), []string{"n1", "n2", "n3"})
	})
	for _, nd := range c.Nodes() {
		got.strong(t, nd, "k")
		got.weak(t, nd, "k")
	}
	// The leader's proofs must now count the re-admitted node, a new
	// incarnation of a voter it had heard from: with the other follower
	// down, it is the only voter that can complete a quorum.
	leader := c.Leader()
	for _, nd := range c.Followers(leader) {
		if nd != wiped {
			nd.Stop()
		}
	}
	got.strong(t, leader, "k")
}

func TestQuorumLossIsUnavailableWithinTheDeadline(t *testing.T) {
	c := testcluster.New(t, 3)
	got := newIDs()
	leader := c.Leader()
	got.strong(t, leader, "k")
	survivor := c.Followers(leader)[0]
	got.weak(t, survivor, "k") // the survivor holds a WEAK range now
	for _, nd := range c.Nodes() {
		if nd != survivor {
			nd.Stop()
		}
	}
	// WEAK keeps coming from the survivor's range.
	got.weak(t, survivor, "k")

	const deadline = time.Second
	for _, opts := range []*ordinalv1.SequencerOptions{strongOpts, nil} {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		start := time.Now()
		var err error
		for err == nil { // WEAK succeeds until the survivor's range runs dry
			_, err = survivor.Sequencer().GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{Key: "k", Options: opts, Count: 1000})
		}
		cancel()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("%v without quorum: %v, want Unavailable", opts.GetIncrement(), err)
		}
		if took := time.Since(start); took >= deadline {
			t.Fatalf("%v without quorum answered after %v, past the %v deadline", opts.GetIncrement(), took, deadline)
		}
	}

	leader.Restart()
	c.Leader()
	for _, nd := range []*testcluster.Node{leader, survivor} {
		got.strong(t, nd, "k")
		got.weak(t, nd, "k")
	}
}

func TestJoinFromAnotherClusterIsRefused(t *testing.T) {
	a := testcluster.New(t, 1)
	_, err := a.Node("n1").Cluster().Join(callCtx(t), &ordinalv1.JoinRequest{
		NodeId: "stranger", RaftAddr: "127.0.0.1:1", HasState: true, ClusterId: "another-cluster",
	})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("join from another cluster: %v, want FailedPrecondition", err)
	}
	if got := voterIDs(members(t, a.Node("n1"))); !equal(got, []string{"n1"}) {
		t.Fatalf("members after a refused join: %v", got)
	}
	var st interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &st) {
		t.Fatal("error carries no status")
	}
}

// Only voters may answer a leader's leadership proof: a node that is not a
// voter in its own configuration (here a joined node whose promotion never
// comes, because no other node's gRPC calls reach it to see it catch up,
// while Raft does; likewise a member that lost its data directory) refuses
// ConfirmTerm, and voters sign their answers with their ID.
func TestOnlyVotersConfirmTerms(t *testing.T) {
	var n4Peer atomic.Value // n4's peer address, once known
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{Configure: func(id string, cfg *daemon.Config) {
		if id != "n4" {
			cfg.Cluster.PeerDial = refuseGRPCTo(func() string { s, _ := n4Peer.Load().(string); return s })
		}
	}})
	n4 := c.Add("n4", func(nd *testcluster.Node) { n4Peer.Store(nd.RaftAddr) })
	testcluster.WaitFor(t, 15*time.Second, "n4 to refuse ConfirmTerm as a non-voter", func() bool {
		_, err := c.PeerClient(n4, "tester").ConfirmTerm(callCtx(t), &ordinalv1.ConfirmTermRequest{Term: 1})
		return status.Code(err) == codes.FailedPrecondition
	})
	m, err := c.Leader().Cluster().Members(callCtx(t), &ordinalv1.MembersRequest{})
	if err != nil || !equal(voterIDs(m), []string{"n1", "n2", "n3"}) {
		t.Fatalf("members: %v, %v; want n4 staged as a non-voter", m, err)
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		resp, err := c.PeerClient(c.Node(id), "tester").ConfirmTerm(callCtx(t), &ordinalv1.ConfirmTermRequest{Term: 1})
		if err != nil || resp.GetNodeId() != id || resp.GetTerm() == 0 {
			t.Errorf("voter %s answered %v, %v; want its term and its ID", id, resp, err)
		}
	}
	if _, err := n4.Sequencer().GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "k", Options: strongOpts}); err != nil {
		t.Fatalf("STRONG through the non-voter: %v", err)
	}
}

// refuseGRPCTo returns a peer dial hook that lets Raft connections to the
// address target() returns through but fails gRPC ones: it reads the
// connection kind from the peer preamble the handshake writes first.
func refuseGRPCTo(target func() string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil || addr != target() {
			return conn, err
		}
		return &kindFilter{Conn: conn}, nil
	}
}

// kindFilter fails a connection whose peer preamble says gRPC.
type kindFilter struct {
	net.Conn
	checked bool
}

func (k *kindFilter) Write(p []byte) (int, error) {
	if !k.checked {
		k.checked = true
		if len(p) >= 6 && string(p[:4]) == "ORDP" && p[5] == 'G' {
			k.Conn.Close()
			return 0, errors.New("test: gRPC to this node is cut")
		}
	}
	return k.Conn.Write(p)
}

// Leader and Members name every node by the addresses it has: the peer
// address Raft knows and the gRPC address the node published itself.
func TestLeaderAndMembersShowBothAddresses(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	// A node publishes its gRPC address in the background once it runs.
	for _, nd := range c.Nodes() {
		var resp *ordinalv1.LeaderResponse
		var err error
		testcluster.WaitFor(t, 10*time.Second, "the leader's addresses via "+nd.ID, func() bool {
			resp, err = nd.Cluster().Leader(callCtx(t), &ordinalv1.LeaderRequest{})
			return err == nil && resp.GetGrpcAddr() != ""
		})
		if resp.GetNodeId() != leader.ID || resp.GetGrpcAddr() != leader.GRPCAddr || resp.GetRaftAddr() != leader.RaftAddr {
			t.Fatalf("Leader via %s: %v; want %s at gRPC %s, peer %s", nd.ID, resp, leader.ID, leader.GRPCAddr, leader.RaftAddr)
		}
	}
	testcluster.WaitFor(t, 10*time.Second, "every node's gRPC address published", func() bool {
		m, err := leader.Cluster().Members(callCtx(t), &ordinalv1.MembersRequest{})
		if err != nil {
			return false
		}
		for _, mm := range m.GetMembers() {
			nd := c.Node(mm.GetNodeId())
			if mm.GetGrpcAddr() != nd.GRPCAddr || mm.GetRaftAddr() != nd.RaftAddr {
				return false
			}
		}
		return len(m.GetMembers()) == 3
	})
}

// A node that becomes the leader while a STRONG call through it waits to
// be forwarded serves the call itself, instead of waiting until the
// deadline for a leader other than itself.
func TestCallsThroughANewLeaderDoNotWaitForAnother(t *testing.T) {
	c := testcluster.New(t, 3)
	for round := 0; round < 3; round++ {
		leader := c.Leader()
		target := c.Followers(leader)[0]
		stop := make(chan struct{})
		errs := make(chan error, 1)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				start := time.Now()
				_, err := target.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: "moving", Options: strongOpts})
				cancel()
				if took := time.Since(start); took > 3*time.Second {
					select {
					case errs <- fmt.Errorf("a STRONG call through %s took %v (%v)", target.ID, took, err):
					default:
					}
					return
				}
			}
		}()
		if _, err := leader.Cluster().TransferLeadership(callCtx(t), &ordinalv1.TransferLeadershipRequest{NodeId: target.ID}); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("transfer to %s: %v", target.ID, err)
		}
		// Calls keep going through the new leader for a moment.
		if _, err := target.Sequencer().GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "moving", Options: strongOpts}); err != nil {
			t.Fatalf("STRONG via the new leader %s: %v", target.ID, err)
		}
		close(stop)
		wg.Wait()
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	}
}
