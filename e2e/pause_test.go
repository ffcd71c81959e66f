package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/history"
	"github.com/ordinal-dev/ordinal/internal/proccluster"
)

var strongOpts = &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_STRONG}

// pauseCycles and staleCalls size the paused-leader scenario: the window in
// which a deposed leader can still believe it leads is a few milliseconds
// after it resumes, so the test repeats the pause and sends many calls into
// that window. Without a fence it fails in nearly every run.
const (
	pauseCycles = 3
	staleCalls  = 32
)

// TestPausedLeaderNeverServesStaleIDs freezes the leader with SIGSTOP past
// the election timeout, lets a new leader hand out STRONG IDs, then sends
// calls to the frozen node and resumes it. Those calls started after the
// new leader's IDs were returned, so each must get a higher ID or fail. A
// fence built on raft.VerifyLeader fails this: on resuming, the old leader
// finds heartbeat replies from before the pause in its socket buffers,
// passes VerifyLeader and serves from its old range.
func TestPausedLeaderNeverServesStaleIDs(t *testing.T) {
	c := proccluster.Start(t, 3)
	rec := history.NewRecorder()
	strong := func(client int, nd *proccluster.Node, timeout time.Duration) history.Op {
		return rec.Do(history.Op{Client: client, Node: nd.ID, Key: "k", Strong: true}, func() (int64, int64, error) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			resp, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: "k", Options: strongOpts})
			return resp.GetNextId(), 1, err
		})
	}
	client := 0
	for cycle := 0; cycle < pauseCycles; cycle++ {
		old := c.Leader()
		client++
		for i := 0; i < 20; i++ { // the leader holds a STRONG range now
			if op := strong(client, old, callTimeout); op.Err != nil {
				t.Fatal(op.Err)
			}
		}
		old.Pause()
		newLeader := c.Leader(old)
		var newest int64
		client++
		for i := 0; i < 20; i++ {
			op := strong(client, newLeader, callTimeout)
			if op.Err != nil {
				t.Fatalf("new leader: %v", op.Err)
			}
			newest = op.First
		}
		results := make(chan history.Op, staleCalls)
		for i := 0; i < staleCalls; i++ {
			client++
			go func(client int) { results <- strong(client, old, 10*time.Second) }(client)
		}
		// Let the calls reach the frozen node's socket before it resumes.
		time.Sleep(200 * time.Millisecond)
		old.Resume()
		served := 0
		for i := 0; i < staleCalls; i++ {
			op := <-results
			if op.Err != nil {
				continue
			}
			served++
			if op.First <= newest {
				t.Errorf("cycle %d: resumed old leader handed out %d after the new leader returned %d", cycle, op.First, newest)
			}
		}
		t.Logf("cycle %d: %d of %d calls sent to the paused leader succeeded", cycle, served, staleCalls)
	}
	if err := history.CheckAll(rec.Ops(), ""); err != nil {
		t.Fatal(err)
	}
}

// TestFloorHoldsOnAPausedFollower freezes a follower that holds a WEAK
// range, sets a floor above it through the leader, and resumes the
// follower: its first WEAK calls, sent at once, must not return an ID at
// or below the floor (its range expired while it was frozen, by its own
// monotonic clock, which runs on under SIGSTOP).
func TestFloorHoldsOnAPausedFollower(t *testing.T) {
	c := proccluster.Start(t, 3)
	leader := c.Leader()
	var follower *proccluster.Node
	for _, nd := range c.Nodes {
		if nd != leader {
			follower = nd
			break
		}
	}
	const key = "floor-paused"
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	resp, err := follower.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: key})
	cancel()
	if err != nil || resp.GetNextId() != 1 {
		t.Fatalf("first WEAK id via %s: %v, %v", follower.ID, resp, err)
	}
	follower.Pause()
	const floor = 1_000_000
	start := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 3*proccluster.WeakRangeTTL+5*time.Second)
	_, err = leader.Sequencer().SetFloor(ctx, &ordinalv1.SetFloorRequest{Key: key, Floor: floor})
	cancel()
	if err != nil {
		t.Fatalf("SetFloor while %s is paused: %v", follower.ID, err)
	}
	if took := time.Since(start); took < proccluster.WeakRangeTTL {
		t.Fatalf("SetFloor returned after %v, before the paused follower's range could have expired", took)
	}
	follower.Resume()
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		resp, err := follower.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: key})
		cancel()
		if err == nil && resp.GetNextId() <= floor {
			t.Fatalf("WEAK via %s right after it resumed: %d, at or below the floor %d", follower.ID, resp.GetNextId(), floor)
		}
	}
}
