package alloc

import (
	"errors"
	"testing"
)

// TestRefillResult covers what a caller that waited for a reservation does
// next: look at the pool again (nil) or give up with an error.
func TestRefillResult(t *testing.T) {
	t.Parallel()
	failed := errors.New("etcd unreachable")
	for _, tc := range []struct {
		name         string
		strong       bool
		epoch        Epoch // the range's tenure
		startedUnder Epoch // the tenure of the call that asked for it
		err          error
		caller       Epoch // the tenure the waiting caller's fence proved
		want         error
	}{
		{name: "reservation failed", strong: true, epoch: 0, startedUnder: 1, err: failed, caller: 1, want: failed},
		{name: "weak: any tenure", strong: false, epoch: 0, startedUnder: 0, caller: 0, want: nil},
		{name: "strong: same tenure", strong: true, epoch: 2, startedUnder: 2, caller: 2, want: nil},
		{name: "strong: range from a newer tenure than the caller's proof", strong: true, epoch: 3, startedUnder: 2, caller: 2, want: errStaleFence},
		{name: "strong: asked for in the caller's tenure, landed untagged", strong: true, epoch: 0, startedUnder: 2, caller: 2, want: ErrNotLeader},
		{name: "strong: asked for in the caller's tenure, landed in an older one", strong: true, epoch: 1, startedUnder: 2, caller: 2, want: ErrNotLeader},
		// Leadership lost and won again while the reservation was queued:
		// the caller reserves again under its own tenure.
		{name: "strong: asked for in an older tenure, landed in it", strong: true, epoch: 1, startedUnder: 1, caller: 2, want: nil},
		{name: "strong: asked for in an older tenure, landed untagged", strong: true, epoch: 0, startedUnder: 1, caller: 2, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &refill{epoch: tc.epoch, startedUnder: tc.startedUnder, err: tc.err}
			if got := r.result(tc.strong, tc.caller); !errors.Is(got, tc.want) || (tc.want == nil) != (got == nil) {
				t.Errorf("result(strong=%v, caller epoch %d) = %v, want %v", tc.strong, tc.caller, got, tc.want)
			}
		})
	}
}

// TestStrongCallAfterReElectionIsServed loses and regains leadership
// while a reservation asked for in the first tenure is held back: a call
// proven in the second tenure must be served, whether or not it ends up
// waiting for that reservation (its fence runs before it looks at the
// pool, so which happens is up to the scheduler; TestRefillResult covers
// the waiting case's rule). The two calls are concurrent, so either may
// get the higher ID; a call made after both returned gets one above both.
func TestStrongCallAfterReElectionIsServed(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{InitialReservation: 1, MinReservation: 1, MaxReservation: 1})
	gate := make(chan struct{})
	b.mu.Lock()
	b.reserveGate = gate
	b.mu.Unlock()
	type result struct {
		id  uint64
		err error
	}
	next := func(out chan<- result) {
		id, err := a.Next(testCtx(t), testKey, Strong, 1)
		out <- result{id, err}
	}
	first, second := make(chan result, 1), make(chan result, 1)
	go next(first) // tenure 1: its reservation is held at the gate
	waitFor(t, "the first reservation to start", func() bool { return b.reservesStarted() == 1 })
	b.setLeader(false)
	b.setLeader(true) // tenure 2
	go next(second)
	waitFor(t, "the second call's fence", func() bool { return b.confirmCount() == 2 })
	close(gate)
	f, s := <-first, <-second
	if f.err != nil || s.err != nil {
		t.Fatalf("tenure 1 call: %v; tenure 2 call: %v; want both served", f.err, s.err)
	}
	if s.id == f.id {
		t.Fatalf("both calls got %d", s.id)
	}
	if after := mustNext(t, a, Strong, 1); after <= max(f.id, s.id) {
		t.Fatalf("a later call got %d, not above %d and %d", after, f.id, s.id)
	}
}
