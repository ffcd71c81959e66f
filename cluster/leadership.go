package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/fsm"
)

// watchLeadership finishes each tenure's barrier as soon as this node
// becomes leader, so the first STRONG call of a tenure does not pay for it,
// and records the node's own metadata.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.closeCh:
			return
		case isLeader := <-n.notifyCh:
			if !isLeader {
				n.logger.Info("lost leadership")
				continue
			}
			term := n.raft.CurrentTerm()
			n.tenure.Store(&tenure{term: term, start: time.Now()})
			n.logger.Info("became leader", "term", term)
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			if err := n.onLeader(ctx); err != nil {
				n.logger.Warn("leader setup failed", "error", err)
			}
			cancel()
		}
	}
}

func (n *Node) onLeader(ctx context.Context) error {
	if err := n.ensureBarrier(ctx, n.raft.CurrentTerm()); err != nil {
		return err
	}
	return n.ensureMetadata(ctx)
}

// ensureMetadata gives a new cluster its ID and records this node's gRPC
// address, which operators and clients look up.
func (n *Node) ensureMetadata(ctx context.Context) error {
	var ops []fsm.Op
	if n.fsm.ClusterID() == "" {
		ops = append(ops, fsm.Op{Kind: fsm.OpInit, ClusterID: newClusterID()})
	}
	if n.cfg.GRPCAdvertise != "" && n.fsm.NodeAddr(n.cfg.NodeID) != n.cfg.GRPCAdvertise {
		if err := validateAddr("grpc_addr", n.cfg.GRPCAdvertise); err != nil {
			return err
		}
		ops = append(ops, fsm.Op{Kind: fsm.OpSetNode, NodeID: n.cfg.NodeID, Addr: n.cfg.GRPCAdvertise})
	}
	if len(ops) == 0 {
		return nil
	}
	_, err := n.apply(ctx, fsm.Command{Ops: ops})
	return err
}

// publishSelf runs until this node's gRPC address is in the replicated
// metadata, where operators and clients find it. The leader records it
// after asking this node for it (Publish).
func (n *Node) publishSelf() {
	defer n.wg.Done()
	if n.cfg.GRPCAdvertise == "" {
		return
	}
	for wait := minRetryWait; n.fsm.NodeAddr(n.cfg.NodeID) != n.cfg.GRPCAdvertise; wait = nextWait(wait) {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
		err := n.publishOnce(ctx)
		cancel()
		if err != nil {
			n.logger.Debug("publishing gRPC address failed, will retry", "error", err)
		}
		select {
		case <-n.closeCh:
			return
		case <-time.After(wait):
		}
	}
}

func (n *Node) publishOnce(ctx context.Context) error {
	if n.IsLeader() {
		return n.ensureMetadata(ctx)
	}
	_, err := n.Publish(ctx, n.cfg.NodeID)
	if isFinal(err) {
		n.logger.Warn("this node cannot publish its address", "error", err)
	}
	return err
}

func newClusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ensureBarrier makes sure that, as leader in term, the state machine has
// applied every entry committed before the term started.
func (n *Node) ensureBarrier(ctx context.Context, term uint64) error {
	if n.readyTerm.Load() == term {
		return nil
	}
	n.barrierMu.Lock()
	defer n.barrierMu.Unlock()
	if n.readyTerm.Load() == term {
		return nil
	}
	if err := n.await(ctx, n.raft.Barrier(n.cfg.ApplyTimeout)); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	if n.raft.CurrentTerm() != term || n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	n.readyTerm.Store(term)
	return nil
}

// Confirm proves that this node leads and returns the current term as the
// epoch. The proof is a quorum round trip started after Confirm was called;
// raft.VerifyLeader is not used because replies to heartbeats sent before it
// was called can satisfy it (see alloc/DESIGN.md).
func (n *Node) Confirm(ctx context.Context) (alloc.Epoch, error) {
	if !n.isStarted() {
		return 0, ErrNotReady
	}
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	term := n.raft.CurrentTerm()
	if err := n.ensureBarrier(ctx, term); err != nil {
		return 0, err
	}
	if err := n.confirmQuorum(ctx, term); err != nil {
		return 0, err
	}
	if n.raft.CurrentTerm() != term {
		return 0, n.notLeader()
	}
	return alloc.Epoch(term), nil
}

// confirmQuorum proves, with a quorum round trip that starts now, that a
// majority of voters is not past term.
func (n *Node) confirmQuorum(ctx context.Context, term uint64) error {
	voters, err := n.voters()
	if err != nil {
		return err
	}
	return n.prover.prove(ctx, term, voters)
}

// CurrentTerm returns this node's Raft term, 0 before Raft started. Other
// nodes' leadership proofs ask for it.
func (n *Node) CurrentTerm() uint64 {
	if !n.isStarted() {
		return 0
	}
	return n.raft.CurrentTerm()
}

// ConfirmableTerm returns the term this node answers a leader's proof
// with: its current term, if Raft runs (else ErrNotReady) and the node is
// a voter in its own latest configuration (else ErrNotVoter). A node that
// lost its data directory starts with an empty configuration, and a
// deposed leader's stale configuration may still list it as a voter; its
// answer, with whatever term it picked up first, must not complete that
// leader's quorum.
func (n *Node) ConfirmableTerm() (uint64, error) {
	if err := n.Err(); err != nil {
		// Raft is shut down and its term frozen: answering would let a
		// deposed leader count a voter that no longer takes part.
		return 0, fmt.Errorf("%w: %w", ErrShutdown, err)
	}
	term := n.CurrentTerm()
	if term == 0 {
		return 0, fmt.Errorf("%w: raft is not running on this node yet", ErrNotReady)
	}
	voters, err := n.voters()
	if err != nil {
		return 0, err
	}
	for _, v := range voters {
		if string(v.ID) == n.cfg.NodeID {
			return term, nil
		}
	}
	return 0, ErrNotVoter
}

func (n *Node) voters() ([]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, n.mapRaftError(err)
	}
	var voters []raft.Server
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, s)
		}
	}
	return voters, nil
}

// watchPeers forgets a voter's pinned incarnation whenever Raft, on this
// node as leader, starts or stops replicating to it (raft's
// PeerObservation): on winning an election, and on every configuration
// change that adds or removes it, such as re-admitting a member that lost
// its data. The observer blocks Raft until the observation is taken, so
// none is lost; this loop only takes the prover's lock briefly.
func (n *Node) watchPeers(peers <-chan raft.Observation) {
	defer n.wg.Done()
	for {
		select {
		case <-n.closeCh:
			return
		case o := <-peers:
			if po, ok := o.Data.(raft.PeerObservation); ok {
				if po.Removed {
					n.noteRemoval()
				}
				n.prover.forgetIncarnation(string(po.Peer.ID))
			}
		}
	}
}

func isPeerObservation(o *raft.Observation) bool {
	_, ok := o.Data.(raft.PeerObservation)
	return ok
}
