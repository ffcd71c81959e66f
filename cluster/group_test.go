package cluster_test

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
)

// Reservations of different keys that wait at the same time share Raft
// entries, through the leader and through a follower alike.
func TestReservationsOfManyKeysShareEntries(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	follower := c.Followers(leader)[0]
	// Counted on every node: on a loaded machine leadership may move
	// during the test (a leader that cannot reach a quorum for a lease
	// steps down), and the entries are then written by the next leader.
	groupStats := func() (entries, ops uint64) {
		for _, nd := range c.Nodes() {
			e, o := nd.Daemon().Node().GroupStats()
			entries, ops = entries+e, ops+o
		}
		return entries, ops
	}
	entries0, ops0 := groupStats()
	const callers, perCaller = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		nd, opts := leader, strongOpts
		if i%2 == 1 {
			nd, opts = follower, nil // WEAK through a follower: batched to the leader
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perCaller {
				key := fmt.Sprintf("group-%d-%d", i, j) // a key never used before
				// While leadership moves, calls answer Unavailable; the
				// caller retries, as clients do. Every attempt reserves
				// through the log and counts in the stats.
				for retryUntil := time.Now().Add(15 * time.Second); ; {
					_, err := nd.Sequencer().GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: key, Options: opts})
					if err == nil {
						break
					}
					if status.Code(err) != codes.Unavailable || time.Now().After(retryUntil) {
						errs <- fmt.Errorf("%s via %s: %w", key, nd.ID, err)
						return
					}
					time.Sleep(50 * time.Millisecond) // retry backoff
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	entries, ops := groupStats()
	entries, ops = entries-entries0, ops-ops0
	if ops < callers*perCaller {
		t.Fatalf("%d ops committed for %d new keys", ops, callers*perCaller)
	}
	if entries*2 > ops {
		t.Fatalf("%d entries for %d ops: reservations were not grouped", entries, ops)
	}
	t.Logf("%d ops in %d entries (%.1f per entry)", ops, entries, float64(ops)/float64(entries))
}

// A batch of reservations fails item by item: one that would overflow or
// is malformed fails alone, the others get their ranges.
func TestReserveBatchFailsItemByItem(t *testing.T) {
	c := testcluster.New(t, 1)
	nd := c.Node("n1")
	if _, err := nd.Sequencer().SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: "full", Floor: math.MaxInt64 - 5}); err != nil {
		t.Fatal(err)
	}
	peer := c.PeerClient(nd, "n9")
	resp, err := peer.ReserveBatch(callCtx(t), &ordinalv1.ReserveBatchRequest{Reservations: []*ordinalv1.ReserveRequest{
		{Key: "a", Want: 10, Need: 1},
		{Key: "full", Want: 10, Need: 10},
		{Key: "", Want: 10, Need: 1},
		{Key: "b", Want: 5, Need: 5},
		{Key: "a", Want: 10, Need: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []codes.Code{codes.OK, codes.OutOfRange, codes.InvalidArgument, codes.OK, codes.OK}
	for i, r := range resp.GetResults() {
		if codes.Code(r.GetCode()) != want[i] {
			t.Fatalf("result %d: %v, want code %v", i, r, want[i])
		}
	}
	r := resp.GetResults()
	if r[0].GetFirst() != 1 || r[4].GetFirst() <= r[0].GetLast() || r[3].GetFirst() != 1 || r[3].GetLast() != 5 {
		t.Fatalf("ranges: %v", r)
	}
}
