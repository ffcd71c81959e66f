package snowflake

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/keyspace"
)

// The tests in this file drive one interleaving each, exactly: a call is
// parked at a chosen point (a clock read, or testHookKeyFound), the test
// changes the Service under it, then releases it. Nothing waits on a sleep.

// await returns what ch delivers, failing the test if nothing comes within
// ten seconds.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// parkingClock is a fakeClock whose first Now after armed is set parks its
// caller: it closes parked and returns once release closes. Next reads the
// clock after it read its worker ID and before take reads the published
// view of the worker and its time, so a call parked there holds its worker
// ID and has not looked at the time yet.
type parkingClock struct {
	*fakeClock
	armed   atomic.Bool
	parked  chan struct{}
	release chan struct{}
}

func (c *parkingClock) Now() time.Time {
	if c.armed.CompareAndSwap(true, false) {
		close(c.parked)
		<-c.release
	}
	return c.fakeClock.Now()
}

type nextResult struct {
	id  uint64
	err error
}

// TestWorkerLostDuringCall parks a call after it read worker 5 and before
// it reads the time it may stamp; meanwhile the node loses worker 5 (the
// etcd case: a reservation answers ErrWorkerLost), acquires worker 2 with
// time of its own, and another node takes worker 5. The parked call must
// fail with ErrWorkerLost: stamping worker 5 on time granted to worker 2
// repeats an ID worker 5's new holder hands out.
func TestWorkerLostDuringCall(t *testing.T) {
	c := newCluster()
	n := c.node(5)
	clock := &parkingClock{fakeClock: newFakeClock(t0), parked: make(chan struct{}), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(clock.release) }) }
	t.Cleanup(release)
	// Renewals and the idle sweep read the clock on real-time tickers
	// (every Lease/4 and IdleTimeout): at an hour they never tick during
	// the test, so the parked clock read is the call's.
	cfg := Config{Lease: time.Hour, MaxDrift: 2 * time.Hour, IdleTimeout: time.Hour}
	l := Milliseconds
	s := start(t, n, clock, l, cfg)
	ctx := ctxT(t)
	last := takeWeak(t, ctx, s, 3)
	if w, ok := s.Worker(); !ok || w != 5 {
		t.Fatalf("worker %d (%v), want 5", w, ok)
	}
	_, oldHi := s.Reserved()

	// The call reads worker 5, then parks at its clock read.
	done := make(chan nextResult, 1)
	clock.armed.Store(true)
	go func() {
		id, err := s.Next(ctx, testKey, alloc.Weak, 1)
		done <- nextResult{id, err}
	}()
	await(t, clock.parked, "the call to read the clock")

	// Meanwhile: the clock passes worker 5's time, so the next call
	// reserves, and that reservation finds worker 5 lost.
	clock.Set(time.UnixMilli(int64(oldHi)).Add(time.Second))
	lose := uint64(2)
	n.mu.Lock()
	n.lose = &lose
	n.mu.Unlock()
	other := keyspace.Key{Store: "s", Name: "other"}
	if _, err := s.Next(ctx, other, alloc.Weak, 1); !errors.Is(err, ErrWorkerLost) {
		t.Fatalf("the reservation that found worker 5 lost: %v, want ErrWorkerLost", err)
	}
	// The node acquires worker 2 and is granted time for it.
	if _, err := s.Next(ctx, other, alloc.Weak, 1); err != nil {
		t.Fatal(err)
	}
	if w, ok := s.Worker(); !ok || w != 2 {
		t.Fatalf("after the loss: worker %d (%v), want 2", w, ok)
	}
	newLo, newHi := s.Reserved()
	if newLo > newHi || newHi <= oldHi {
		t.Fatalf("worker 2 holds %d..%d; want time after worker 5's %d", newLo, newHi, oldHi)
	}
	// Another node takes worker 5: its time starts right after what
	// worker 5 held here, inside the time this node now holds for worker 2.
	sb := start(t, c.node(5), newFakeClock(clock.Now()), l, cfg)
	fromB, err := sb.Next(ctx, testKey, alloc.Weak, 1)
	if err != nil {
		t.Fatal(err)
	}

	release()
	r := await(t, done, "the parked call to return")
	if r.err == nil {
		p, _ := l.Decode(r.id)
		if ms := uint64(p.Time.UnixMilli()); p.Worker == 5 && newLo <= ms && ms <= newHi {
			t.Errorf("the call that started with worker 5 returned %d = %+v: worker 5 stamped on %s, time granted to worker 2 (%d..%d)",
				r.id, p, p.Time.Format(time.RFC3339Nano), newLo, newHi)
		}
		if r.id == fromB {
			t.Errorf("ID %d handed out twice for key %s: by the call whose worker 5 was dropped, and by worker 5's new holder", r.id, testKey.Name)
		}
		t.Fatalf("the call whose worker was dropped returned %d, nil; want ErrWorkerLost", r.id)
	}
	if !errors.Is(r.err, ErrWorkerLost) {
		t.Fatalf("the call whose worker was dropped: %v, want ErrWorkerLost", r.err)
	}

	// The node goes on with worker 2, after everything worker 5 stamped.
	id, err := s.Next(ctx, testKey, alloc.Weak, 1)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := l.Decode(id); p.Worker != 2 || id <= last || uint64(p.Time.UnixMilli()) <= oldHi {
		t.Fatalf("after the loss: %d = %+v; last before %d, worker 5's time up to %d", id, p, last, oldHi)
	}
}

// countingBackend counts the reads of testKey's floor: one each time the
// Service creates the key's state.
type countingBackend struct {
	*node
	applied atomic.Int64
}

func (b *countingBackend) Applied(key keyspace.Key) uint64 {
	if key == testKey {
		b.applied.Add(1)
	}
	return b.node.Applied(key)
}

// TestKeyDroppedDuringCall parks a call of an idle key between finding
// the key's state and locking it, and runs the idle sweep, which drops
// that state. The call must fetch the key's state again: counting on in
// the dropped state, which nothing remembers, lets the next call (whose new
// state starts after the dropped key's last step) repeat its ID.
func TestKeyDroppedDuringCall(t *testing.T) {
	n := newCluster().node(1)
	b := &countingBackend{node: n}
	clock := newFakeClock(t0)
	l := Milliseconds
	// A lease of an hour: the call below stamps without reserving, in a
	// single take. The real-time sweep ticks every IdleTimeout, never
	// during the test; the test runs the sweep itself.
	s, err := New(b, Config{Lease: time.Hour, MaxDrift: 2 * time.Hour, IdleTimeout: time.Minute, Clock: clock, Confirm: n.confirm})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Declare("s", l); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	last := takeWeak(t, ctx, s, 3)
	if got := b.applied.Load(); got != 1 {
		t.Fatalf("the key's state was created %d times, want 1", got)
	}
	clock.Add(time.Minute) // the key is idle from now on

	parked := make(chan *keyState, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var fired atomic.Bool
	testHookKeyFound = func(ks *keyState) {
		if fired.CompareAndSwap(false, true) {
			parked <- ks
			<-release
		}
	}
	// Runs before the release above (cleanups run last first), so a call
	// still parked reads nil after it.
	t.Cleanup(func() { testHookKeyFound = nil })

	done := make(chan nextResult, 1)
	go func() {
		id, err := s.Next(ctx, testKey, alloc.Weak, 1)
		done <- nextResult{id, err}
	}()
	ks := await(t, parked, "the call to find the key's state")
	s.evictIdle()
	ks.mu.Lock()
	dropped := ks.dropped
	ks.mu.Unlock()
	if !dropped || s.Keys() != 0 {
		t.Fatalf("the sweep left the idle key (dropped %v, %d keys held)", dropped, s.Keys())
	}
	releaseOnce.Do(func() { close(release) })
	r := await(t, done, "the parked call to return")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := b.applied.Load(); got != 2 {
		t.Errorf("after the call the key's state was created %d times, want 2: the call did not fetch its dropped key again", got)
	}

	// A call of the key at the same time: it must count on after the
	// parked call's ID.
	next, err := s.Next(ctx, testKey, alloc.Weak, 1)
	if err != nil {
		t.Fatal(err)
	}
	pr, _ := l.Decode(r.id)
	pn, _ := l.Decode(next)
	if next == r.id {
		t.Fatalf("ID %d = %+v handed out twice for key %s: by the call whose key state was dropped, and by the next call", next, pn, testKey.Name)
	}
	if !(last < r.id && r.id < next) {
		t.Fatalf("IDs of key %s not increasing across the drop: last before %d, the parked call's %d = %+v, the next %d = %+v", testKey.Name, last, r.id, pr, next, pn)
	}
	if got := b.applied.Load(); got != 2 {
		t.Errorf("after the next call the key's state was created %d times, want 2", got)
	}
}

// takeWeak takes n WEAK IDs of testKey from s and returns the last.
func takeWeak(t *testing.T, ctx context.Context, s *Service, n int) uint64 {
	t.Helper()
	var last uint64
	for range n {
		id, err := s.Next(ctx, testKey, alloc.Weak, 1)
		if err != nil {
			t.Fatal(err)
		}
		last = id
	}
	return last
}

// TestStrongEpochChangedDuringCall parks a STRONG call of node a after its
// proof (of a's first term) and its floor of other workers' time were
// read; meanwhile b leads and hands out STRONG IDs, then a leads again and
// reserves time as the third term's leader. Released, the call must not
// stamp that time: the floor it read is the first term's, below b's IDs,
// and the time it may stamp is only time granted in its proven term
// (take's epoch filter). It must fail with ErrNotLeader.
func TestStrongEpochChangedDuringCall(t *testing.T) {
	c := newCluster()
	a, b := c.node(1), c.node(2)
	clockA := &parkingClock{fakeClock: newFakeClock(t0), parked: make(chan struct{}), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(clockA.release) }) }
	t.Cleanup(release)
	// Renewals and the idle sweep tick on real-time tickers (every
	// Lease/4 and IdleTimeout): at an hour they never tick during the
	// test, so the parked clock read is the call's.
	cfg := Config{Lease: time.Hour, MaxDrift: 10 * time.Hour, IdleTimeout: time.Hour}
	c.elect(a)
	var proof atomic.Uint64 // what a's leadership proofs answer
	c.mu.Lock()
	first := c.term
	c.mu.Unlock()
	proof.Store(uint64(first))
	sa := start(t, a, clockA, Milliseconds, cfg)
	sa.cfg.Confirm = func(context.Context) (alloc.Epoch, error) { return alloc.Epoch(proof.Load()), nil }
	sb := start(t, b, newFakeClock(t0), Milliseconds, cfg)
	ctx := ctxT(t)
	if _, err := sa.Next(ctx, testKey, alloc.Strong, 1); err != nil {
		t.Fatal(err)
	}
	c.elect(b)
	fromB, err := sb.Next(ctx, testKey, alloc.Strong, 1)
	if err != nil {
		t.Fatal(err)
	}

	// The call: its proof is of the first term, read before it parks.
	clockA.armed.Store(true)
	done := make(chan nextResult, 1)
	go func() {
		id, err := sa.Next(ctx, testKey, alloc.Strong, 1)
		done <- nextResult{id, err}
	}()
	await(t, clockA.parked, "the STRONG call parked after its proof")

	// a leads again and reserves time as the third term's leader.
	c.elect(a)
	c.mu.Lock()
	third := c.term
	c.mu.Unlock()
	proof.Store(uint64(third))
	again, err := sa.Next(ctx, testKey, alloc.Strong, 1)
	if err != nil {
		t.Fatal(err)
	}
	if again <= fromB {
		t.Fatalf("a's STRONG %d in the third term, after b's %d", again, fromB)
	}
	release()
	r := await(t, done, "the parked call's answer")
	if r.err == nil {
		t.Fatalf("the call proven in the first term stamped %d on time granted in the third (b's STRONG ID before it: %d)", r.id, fromB)
	}
	if !errors.Is(r.err, alloc.ErrNotLeader) {
		t.Fatalf("the call proven in the first term: %v, want ErrNotLeader", r.err)
	}
}
