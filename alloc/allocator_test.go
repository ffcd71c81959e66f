package alloc

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/fsm"
)

var testKey = fsm.Key{Store: "default", Name: "orders"}

func newTestAllocator(t *testing.T, b Backend, cfg Config) *Allocator {
	t.Helper()
	a := New(b, cfg)
	t.Cleanup(a.Close)
	return a
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustNext(t *testing.T, a *Allocator, mode Mode, count uint64) uint64 {
	t.Helper()
	id, err := a.Next(testCtx(t), testKey, mode, count)
	if err != nil {
		t.Fatalf("Next(%v, %d): %v", mode, count, err)
	}
	return id
}

func TestFreshKeyStartsAtOneAndIncreases(t *testing.T) {
	for _, mode := range []Mode{Weak, Strong} {
		t.Run(mode.String(), func(t *testing.T) {
			a := newTestAllocator(t, newMemBackend(), Config{})
			for want := uint64(1); want <= 500; want++ {
				if got := mustNext(t, a, mode, 1); got != want {
					t.Fatalf("id %d: got %d", want, got)
				}
			}
		})
	}
}

func TestBlocksAreContiguousAndDisjoint(t *testing.T) {
	tests := []struct {
		name   string
		counts []uint64
	}{
		{"small", []uint64{1, 5, 1, 10}},
		{"larger than a reservation", []uint64{3, 1000, 2, 70000}},
		{"exactly the initial size", []uint64{64, 64, 64}},
	}
	for _, tc := range tests {
		for _, mode := range []Mode{Weak, Strong} {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				a := newTestAllocator(t, newMemBackend(), Config{})
				var last uint64
				for _, c := range tc.counts {
					first := mustNext(t, a, mode, c)
					if first <= last {
						t.Fatalf("block of %d starts at %d, not above %d", c, first, last)
					}
					last = first + c - 1
				}
			})
		}
	}
}

func TestConcurrentCallsNeverRepeatAnID(t *testing.T) {
	for _, mode := range []Mode{Weak, Strong} {
		t.Run(mode.String(), func(t *testing.T) {
			a := newTestAllocator(t, newMemBackend(), Config{InitialReservation: 16})
			const workers, perWorker = 16, 300
			ids := make([][]uint64, workers)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var prev uint64
					for range perWorker {
						id, err := a.Next(context.Background(), testKey, mode, 1)
						if err != nil {
							t.Error(err)
							return
						}
						if id <= prev {
							t.Errorf("worker %d: id %d after %d", w, id, prev)
						}
						prev = id
						ids[w] = append(ids[w], id)
					}
				}()
			}
			wg.Wait()
			seen := map[uint64]bool{}
			for _, ws := range ids {
				for _, id := range ws {
					if seen[id] {
						t.Fatalf("id %d handed out twice", id)
					}
					seen[id] = true
				}
			}
		})
	}
}

func TestStrongNeedsLeadershipWeakDoesNot(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{})
	weak := mustNext(t, a, Weak, 1)
	b.setLeader(false)
	if _, err := a.Next(testCtx(t), testKey, Strong, 1); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("STRONG on a non-leader: got %v, want ErrNotLeader", err)
	}
	if _, err := a.HighWater(testCtx(t), testKey); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("HighWater on a non-leader: got %v, want ErrNotLeader", err)
	}
	if got := mustNext(t, a, Weak, 1); got <= weak {
		t.Fatalf("WEAK from the node's block: got %d after %d", got, weak)
	}
}

// A range reserved in an earlier tenure must not serve STRONG calls after
// leadership came back: another leader may have handed out higher IDs in
// between.
func TestStrongDiscardsRangesOfAnEarlierTenure(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{InitialReservation: 1000})
	first := mustNext(t, a, Strong, 1)
	b.setLeader(false)
	// Another leader's reservation, which this node knows nothing about.
	other, _, err := b.Reserve(testCtx(t), testKey, 10, 10)
	if err != nil {
		t.Fatal(err)
	}
	b.setLeader(true)
	got := mustNext(t, a, Strong, 1)
	if got <= other.Last {
		t.Fatalf("after regaining leadership got %d, not above %d handed out by another leader (first tenure started at %d)",
			got, other.Last, first)
	}
}

// releaseUntilServed lets held leadership rounds through the gate, one at a
// time, until callers results have arrived on errs, each of them nil.
func releaseUntilServed(t *testing.T, gate chan<- struct{}, errs <-chan error, callers int) {
	t.Helper()
	for done := 0; done < callers; {
		select {
		case gate <- struct{}{}:
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
			done++
		}
	}
}

// gateRounds warms a's STRONG range up, then holds every later leadership
// round until the test sends on gate. It returns gate and the number of
// rounds run so far.
func gateRounds(t *testing.T, a *Allocator, b *memBackend) (chan struct{}, int) {
	t.Helper()
	mustNext(t, a, Strong, 1)
	gate := make(chan struct{})
	b.mu.Lock()
	b.confirmGate = gate
	b.mu.Unlock()
	return gate, b.confirmCount()
}

func TestFenceRoundStartsAfterTheCallArrived(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{})
	gate, before := gateRounds(t, a, b)

	results := make(chan error, 2)
	go func() { _, err := a.Next(context.Background(), testKey, Strong, 1); results <- err }()
	waitFor(t, "first round in flight", func() bool { return b.confirmCount() == before+1 })
	// This call arrives while round one is in flight: round one must not
	// serve it.
	late := make(chan error, 1)
	go func() { _, err := a.Next(context.Background(), testKey, Strong, 1); late <- err }()
	gate <- struct{}{} // release round one
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second round started", func() bool { return b.confirmCount() == before+2 })
	select {
	case err := <-late:
		t.Fatalf("late call returned (%v) before its own round was confirmed", err)
	default:
	}
	gate <- struct{}{}
	if err := <-late; err != nil {
		t.Fatal(err)
	}
}

func TestFenceRoundsAreShared(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{})
	gate := make(chan struct{})
	b.mu.Lock()
	b.confirmGate = gate
	b.mu.Unlock()

	const callers = 50
	errs := make(chan error, callers)
	go func() { _, err := a.Next(context.Background(), testKey, Strong, 1); errs <- err }()
	waitFor(t, "first round in flight", func() bool { return b.confirmCount() == 1 })
	for range callers - 1 {
		go func() { _, err := a.Next(context.Background(), testKey, Strong, 1); errs <- err }()
	}
	// Let the queued callers pile up behind the first round, then release
	// rounds until everyone is served.
	releaseUntilServed(t, gate, errs, callers)
	if n := b.confirmCount(); n >= callers {
		t.Fatalf("%d callers took %d leadership proofs; rounds are not shared", callers, n)
	}
}

// A caller waiting for a shared round hears back by its own deadline even
// though it arms no timer: the round is bounded by its callers' earliest
// deadline. A caller with more time left then takes the next round instead
// of failing with the impatient caller's error.
func TestSharedRoundEndsAtTheEarliestDeadline(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{FenceTimeout: time.Minute})
	gate, before := gateRounds(t, a, b)

	first := make(chan error, 1)
	go func() { _, err := a.Next(context.Background(), testKey, Strong, 1); first <- err }()
	waitFor(t, "first round in flight", func() bool { return b.confirmCount() == before+1 })

	shortCtx, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	short := make(chan error, 1)
	go func() { _, err := a.Next(shortCtx, testKey, Strong, 1); short <- err }()
	patient := make(chan error, 1)
	go func() { _, err := a.Next(testCtx(t), testKey, Strong, 1); patient <- err }()
	waitFor(t, "both callers queued", func() bool {
		a.fence.mu.Lock()
		defer a.fence.mu.Unlock()
		return a.fence.waiting != nil && !a.fence.waiting.deadline.IsZero()
	})
	gate <- struct{}{} // round one ends; round two starts with both callers

	select {
	case err := <-short:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("short caller got %v, want DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the short caller was not answered by its deadline: the round ignored it")
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-patient:
		t.Fatalf("the patient caller returned (%v) with the short caller's round", err)
	default:
	}
	// Round three, started after round two ran out, serves the patient one.
	waitFor(t, "a round for the patient caller", func() bool { return b.confirmCount() >= before+3 })
	gate <- struct{}{}
	if err := <-patient; err != nil {
		t.Fatalf("patient caller: %v", err)
	}
}

func TestPrefetchReservesBeforeTheRangeRunsOut(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{InitialReservation: 64, GrowWithin: time.Nanosecond})
	mustNext(t, a, Weak, 1)
	if n := b.reserveCount(); n != 1 {
		t.Fatalf("after the first id: %d reservations, want 1", n)
	}
	for range 32 { // use half the range
		mustNext(t, a, Weak, 1)
	}
	waitFor(t, "prefetch", func() bool { return b.reserveCount() == 2 })
	// The rest of the first range and the prefetched one serve without
	// another reservation until the prefetched one is half used: the last
	// take below leaves 33 of its 64 IDs.
	for range 31 + 31 {
		mustNext(t, a, Weak, 1)
	}
	if n := b.reserveCount(); n != 2 {
		t.Fatalf("%d reservations, want 2", n)
	}
	// The take that leaves half of it starts the next prefetch.
	mustNext(t, a, Weak, 1)
	waitFor(t, "second prefetch", func() bool { return b.reserveCount() == 3 })
}

func TestReservationSizeAdaptsToRate(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{InitialReservation: 16, MinReservation: 16, MaxReservation: 256, GrowWithin: time.Hour})
	for range 2000 {
		mustNext(t, a, Weak, 1)
	}
	b.mu.Lock()
	wants := append([]uint64(nil), b.wants...)
	b.mu.Unlock()
	if wants[0] != 16 || wants[len(wants)-1] != 256 {
		t.Fatalf("reservation sizes %v: want growth from 16 up to the 256 cap", wants)
	}

	b2 := newMemBackend()
	a2 := newTestAllocator(t, b2, Config{InitialReservation: 64, MinReservation: 16, ShrinkAfter: time.Nanosecond, GrowWithin: time.Nanosecond})
	p := a2.pool(testKey, false)
	p.mu.Lock()
	p.lastStart = time.Now().Add(-time.Hour)
	p.adaptSize(time.Now())
	size := p.size
	p.mu.Unlock()
	if size != 32 {
		t.Fatalf("after an idle hour the size is %d, want 32", size)
	}
}

func TestFloor(t *testing.T) {
	for _, mode := range []Mode{Weak, Strong} {
		t.Run(mode.String(), func(t *testing.T) {
			b := newMemBackend()
			a := newTestAllocator(t, b, Config{InitialReservation: 1000})
			mustNext(t, a, mode, 1) // a range below the floor is in memory
			hw, err := a.SetFloor(testCtx(t), testKey, 500)
			if err != nil {
				t.Fatal(err)
			}
			if hw != 1000 {
				t.Fatalf("high water after a floor below it: %d, want 1000 (never lowered)", hw)
			}
			if got := mustNext(t, a, mode, 1); got <= 500 {
				t.Fatalf("after SetFloor(500) got %d", got)
			}
			if _, err := a.SetFloor(testCtx(t), testKey, 5000); err != nil {
				t.Fatal(err)
			}
			if got := mustNext(t, a, mode, 3); got <= 5000 {
				t.Fatalf("after SetFloor(5000) got %d", got)
			}
		})
	}
}

func TestOverflowHandsOutNothing(t *testing.T) {
	for _, mode := range []Mode{Weak, Strong} {
		t.Run(mode.String(), func(t *testing.T) {
			b := newMemBackend()
			a := newTestAllocator(t, b, Config{})
			if _, err := a.SetFloor(testCtx(t), testKey, fsm.MaxID-5); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Next(testCtx(t), testKey, mode, 10); !errors.Is(err, fsm.ErrOverflow) {
				t.Fatalf("10 ids with 5 left: got %v, want ErrOverflow", err)
			}
			if hw, _ := b.HighWater(testCtx(t), testKey); hw != fsm.MaxID-5 {
				t.Fatalf("high water moved to %d on overflow", hw)
			}
			first := mustNext(t, a, mode, 5)
			if first != fsm.MaxID-4 {
				t.Fatalf("last 5 ids start at %d, want %d", first, fsm.MaxID-4)
			}
			if _, err := a.Next(testCtx(t), testKey, mode, 1); !errors.Is(err, fsm.ErrOverflow) {
				t.Fatalf("after the last id: got %v, want ErrOverflow", err)
			}
		})
	}
}

func TestReservationErrorsReachTheCaller(t *testing.T) {
	b := newMemBackend()
	boom := errors.New("store down")
	b.reserveErr = boom
	a := newTestAllocator(t, b, Config{})
	if _, err := a.Next(testCtx(t), testKey, Weak, 1); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the store's error", err)
	}
}

func TestCallerDeadlineEndsTheWait(t *testing.T) {
	b := newMemBackend()
	b.reserveGate = make(chan struct{}) // reservations never land
	a := newTestAllocator(t, b, Config{ReserveTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.Next(ctx, testKey, Weak, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
}

func TestClosedAllocatorRefusesCalls(t *testing.T) {
	a := New(newMemBackend(), Config{})
	a.Close()
	if _, err := a.Next(context.Background(), testKey, Weak, 1); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrClosed wrapping ErrUnavailable", err)
	}
}

func TestHighWaterCoversEveryIDHandedOut(t *testing.T) {
	a := newTestAllocator(t, newMemBackend(), Config{})
	var last uint64
	for _, mode := range []Mode{Weak, Strong, Weak} {
		last = max(last, mustNext(t, a, mode, 7)+6)
	}
	hw, err := a.HighWater(testCtx(t), testKey)
	if err != nil {
		t.Fatal(err)
	}
	if hw < last {
		t.Fatalf("high water %d below id %d already handed out", hw, last)
	}
	if again, _ := a.HighWater(testCtx(t), testKey); again != hw {
		t.Fatalf("reading the high water changed it: %d then %d", hw, again)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestIdleKeysAreEvictedAndComeBackHigher(t *testing.T) {
	for _, mode := range []Mode{Weak, Strong} {
		t.Run(mode.String(), func(t *testing.T) {
			a := newTestAllocator(t, newMemBackend(), Config{IdleTimeout: time.Hour})
			first := mustNext(t, a, mode, 1)
			a.evictIdle() // used since the last sweep: kept
			if got := mustNext(t, a, mode, 1); got != first+1 {
				t.Fatalf("after a sweep of a busy key: %d, want %d", got, first+1)
			}
			a.evictIdle()
			a.evictIdle() // idle for a whole interval: evicted
			a.mu.RLock()
			n := len(a.weak) + len(a.strong)
			a.mu.RUnlock()
			if n != 0 {
				t.Fatalf("%d pools left after two idle sweeps", n)
			}
			if got := mustNext(t, a, mode, 1); got <= first+1 {
				t.Fatalf("after eviction: %d, not above %d", got, first+1)
			}
		})
	}
}

// A caller holding a pool that gets evicted must not serve from it next to
// its replacement.
func TestEvictedPoolServesNothing(t *testing.T) {
	a := newTestAllocator(t, newMemBackend(), Config{IdleTimeout: time.Hour})
	mustNext(t, a, Strong, 1)
	p := a.pool(testKey, true)
	a.evictIdle()
	a.evictIdle()
	if _, err := p.take(testCtx(t), 1, 1); !errors.Is(err, errEvicted) {
		t.Fatalf("take from an evicted pool: %v, want errEvicted", err)
	}
}

func TestFenceRoundsInFlightAreBounded(t *testing.T) {
	for _, rounds := range []int{1, 2, 3} {
		b := newMemBackend()
		a := newTestAllocator(t, b, Config{FenceRounds: rounds})
		gate, before := gateRounds(t, a, b)

		const callers = 10
		errs := make(chan error, callers)
		for range callers {
			go func() { _, err := a.Next(testCtx(t), testKey, Strong, 1); errs <- err }()
		}
		waitFor(t, "rounds in flight", func() bool { return b.confirmCount() == before+rounds })
		waitFor(t, "the other callers queued", func() bool {
			a.fence.mu.Lock()
			defer a.fence.mu.Unlock()
			return a.fence.waiting != nil
		})
		if got := b.confirmCount() - before; got != rounds {
			t.Fatalf("FenceRounds=%d: %d rounds in flight", rounds, got)
		}
		releaseUntilServed(t, gate, errs, callers)
	}
}
