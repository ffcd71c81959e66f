package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/fsm"
)

// Reserve reserves between need and want IDs of key through the Raft log.
//
// On a follower the reservation is forwarded to the leader and the range
// comes back with epoch 0: it serves WEAK calls only.
func (n *Node) Reserve(ctx context.Context, key fsm.Key, want, need uint64) (alloc.Range, alloc.Epoch, error) {
	if !n.isStarted() {
		return alloc.Range{}, 0, ErrNotReady
	}
	op := fsm.Op{Kind: fsm.OpReserve, Key: key, Want: want, Need: need}
	g := n.commits
	if n.raft.State() != raft.Leader {
		g = n.forwards
	}
	ps, err := g.do(ctx, op)
	if err != nil {
		return alloc.Range{}, 0, err
	}
	p := ps[0]
	switch {
	case p.err != nil:
		return alloc.Range{}, 0, p.err
	case p.res.Err != nil:
		return alloc.Range{}, 0, fmt.Errorf("reserve %d ids of %s/%s: %w", need, key.Store, key.Name, p.res.Err)
	}
	// A range a follower got from the leader has epoch 0 (term 0): it
	// serves WEAK calls only.
	return alloc.Range{First: p.res.First, Last: p.res.Last}, alloc.Epoch(p.term), nil
}

// Floor raises key's high-water mark to at least value through the log.
func (n *Node) Floor(ctx context.Context, key fsm.Key, value uint64) (uint64, error) {
	if !n.isStarted() {
		return 0, ErrNotReady
	}
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	ps, err := n.commits.do(ctx, fsm.Op{Kind: fsm.OpFloor, Key: key, Value: value})
	if err != nil {
		return 0, err
	}
	if ps[0].err != nil {
		return 0, ps[0].err
	}
	if err := ps[0].res.Err; err != nil { // the key quota (keys.go)
		return 0, fmt.Errorf("floor %s/%s: %w", key.Store, key.Name, err)
	}
	return ps[0].res.HighWater, nil
}

// HighWater returns key's high-water mark as applied on this node, or the
// floor a restore set for it when that is higher (the key's next ID, or a
// Snowflake worker's next reserved time, is above it; see
// raiseToAllKeysFloor).
func (n *Node) HighWater(_ context.Context, key fsm.Key) (uint64, error) {
	if err := n.Err(); err != nil { // a stopped state machine's marks may be too low
		return 0, fmt.Errorf("%w: %w", ErrShutdown, err)
	}
	return n.AppliedHighWater(key), nil
}

// AppliedHighWater returns key's high-water mark as this node applied it,
// even after its state machine stopped (Err): what it applied before the
// stop stays a lower bound of the key's mark. HighWater refuses instead,
// because a stopped node's marks may lag the cluster's; a caller that
// needs only a lower bound of what this node applied (a Snowflake key's
// floor, which floor holds make every node apply or wait out) uses this.
func (n *Node) AppliedHighWater(key fsm.Key) uint64 {
	return max(n.fsm.HighWater(key), n.floorOf(key))
}

// apply commits cmd and returns the state machine's response.
func (n *Node) apply(ctx context.Context, cmd fsm.Command) (*fsm.ApplyResponse, error) {
	// The key quota (--max-keys) first: refused ops are answered here and
	// never proposed (keys.go).
	adm, err := n.admitKeys(ctx, cmd)
	if err != nil {
		return nil, err
	}
	defer adm.done()
	if cmd = adm.cmd; len(cmd.Ops) == 0 && adm.refused != nil {
		return adm.merge(nil), nil // every op refused: nothing to commit
	}
	if err := n.raiseToAllKeysFloor(ctx, cmd); err != nil {
		return nil, err
	}
	// Never propose a command the state machine would refuse: it would
	// stop every replica (fsm/DESIGN.md, "Never skip").
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	f := n.raft.Apply(cmd.Encode(), n.cfg.ApplyTimeout)
	if err := n.await(ctx, adm.watch(f)); err != nil {
		return nil, err
	}
	switch resp := f.Response().(type) {
	case *fsm.ApplyResponse:
		return adm.merge(resp), nil
	case error:
		return nil, resp
	default:
		return nil, fmt.Errorf("cluster: unexpected apply response %T", resp)
	}
}

// await waits for f within ctx's deadline.
func (n *Node) await(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return n.mapRaftError(err)
	case <-ctx.Done():
		return ctx.Err()
	case <-n.closeCh:
		return ErrShutdown
	}
}

func (n *Node) mapRaftError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", alloc.ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %w", ErrNoLeader, err)
	}
	return err
}

func (n *Node) notLeader() error {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return fmt.Errorf("%w: %w", alloc.ErrNotLeader, ErrNoLeader)
	}
	return fmt.Errorf("%w: leader is %s", alloc.ErrNotLeader, id)
}

// ReserveLocal reserves through this node's log and fails with an error
// wrapping alloc.ErrNotLeader on a follower; it serves reservations that
// other nodes forward, so a stale view of the leader never makes a call hop
// twice.
func (n *Node) ReserveLocal(ctx context.Context, key fsm.Key, want, need uint64) (alloc.Range, error) {
	if !n.isStarted() {
		return alloc.Range{}, ErrNotReady
	}
	if n.raft.State() != raft.Leader {
		return alloc.Range{}, n.notLeader()
	}
	r, _, err := n.Reserve(ctx, key, want, need)
	return r, err
}

// leaderConn returns a connection to the leader's peer port, which
// refuses to talk to any node but the leader it was made for.
func (n *Node) leaderConn() (*grpc.ClientConn, error) {
	id, addr := n.Leader()
	switch {
	case id == "":
		return nil, ErrNoLeader
	case id == n.cfg.NodeID:
		return nil, fmt.Errorf("%w: leadership is changing", alloc.ErrNotLeader)
	}
	return n.peers.conn(id, addr)
}
