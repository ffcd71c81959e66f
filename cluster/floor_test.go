package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/faultnet"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
)

// takeWeakAndStrong takes one WEAK and one STRONG ID of key through nd and
// fails the test if either is at or below floor. A call may fail (a node
// cut off from the leader has nothing left to serve), but never with an
// ID it may not hand out.
func takeWeakAndStrong(t *testing.T, nd *testcluster.Node, key string, floor int64, mustSucceed bool) {
	t.Helper()
	for _, opts := range []*ordinalv1.SequencerOptions{nil, strongOpts} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		resp, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: key, Options: opts})
		cancel()
		switch {
		case err != nil && mustSucceed:
			t.Fatalf("%v via %s after the floor: %v", opts.GetIncrement(), nd.ID, err)
		case err == nil && resp.GetNextId() <= floor:
			t.Fatalf("%v via %s: %d, at or below the floor %d that SetFloor had returned for", opts.GetIncrement(), nd.ID, resp.GetNextId(), floor)
		}
	}
}

// Once SetFloor returns, through whichever node, no node hands out an ID
// at or below the floor, in either mode, though every node held a WEAK
// range below it.
func TestFloorHoldsOnEveryNodeAtOnce(t *testing.T) {
	c := testcluster.New(t, 3)
	const key = "floor-everywhere"
	floor := int64(0)
	for round := 0; round < 2; round++ { // the second round runs past FloorHold: the fast path
		for _, via := range c.Nodes() {
			for _, nd := range c.Nodes() {
				takeWeakAndStrong(t, nd, key, floor, true) // every node holds a WEAK range
			}
			floor += 1000
			if _, err := via.Sequencer().SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: key, Floor: floor}); err != nil {
				t.Fatalf("SetFloor %d via %s: %v", floor, via.ID, err)
			}
			for _, nd := range c.Nodes() {
				takeWeakAndStrong(t, nd, key, floor, true)
			}
		}
		time.Sleep(alloc.FloorHold(testcluster.TestWeakRangeTTL)) // let the leader's tenure age past the hold: the fast path
	}
}

// A follower cut off from the leader keeps its WEAK range but cannot learn
// the floor: SetFloor waits until the range has expired, and the follower
// never serves below the floor, before or after the partition heals.
func TestFloorHoldsOnAPartitionedFollower(t *testing.T) {
	fnet := faultnet.New(1)
	c := testcluster.NewWithNet(t, 3, fnet)
	leader := c.Leader()
	cut := c.Followers(leader)[0]
	const key = "floor-partitioned"
	takeWeakAndStrong(t, cut, key, 0, true) // cut holds a WEAK range starting at 1
	fnet.Isolate(cut.ID)

	const floor = 1_000_000
	start := time.Now()
	if _, err := leader.Sequencer().SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: key, Floor: floor}); err != nil {
		t.Fatalf("SetFloor while %s is cut off: %v", cut.ID, err)
	}
	if took := time.Since(start); took < alloc.FloorHold(testcluster.TestWeakRangeTTL)-100*time.Millisecond {
		t.Fatalf("SetFloor returned after %v, before %s's range could have expired", took, cut.ID)
	}
	for i := 0; i < 5; i++ {
		takeWeakAndStrong(t, cut, key, floor, false)
	}
	fnet.HealAll()
	testcluster.WaitFor(t, 15*time.Second, cut.ID+" serving again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := cut.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: key})
		if err == nil && resp.GetNextId() <= floor {
			t.Fatalf("WEAK via %s after the heal: %d, at or below the floor", cut.ID, resp.GetNextId())
		}
		return err == nil
	})
}

// A member that cannot confirm the floor in time, when the caller's
// deadline is shorter than the wait, makes SetFloor say so (Unavailable:
// the floor is committed and will hold) rather than pretend it holds.
func TestSetFloorWithShortDeadlineSaysPending(t *testing.T) {
	fnet := faultnet.New(2)
	c := testcluster.NewWithNet(t, 3, fnet)
	leader := c.Leader()
	fnet.Isolate(c.Followers(leader)[0].ID)
	// The deadline is the whole wait: the floor commits after the call
	// starts, so the wait (FloorHold from the commit) always outlasts it,
	// however quickly the floor commits. Anything shorter only takes time
	// from the commit and from the answer: with 300 ms, a commit slowed
	// past the 240 ms the server keeps for itself (a loaded machine, a
	// slow fsync) failed the call as "no quorum answered in time", and an
	// answer later than the remaining 60 ms arrived as DeadlineExceeded.
	ctx, cancel := context.WithTimeout(context.Background(), alloc.FloorHold(testcluster.TestWeakRangeTTL))
	defer cancel()
	_, err := leader.Sequencer().SetFloor(ctx, &ordinalv1.SetFloorRequest{Key: "pending", Floor: 50})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "not yet held on every node") {
		t.Fatalf("SetFloor with a member cut off and a short deadline: %v, want Unavailable saying the floor is committed but not yet held", err)
	}
	// Repeating it, with time to wait, succeeds: the floor was committed.
	hw, err := leader.Sequencer().GetHighWater(callCtx(t), &ordinalv1.GetHighWaterRequest{Key: "pending"})
	if err != nil || hw.GetHighWater() < 50 {
		t.Fatalf("high water after the pending floor: %v, %v; want at least 50", hw, err)
	}
	if _, err := leader.Sequencer().SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: "pending", Floor: 50}); err != nil {
		t.Fatalf("SetFloor again: %v", err)
	}
}
