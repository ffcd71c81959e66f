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
// below one), or an error when ctx ends first.
func (n *Node) WaitApplied(ctx context.Context, index uint64) (uint64, error) {
	if !n.isStarted() {
		return 0, ErrNotReady
	}
	t := time.NewTicker(appliedPoll)
	defer t.Stop()
	for {
		if applied := n.raft.AppliedIndex(); applied >= index {
			return applied, nil
		}
		select {
		case <-ctx.Done():
			return n.raft.AppliedIndex(), fmt.Errorf("%w: applied index %d, waiting for %d: %w",
				alloc.ErrUnavailable, n.raft.AppliedIndex(), index, ctx.Err())
		case <-n.closeCh:
			return 0, ErrShutdown
		case <-t.C:
		}
	}
}

// noteRemoval records that a member left the configuration, or moved:
// for a while floors cannot be confirmed by asking the members.
func (n *Node) noteRemoval() {
	now := time.Now()
	n.lastRemoval.Store(&now)
}
