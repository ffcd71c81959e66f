package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// ReadyMaxLag is how many entries a node's state machine may trail the
// leader's commit index and still count as ready (Ready). A healthy
// follower trails by the entries in flight, a handful even under load; one
// restoring a snapshot or replaying a long log trails by far more, and
// serving WEAK calls or taking forwarded calls from it would only add
// latency until it catches up.
const ReadyMaxLag = 1024

// ErrNotMember is wrapped by Ready's error on a node that is not in the
// cluster's configuration (removed, or not yet added).
var ErrNotMember = errors.New("cluster: not a member of the cluster")

// ErrBehind is wrapped by Ready's error on a node whose state machine
// trails the leader's commit index by more than ReadyMaxLag entries.
var ErrBehind = errors.New("cluster: behind the leader")

// Ready returns nil when the node should receive traffic: it runs, its
// data is sound, it is a member of a cluster that has a leader, and it has
// applied the log to within ReadyMaxLag entries of the leader's commit
// index (a follower asks the leader over the peer port, within ctx; a
// leader has finished the barrier of its term). Otherwise it says why.
// Healthy is the cheap check without the round trip.
func (n *Node) Ready(ctx context.Context) error {
	if !n.isStarted() {
		return ErrNotReady
	}
	if err := n.Err(); err != nil {
		return err
	}
	cfg, err := n.configuration()
	if err != nil {
		return err
	}
	if !hasServer(cfg, raft.ServerID(n.cfg.NodeID)) {
		return fmt.Errorf("%w: node %s is not in the configuration", ErrNotMember, n.cfg.NodeID)
	}
	id, addr := n.Leader()
	switch {
	case id == "":
		return ErrNoLeader
	case id == n.cfg.NodeID:
		if n.readyTerm.Load() != n.raft.CurrentTerm() {
			return fmt.Errorf("%w: leader of term %d, still applying the entries of earlier terms", ErrNotReady, n.raft.CurrentTerm())
		}
		return nil
	}
	st, err := n.peers.status(ctx, id, addr)
	if err != nil {
		return fmt.Errorf("ask leader %s for its commit index: %w", id, err)
	}
	// Read after the leader answered, so the comparison can only err
	// towards ready by the entries committed in between.
	applied := n.raft.AppliedIndex()
	if commit := st.GetCommitIndex(); commit > applied+ReadyMaxLag {
		return fmt.Errorf("%w: applied index %d, leader %s's commit index %d (%d entries behind, at most %d allowed)",
			ErrBehind, applied, id, commit, commit-applied, ReadyMaxLag)
	}
	return nil
}
