package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/fsm"
)

// tenure is when this node last became leader, and in which term.
type tenure struct {
	term  uint64
	start time.Time
}

// errFloorUnknown means HoldFloor cannot tell that a floor holds on every
// node; the allocator then waits for older WEAK ranges to expire.
var errFloorUnknown = errors.New("cluster: not every node that may hold ranges confirmed the floor")

// HoldFloor implements alloc.FloorHolder: it returns nil once every member
// of the configuration confirmed that it applied the log up to this
// node's applied index, which covers every floor this node committed
// before the call. It refuses (the caller then waits hold out) when this
// node does not lead, took leadership less than hold ago (its predecessor
// may have removed nodes it never heard of), or removed or moved a member
// less than hold ago: such a node is no longer asked, yet may still serve
// from ranges it held.
func (n *Node) HoldFloor(ctx context.Context, hold time.Duration) error {
	if !n.isStarted() || !n.IsLeader() {
		return fmt.Errorf("%w: %w", errFloorUnknown, n.notLeader())
	}
	term := n.raft.CurrentTerm()
	if t := n.tenure.Load(); t == nil || t.term != term || time.Since(t.start) < hold {
		return fmt.Errorf("%w: this node has led for less than %v", errFloorUnknown, hold)
	}
	if r := n.lastRemoval.Load(); r != nil && time.Since(*r) < hold {
		return fmt.Errorf("%w: a member was removed or moved less than %v ago", errFloorUnknown, hold)
	}
	index := n.raft.AppliedIndex()
	cfg, err := n.configuration()
	if err != nil {
		return err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, s := range cfg.Servers {
		if string(s.ID) == n.cfg.NodeID {
			continue
		}
		wg.Add(1)
		go func(s raft.Server) {
			defer wg.Done()
			err := n.waitApplied(ctx, string(s.ID), string(s.Address), index)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", s.ID, err))
				mu.Unlock()
			}
		}(s)
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", errFloorUnknown, errors.Join(errs...))
	}
	return nil
}

// waitApplied asks member id at addr to confirm it applied the log up to
// index.
func (n *Node) waitApplied(ctx context.Context, id, addr string, index uint64) error {
	c, err := n.peers.client(id, addr)
	if err != nil {
		return err
	}
	resp, err := c.WaitApplied(ctx, &ordinalv1.WaitAppliedRequest{Index: index})
	switch {
	case err != nil:
		return err
	case resp.GetAppliedIndex() < index || resp.GetNodeId() != id:
		return fmt.Errorf("answered applied index %d as %q", resp.GetAppliedIndex(), resp.GetNodeId())
	}
	return nil
}

// appliedPoll is how often WaitApplied looks at the applied index.
const appliedPoll = 2 * time.Millisecond

// WaitApplied returns this node's applied index once it reached index
// (every floor up to there applied, so no range of this node serves an ID
// below one), or an error when ctx ends first or the node stops.
func (n *Node) WaitApplied(ctx context.Context, index uint64) (uint64, error) {
	if !n.isStarted() {
		return 0, ErrNotReady
	}
	err := n.pollApplied(ctx, func() bool { return n.raft.AppliedIndex() >= index }, func() string {
		return fmt.Sprintf("applied index %d, waiting for %d", n.raft.AppliedIndex(), index)
	})
	if err != nil {
		return 0, err
	}
	return n.raft.AppliedIndex(), nil
}

// WaitAppliedMark returns once this node's state machine holds key's
// high-water mark at mark or above: the entry that raised it there, and
// every entry before it, is applied here. A follower uses Snowflake time
// the leader granted only then (see snowflake/DESIGN.md, "Floors").
func (n *Node) WaitAppliedMark(ctx context.Context, key fsm.Key, mark uint64) error {
	return n.pollApplied(ctx, func() bool { return n.fsm.HighWater(key) >= mark }, func() string {
		return fmt.Sprintf("this node has not applied %s/%s up to %d yet (applied index %d)", key.Store, key.Name, mark, n.raft.AppliedIndex())
	})
}

// pollApplied returns nil once applied reports true, looking every
// appliedPoll; it fails with an error wrapping alloc.ErrUnavailable (and
// saying pending()) when ctx ends first, and with ErrShutdown when the
// node closes or its state machine stops, which then never gets there.
func (n *Node) pollApplied(ctx context.Context, applied func() bool, pending func() string) error {
	if applied() {
		return nil
	}
	t := time.NewTicker(appliedPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: %w", alloc.ErrUnavailable, pending(), ctx.Err())
		case <-n.closeCh:
			return ErrShutdown
		case <-t.C:
		}
		if err := n.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrShutdown, err)
		}
		if applied() {
			return nil
		}
	}
}

// noteRemoval records that a member left the configuration, or moved:
// for a while floors cannot be confirmed by asking the members.
func (n *Node) noteRemoval() {
	now := time.Now()
	n.lastRemoval.Store(&now)
}
