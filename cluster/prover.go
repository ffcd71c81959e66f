package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
)

// Reconnection pacing for proof streams. A voter that does not implement
// ConfirmTermStream (an older ordinal during a rolling upgrade) is asked
// again only rarely; meanwhile proofs use the unary ConfirmTerm.
const (
	linkMinBackoff           = 50 * time.Millisecond
	linkMaxBackoff           = time.Second
	linkUnimplementedBackoff = 30 * time.Second
	// linkIdleTimeout ends the reconnection attempts of a link no proof has
	// used for this long, such as one to a node that left the cluster.
	linkIdleTimeout = time.Minute
	// linkReaskTimeout bounds the unary call that replaces the answer a
	// broken stream owed; proofs give up on their own deadline anyway.
	linkReaskTimeout = 5 * time.Second
	// notVoterRetry is how soon a proof asks again a voter that answered
	// it is not a voter in its own configuration yet.
	notVoterRetry = 20 * time.Millisecond
)

// prover proves that this node still leads: a proof for term T holds when,
// after the proof started, a majority of voters (this node included)
// reported a term no newer than T. See alloc/DESIGN.md for why that fences
// a deposed leader and why raft.VerifyLeader does not.
//
// Each other voter is asked over one long-lived ConfirmTermStream (a
// voterLink), so that a proof costs one small message each way rather than a
// new RPC. Every proof takes a fresh sequence number; a link sends the
// highest one asked for and the voter echoes it with its term, read after the
// request arrived. An answer echoing seq s therefore answers every proof
// numbered s or lower, all of which started before the request for s was
// sent. Until a link's stream is up, proofs ask that voter with the unary
// ConfirmTerm instead.
type prover struct {
	nodeID string
	peers  *peers
	logger hclog.Logger

	ctx    context.Context // ends when the node closes
	cancel context.CancelFunc
	wg     sync.WaitGroup
	seq    atomic.Uint64

	mu      sync.Mutex
	links   map[string]*voterLink
	changed chan struct{} // closed and replaced whenever an answer arrives
	closed  bool
	// pins holds each voter's incarnation as first heard from since this
	// node last started replicating to it (see checkAnswerer). Kept apart
	// from the links, which come and go with use.
	pins map[string]string
}

// voterLink is the proof stream to one voter. Fields after mu are guarded by
// the prover's mu.
type voterLink struct {
	id       string
	addr     atomic.Pointer[string] // peer address in the latest configuration
	kick     chan struct{}          // wakes the sender; capacity 1
	want     atomic.Uint64          // highest seq a proof asked this voter about
	wantTerm atomic.Uint64          // the term of that proof, for the voter's logs
	lastUsed atomic.Int64           // unix nanoseconds of the last proof that used it

	ready   bool   // the stream is up and its sender runs
	ackSeq  uint64 // highest seq answered
	ackTerm uint64 // the voter's term in that answer
	failSeq uint64 // proofs up to this seq will get no answer from this link
	failErr error
}

func newProver(nodeID string, p *peers, logger hclog.Logger) *prover {
	ctx, cancel := context.WithCancel(context.Background())
	return &prover{
		nodeID:  nodeID,
		peers:   p,
		logger:  logger,
		ctx:     ctx,
		cancel:  cancel,
		links:   map[string]*voterLink{},
		changed: make(chan struct{}),
		pins:    map[string]string{},
	}
}

// close ends every link and waits for their goroutines.
func (p *prover) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}

// prove returns nil once a majority of voters, this node counted as one if
// it is a voter, answered with a term no newer than term after prove was
// called. It fails with alloc.ErrNotLeader when a voter reports a newer term
// and with ErrNoQuorum when a majority cannot answer before ctx ends. Each
// voter is asked at its address in the configuration, over a connection
// that only that node can answer (the peer handshake checks its ID).
func (p *prover) prove(ctx context.Context, term uint64, voters []raft.Server) error {
	pr := proof{seq: p.seq.Add(1), term: term, need: len(voters)/2 + 1, links: make([]*voterLink, 0, len(voters))}
	for _, v := range voters {
		if string(v.ID) == p.nodeID {
			pr.self = 1
			continue
		}
		l, err := p.link(string(v.ID), string(v.Address))
		if err != nil {
			return err
		}
		pr.links = append(pr.links, l)
	}
	for _, l := range pr.links {
		p.ask(ctx, l, pr.seq, term)
	}
	return p.await(ctx, &pr)
}

// proof is one call of prove: the voters it asked and how many answers
// decide it.
type proof struct {
	seq   uint64       // this proof's number: answers to seq or later count
	term  uint64       // the term to prove
	self  int          // 1 if this node is a voter (its own vote), else 0
	need  int          // votes needed: a majority of the voters
	links []*voterLink // the other voters
}

// ask sends the proof seq to l's voter: over its stream when that is up,
// otherwise with a unary ConfirmTerm.
func (p *prover) ask(ctx context.Context, l *voterLink, seq, term uint64) {
	l.lastUsed.Store(time.Now().UnixNano())
	for cur := l.want.Load(); cur < seq && !l.want.CompareAndSwap(cur, seq); cur = l.want.Load() {
	}
	l.wantTerm.Store(term)
	// A link that breaks after this check fails every seq up to want, ours
	// included, so the proof does not wait on it in vain.
	p.mu.Lock()
	ready := l.ready
	p.mu.Unlock()
	if ready {
		select {
		case l.kick <- struct{}{}:
		default: // the sender is already due to send the latest want
		}
		return
	}
	go p.askUnary(ctx, l, seq, term, forOneProof)
}

// askScope says whose context a unary ask runs under.
type askScope int

const (
	// forOneProof: ctx is one proof's. An ask cut short by that proof's
	// deadline says nothing about the voter, and recording it as a
	// failure would fail the older proofs still waiting for their own
	// asks to it; a voter not yet a voter in its own configuration is
	// asked again until that deadline.
	forOneProof askScope = iota
	// forTheLink: ctx is the link's own (a re-ask after its stream broke):
	// every failure is recorded.
	forTheLink
)

// askUnary asks l's voter with a unary ConfirmTerm on behalf of the proofs
// up to seq, under ctx of the given scope.
func (p *prover) askUnary(ctx context.Context, l *voterLink, seq, term uint64, scope askScope) {
	forProof := scope == forOneProof
	for {
		resp, err := p.confirmTerm(ctx, l, term)
		if err == nil {
			err = p.checkAnswerer(l, resp)
		}
		switch {
		case err == nil:
			p.answer(l, seq, resp.GetTerm())
			return
		case forProof && endedByDeadline(ctx, err):
			return
		case status.Code(err) == codes.FailedPrecondition:
			// Not a voter in its own configuration yet: a voter just
			// promoted refuses until it has appended its promotion. A
			// proof asks again shortly, until its deadline, rather than
			// counting the voter as failed.
			if !forProof || sleepCtx(ctx, notVoterRetry) != nil {
				return
			}
		default:
			p.fail(l, seq, err)
			return
		}
	}
}

// endedByDeadline reports whether a call on ctx failed because ctx ended.
// The status code counts too: the voter enforces the deadline it was sent,
// and its DeadlineExceeded can arrive before ctx's own timer has fired.
func endedByDeadline(ctx context.Context, err error) bool {
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return ctx.Err() != nil
}

// confirmTerm asks voter id for its term with one unary RPC.
func (p *prover) confirmTerm(ctx context.Context, l *voterLink, term uint64) (*ordinalv1.ConfirmTermResponse, error) {
	c, err := p.client(l)
	if err != nil {
		return nil, err
	}
	// Waiting for a connection that is being re-established is bounded by
	// ctx, and the proof ends as soon as a majority answered.
	return c.ConfirmTerm(ctx, &ordinalv1.ConfirmTermRequest{Term: term, LeaderId: p.nodeID}, grpc.WaitForReady(true))
}

// termAnswer is what checkAnswerer reads of an answer to a proof request,
// ConfirmTerm's or ConfirmTermStream's (two messages with the same fields).
type termAnswer interface {
	GetNodeId() string
	GetIncarnation() string
}

// checkAnswerer refuses an answer that does not come from the voter l was
// asked: another node's (the address the prover knows for the voter
// reached someone else), or another incarnation's than the one pinned for
// it — the voter lost its data directory and came back under its ID, and
// a leader that still holds the configuration it was a voter of must not
// count it: it forgot its votes, and whatever term it holds now may come
// from this deposed leader's own heartbeats. The leader that re-admitted
// it removed and added it, which forgets the pin there (see
// forgetIncarnation). Nodes that predate these fields send neither and
// are taken as they are.
func (p *prover) checkAnswerer(l *voterLink, resp termAnswer) error {
	if got := resp.GetNodeId(); got != "" && got != l.id {
		return fmt.Errorf("the address of voter %s is served by node %s: its answer does not count", l.id, got)
	}
	got := resp.GetIncarnation()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch pinned := p.pins[l.id]; {
	case got == "":
		// A node older than incarnations, also after a rolled-back
		// upgrade: counted as it always was.
	case pinned == "":
		p.pins[l.id] = got
	case got != pinned:
		return fmt.Errorf("voter %s answers from a new data directory (incarnation %q, known as %q) "+
			"and does not count until the configuration re-admits it", l.id, got, pinned)
	}
	return nil
}

// forgetIncarnation drops voter id's pinned incarnation, so that the next
// answer pins it anew. The node calls it when, as leader, it starts or
// stops replicating to id: that is how a re-admission (remove, then add)
// shows on the leader that made it, and on a newly elected one.
func (p *prover) forgetIncarnation(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pins, id)
}

func (p *prover) client(l *voterLink) (ordinalv1.PeerServiceClient, error) {
	return p.peers.client(l.id, *l.addr.Load())
}

// await waits until the answers to pr.seq decide the proof.
func (p *prover) await(ctx context.Context, pr *proof) error {
	seq, term, need := pr.seq, pr.term, pr.need
	for {
		p.mu.Lock()
		acks, open := pr.self, 0
		var newer *voterLink
		var lastErr error
		for _, l := range pr.links {
			switch {
			case l.ackSeq >= seq && l.ackTerm > term:
				newer = l
			case l.ackSeq >= seq:
				acks++
			case l.failSeq >= seq:
				lastErr = l.failErr
			default:
				open++
			}
		}
		changed := p.changed
		p.mu.Unlock()
		switch {
		case newer != nil:
			return fmt.Errorf("%w: node %s is in term %d, after ours (%d)", alloc.ErrNotLeader, newer.id, newer.ackTerm, term)
		case acks >= need:
			return nil
		case acks+open < need:
			err := fmt.Errorf("%w: %d of %d voters confirmed term %d, %d needed", ErrNoQuorum, acks, len(pr.links)+pr.self, term, need)
			if lastErr != nil {
				err = fmt.Errorf("%w; last error: %w", err, lastErr)
			}
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for a quorum to confirm the leader: %w", ErrNoQuorum, ctx.Err())
		}
	}
}

// answer records that l's voter was in term after receiving request seq.
func (p *prover) answer(l *voterLink, seq, term uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq <= l.ackSeq {
		return
	}
	l.ackSeq, l.ackTerm = seq, term
	p.broadcastLocked()
}

// fail records that proofs up to seq get no answer from l.
func (p *prover) fail(l *voterLink, seq uint64, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq <= l.failSeq {
		return
	}
	l.failSeq, l.failErr = seq, err
	p.broadcastLocked()
}

func (p *prover) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// link returns the link to voter id at addr, starting it on first use. A
// voter whose address changed is reached at the new one from the next ask
// and stream on.
func (p *prover) link(id, addr string) (*voterLink, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrShutdown
	}
	l := p.links[id]
	if l != nil && *l.addr.Load() != addr {
		l.addr.Store(&addr)
	}
	if l == nil {
		l = &voterLink{id: id, kick: make(chan struct{}, 1)}
		l.addr.Store(&addr)
		l.lastUsed.Store(time.Now().UnixNano())
		p.links[id] = l
		p.wg.Add(1)
		go p.run(l)
	}
	return l, nil
}

// run keeps l's stream up until the node closes or the link idles out.
func (p *prover) run(l *voterLink) {
	defer p.wg.Done()
	backoff := linkMinBackoff
	for p.ctx.Err() == nil {
		answered, err := p.serve(l)
		if p.ctx.Err() != nil {
			return
		}
		switch {
		case status.Code(err) == codes.Unimplemented:
			backoff = linkUnimplementedBackoff
		case answered:
			backoff = linkMinBackoff
		}
		p.logger.Debug("leadership proof stream ended, proofs use unary calls until it is back",
			"voter", l.id, "error", err, "retry_in", backoff)
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < linkMaxBackoff {
			backoff = min(2*backoff, linkMaxBackoff)
		}
		if p.idle(l) {
			return
		}
	}
}

// idle removes l when no proof used it for linkIdleTimeout.
func (p *prover) idle(l *voterLink) bool {
	if time.Since(time.Unix(0, l.lastUsed.Load())) < linkIdleTimeout {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.links, l.id)
	return true
}

// serve runs one stream to l's voter until it breaks: a sender goroutine
// sends the latest seq asked for whenever kicked, and serve records the
// answers. It reports whether any answer arrived.
func (p *prover) serve(l *voterLink) (answered bool, err error) {
	c, err := p.client(l)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	stream, err := c.ConfirmTermStream(ctx)
	if err != nil {
		return false, err
	}
	sent := make(chan error, 1)
	go func() { sent <- p.send(ctx, l, stream) }()
	p.setReady(l, true)
	var recvErr error
	for {
		resp, err := stream.Recv()
		if err != nil {
			recvErr = err
			break
		}
		if err := p.checkAnswerer(l, resp); err != nil {
			recvErr = err
			break
		}
		answered = true
		p.answer(l, resp.GetSeq(), resp.GetTerm())
	}
	p.setReady(l, false)
	p.reaskUnary(l)
	cancel()
	return answered, errors.Join(recvErr, <-sent)
}

// reaskUnary asks l's voter with a unary call about the latest seq its
// broken stream may have left unanswered, so that the proofs waiting for it
// are not stranded until their deadline.
func (p *prover) reaskUnary(l *voterLink) {
	seq := l.want.Load()
	p.mu.Lock()
	pending := seq > l.ackSeq
	p.mu.Unlock()
	if !pending {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(p.ctx, linkReaskTimeout)
		defer cancel()
		p.askUnary(ctx, l, seq, l.wantTerm.Load(), forTheLink)
	}()
}

// send sends the latest seq asked for each time the link is kicked. Kicks
// that arrive while a send is under way collapse into one, so a slow voter
// gets fewer, newer requests rather than a queue.
func (p *prover) send(ctx context.Context, l *voterLink, stream ordinalv1.PeerService_ConfirmTermStreamClient) error {
	var sent uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.kick:
		}
		seq := l.want.Load()
		if seq <= sent {
			continue
		}
		req := &ordinalv1.ConfirmTermStreamRequest{Seq: seq, Term: l.wantTerm.Load(), LeaderId: p.nodeID}
		if err := stream.Send(req); err != nil {
			return err
		}
		sent = seq
	}
}

func (p *prover) setReady(l *voterLink, ready bool) {
	p.mu.Lock()
	l.ready = ready
	p.mu.Unlock()
}
