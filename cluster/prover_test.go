package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"github.com/ordinal-dev/ordinal/transport"
)

// voterStub is a real gRPC server standing in for another voter, so that a
// test decides when and what it answers. Unary ConfirmTerm answers at once
// with term; stream requests are answered at once too unless hold is set,
// in which case they queue on held for the test to answer.
type voterStub struct {
	ordinalv1.UnimplementedPeerServiceServer
	// peerID is the node ID its peer port introduces itself with
	// (default "v").
	peerID    string
	term      atomic.Uint64
	hold      atomic.Bool
	noStreams bool
	unary     atomic.Int64 // unary ConfirmTerm calls served
	held      chan heldRequest
	// unaryGate, when set before the stub starts, holds every unary
	// ConfirmTerm until it is closed (or the call's context ends).
	unaryGate chan struct{}
	// answerAs is the node ID the stub signs its answers with.
	answerAs string
	// incarnation is the data directory the stub claims (a string).
	incarnation atomic.Value
	// refuse makes the stub answer FailedPrecondition, as a node that is
	// not (yet) a voter in its own configuration does; refusals counts them.
	refuse   atomic.Bool
	refusals atomic.Int64
}

var errNotVoterYet = status.Error(codes.FailedPrecondition, "not a voter in its own configuration")

func (v *voterStub) incarnationOf() string {
	s, _ := v.incarnation.Load().(string)
	return s
}

type heldRequest struct {
	seq    uint64
	answer func(term uint64) error
	// breakStream ends the stream the request came on with an error.
	breakStream func()
}

func (v *voterStub) ConfirmTerm(ctx context.Context, _ *ordinalv1.ConfirmTermRequest) (*ordinalv1.ConfirmTermResponse, error) {
	v.unary.Add(1)
	if v.refuse.Load() {
		v.refusals.Add(1)
		return nil, errNotVoterYet
	}
	if v.unaryGate != nil {
		select {
		case <-v.unaryGate:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return &ordinalv1.ConfirmTermResponse{Term: v.term.Load(), NodeId: v.answerAs, Incarnation: v.incarnationOf()}, nil
}

func (v *voterStub) ConfirmTermStream(stream ordinalv1.PeerService_ConfirmTermStreamServer) error {
	if v.noStreams {
		return status.Error(codes.Unimplemented, "this voter predates proof streams")
	}
	var sendMu sync.Mutex
	send := func(seq, term uint64) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(&ordinalv1.ConfirmTermStreamResponse{Seq: seq, Term: term, NodeId: v.answerAs, Incarnation: v.incarnationOf()})
	}
	broken := make(chan struct{})
	var breakOnce sync.Once
	for {
		type recvd struct {
			req *ordinalv1.ConfirmTermStreamRequest
			err error
		}
		got := make(chan recvd, 1)
		go func() {
			req, err := stream.Recv()
			got <- recvd{req, err}
		}()
		var r recvd
		select {
		case r = <-got:
		case <-broken:
			return status.Error(codes.Unavailable, "stream broken by the test")
		}
		if r.err != nil {
			return r.err
		}
		seq := r.req.GetSeq()
		if v.refuse.Load() {
			v.refusals.Add(1)
			return errNotVoterYet
		}
		if !v.hold.Load() {
			if err := send(seq, v.term.Load()); err != nil {
				return err
			}
			continue
		}
		v.held <- heldRequest{
			seq:         seq,
			answer:      func(term uint64) error { return send(seq, term) },
			breakStream: func() { breakOnce.Do(func() { close(broken) }) },
		}
	}
}

// startVoterStub serves v on a peer port on loopback and returns its
// address.
func startVoterStub(t *testing.T, v *voterStub) string {
	t.Helper()
	v.held = make(chan heldRequest, 16)
	id := v.peerID
	if id == "" {
		id = "v"
	}
	port, err := transport.ListenPeer("127.0.0.1:0", "", transport.PeerConfig{NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(port.ServerOption())
	ordinalv1.RegisterPeerServiceServer(srv, v)
	go func() { _ = srv.Serve(port.GRPCListener()) }()
	t.Cleanup(func() {
		srv.Stop()
		_ = port.Close()
	})
	return port.Addr().String()
}

// testProver is a prover for node "self" whose only other voter is "v",
// at addr.
type testProver struct {
	*prover
	addr string
}

// newTestProver returns a prover for node "self" whose only other voter is
// "v", served at addr.
func newTestProver(t *testing.T, addr string) *testProver {
	t.Helper()
	port, err := transport.ListenPeer("127.0.0.1:0", "", transport.PeerConfig{NodeID: "self"})
	if err != nil {
		t.Fatal(err)
	}
	ps := newPeers(port)
	p := newProver("self", ps, hclog.NewNullLogger())
	t.Cleanup(func() {
		p.close()
		_ = port.Close()
	})
	return &testProver{prover: p, addr: addr}
}

// prove proves term with the voters named in ids ("self", "v").
func (p *testProver) prove(ctx context.Context, term uint64, ids []string) error {
	voters := make([]raft.Server, len(ids))
	for i, id := range ids {
		voters[i] = raft.Server{ID: raft.ServerID(id), Suffrage: raft.Voter}
		if id == "v" {
			voters[i].Address = raft.ServerAddress(p.addr)
		}
	}
	return p.prover.prove(ctx, term, voters)
}

var twoVoters = []string{"self", "v"}

// proveAsync starts a proof and returns where its result will arrive.
func proveAsync(p *testProver, term uint64) <-chan error {
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res <- p.prove(ctx, term, twoVoters)
	}()
	return res
}

func awaitStreamReady(t *testing.T, p *prover, id string) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, "proof stream to "+id+" is up", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		l := p.links[id]
		return l != nil && l.ready
	})
}

func nextHeld(t *testing.T, v *voterStub) heldRequest {
	t.Helper()
	select {
	case r := <-v.held:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the voter received no proof request")
		return heldRequest{}
	}
}

func resultOf(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the proof did not finish")
		return nil
	}
}

// streamingProver returns a prover whose other voter, a stub in term,
// answered a first proof (unary: the stream was not up yet) and is now
// reached over its proof stream.
func streamingProver(t *testing.T, term uint64) (*testProver, *voterStub) {
	t.Helper()
	v := &voterStub{}
	v.term.Store(term)
	p := newTestProver(t, startVoterStub(t, v))
	if err := p.prove(context.Background(), term, twoVoters); err != nil {
		t.Fatalf("first proof (unary, the stream is not up yet): %v", err)
	}
	awaitStreamReady(t, p.prover, "v")
	return p, v
}

// The flaw of raft.VerifyLeader that the prover exists to avoid: an answer
// to a request sent before a proof started must not count for that proof,
// even when it arrives after the proof started and says "your term".
func TestProverIgnoresAnswersToRequestsSentBeforeItStarted(t *testing.T) {
	p, v := streamingProver(t, 5)

	v.hold.Store(true)
	first := proveAsync(p, 5)
	old := nextHeld(t, v) // in flight, like a heartbeat sent before the pause
	second := proveAsync(p, 5)
	fresh := nextHeld(t, v)
	if fresh.seq <= old.seq {
		t.Fatalf("second proof sent seq %d, not after the first's %d", fresh.seq, old.seq)
	}
	// The voter moved to a newer term between the two requests: its answer
	// to the old request says 5, to the new one 6.
	if err := old.answer(5); err != nil {
		t.Fatal(err)
	}
	if err := resultOf(t, first); err != nil {
		t.Fatalf("the first proof, answered in its own term: %v", err)
	}
	if err := fresh.answer(6); err != nil {
		t.Fatal(err)
	}
	if err := resultOf(t, second); !errors.Is(err, alloc.ErrNotLeader) {
		t.Fatalf("second proof = %v, want ErrNotLeader: the stale answer must not have proved it", err)
	}
}

// An answer to request s answers every proof numbered s or lower: all of
// them started before request s was sent.
func TestProverAnswerToALaterRequestProvesEarlierProofs(t *testing.T) {
	p, v := streamingProver(t, 3)
	v.hold.Store(true)
	var proofs []<-chan error
	for range 5 {
		proofs = append(proofs, proveAsync(p, 3))
	}
	testutil.WaitFor(t, 5*time.Second, "all proofs asked", func() bool { return p.seq.Load() >= 6 })
	for {
		r := nextHeld(t, v)
		if r.seq < 6 {
			continue // left unanswered
		}
		if err := r.answer(3); err != nil {
			t.Fatal(err)
		}
		break
	}
	for i, res := range proofs {
		if err := resultOf(t, res); err != nil {
			t.Fatalf("proof %d: %v", i, err)
		}
	}
}

func TestProverFallsBackToUnaryWhenTheStreamBreaks(t *testing.T) {
	p, v := streamingProver(t, 7)
	v.hold.Store(true)
	unaryBefore := v.unary.Load()
	res := proveAsync(p, 7)
	nextHeld(t, v).breakStream()
	if err := resultOf(t, res); err != nil {
		t.Fatalf("a proof whose stream broke under it: %v", err)
	}
	if v.unary.Load() == unaryBefore {
		t.Fatal("the proof succeeded without the unary call that should replace the lost answer")
	}
}

func TestProverWorksWithVotersWithoutStreams(t *testing.T) {
	v := &voterStub{noStreams: true}
	v.term.Store(2)
	p := newTestProver(t, startVoterStub(t, v))
	for i := range 20 {
		if err := p.prove(context.Background(), 2, twoVoters); err != nil {
			t.Fatalf("proof %d against a voter without streams: %v", i, err)
		}
	}
	if err := p.prove(context.Background(), 1, twoVoters); !errors.Is(err, alloc.ErrNotLeader) {
		t.Fatalf("proof for an older term = %v, want ErrNotLeader", err)
	}
}

// A proof that ends by its own deadline while its unary ask is in flight
// must not count the voter as failed for the older proofs still waiting
// for their own asks to the same voter (FenceRounds > 1 overlaps proofs).
func TestProverDeadlineOfOneProofDoesNotFailOlderOnes(t *testing.T) {
	v := &voterStub{noStreams: true, unaryGate: make(chan struct{})}
	v.term.Store(2)
	p := newTestProver(t, startVoterStub(t, v))
	older := proveAsync(p, 2)
	testutil.WaitFor(t, 5*time.Second, "the older proof's unary ask", func() bool { return v.unary.Load() >= 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := p.prove(ctx, 2, twoVoters); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("the proof whose deadline passed = %v, want ErrNoQuorum", err)
	}
	testutil.WaitFor(t, 5*time.Second, "the newer proof's unary ask to end", func() bool { return v.unary.Load() >= 2 })
	select {
	case err := <-older:
		t.Fatalf("the older proof ended before its voter answered: %v", err)
	default:
	}
	close(v.unaryGate)
	if err := resultOf(t, older); err != nil {
		t.Fatalf("the older proof, answered by its voter: %v", err)
	}
}

// The address known for voter v reaches another node: its answers, over
// the stream or unary, must not count as v's, whether the other node
// introduces itself as such in the peer handshake (which refuses the
// connection) or only labels its answers.
func TestProverRefusesAnswersFromAnotherNode(t *testing.T) {
	for _, tt := range []struct {
		name    string
		streams bool
		peerID  string
	}{
		{"handshake/stream", true, "intruder"},
		{"handshake/unary", false, "intruder"},
		{"answer/stream", true, "v"},
		{"answer/unary", false, "v"},
	} {
		v := &voterStub{noStreams: !tt.streams, answerAs: "intruder", peerID: tt.peerID}
		v.term.Store(2)
		p := newTestProver(t, startVoterStub(t, v))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := p.prove(ctx, 2, twoVoters)
		cancel()
		if !errors.Is(err, ErrNoQuorum) {
			t.Errorf("%s: proof answered only by another node = %v, want ErrNoQuorum", tt.name, err)
		}
	}
	v := &voterStub{answerAs: "v"}
	v.term.Store(2)
	if err := newTestProver(t, startVoterStub(t, v)).prove(context.Background(), 2, twoVoters); err != nil {
		t.Fatalf("proof answered by v itself: %v", err)
	}
}

// A voter that comes back from a new data directory under its old ID does
// not count for a leader that heard from its previous incarnation, until
// that leader forgets it (it re-admitted the voter, or was elected since).
func TestProverRefusesANewIncarnationUntilForgotten(t *testing.T) {
	v := &voterStub{noStreams: true, answerAs: "v"}
	v.term.Store(2)
	v.incarnation.Store("first")
	p := newTestProver(t, startVoterStub(t, v))
	if err := p.prove(context.Background(), 2, twoVoters); err != nil {
		t.Fatalf("proof answered by the voter: %v", err)
	}
	v.incarnation.Store("second") // wiped and restarted
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := p.prove(ctx, 2, twoVoters)
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "new data directory") {
		t.Fatalf("proof answered by a new incarnation = %v, want ErrNoQuorum naming the new data directory", err)
	}
	p.forgetIncarnation("other") // another voter's re-admission changes nothing for v
	if err := p.prove(ctx, 2, twoVoters); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("another voter forgotten, v's new incarnation: %v, want ErrNoQuorum", err)
	}
	p.forgetIncarnation("v") // v re-admitted
	if err := p.prove(context.Background(), 2, twoVoters); err != nil {
		t.Fatalf("proof after the re-admission: %v", err)
	}
	v.incarnation.Store("") // rolled back to a version without incarnations
	if err := p.prove(context.Background(), 2, twoVoters); err != nil {
		t.Fatalf("proof answered by a node without an incarnation: %v", err)
	}
}

// A voter that refuses because it is not a voter in its own configuration
// yet (promoted by the leader, promotion not appended yet) must not fail
// the proof at once: the proof waits until the voter answers.
func TestProverWaitsForAVoterThatIsNotOneYet(t *testing.T) {
	v := &voterStub{answerAs: "v"}
	v.term.Store(2)
	v.refuse.Store(true)
	p := newTestProver(t, startVoterStub(t, v))
	res := proveAsync(p, 2)
	testutil.WaitFor(t, 5*time.Second, "the voter to refuse", func() bool { return v.refusals.Load() >= 1 })
	select {
	case err := <-res:
		t.Fatalf("the proof ended while its only other voter was not a voter yet: %v", err)
	default:
	}
	v.refuse.Store(false) // the promotion is appended
	if err := resultOf(t, res); err != nil {
		t.Fatalf("proof once the voter answers: %v", err)
	}
}

func TestProverWithoutQuorumFailsByItsDeadline(t *testing.T) {
	p := newTestProver(t, testutil.FreeAddr(t)) // nothing listens there
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := p.prove(ctx, 1, twoVoters)
	if !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("proof with the only other voter down = %v, want ErrNoQuorum", err)
	}
	if ctx.Err() == nil {
		// Allowed only if it failed fast for a reason it can tell.
		t.Logf("failed before its deadline: %v", err)
	}
	single := []string{"self"}
	if err := p.prove(context.Background(), 1, single); err != nil {
		t.Fatalf("a single voter proves its own leadership: %v", err)
	}
}
