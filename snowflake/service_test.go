package snowflake

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/keyspace"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// TestIDsCarryTimeWorkerAndSequence checks an ID decodes to the clock's
// step, the node's worker and a sequence that counts within the step.
func TestIDsCarryTimeWorkerAndSequence(t *testing.T) {
	for _, l := range []Layout{Seconds, Milliseconds} {
		t.Run(l.Unit.String(), func(t *testing.T) {
			clock := newFakeClock(t0)
			s := start(t, newCluster().node(7), clock, l, Config{})
			ctx := ctxT(t)
			var prev uint64
			for i := range 5 {
				id, err := s.Next(ctx, testKey, alloc.Weak, 1)
				if err != nil {
					t.Fatal(err)
				}
				p, err := l.Decode(id)
				if err != nil {
					t.Fatal(err)
				}
				if p.Worker != 7 || p.Seq != uint64(i) || !p.Time.Equal(t0) {
					t.Fatalf("id %d decodes to %+v; want worker 7, seq %d, time %s", id, p, i, t0)
				}
				if id <= prev {
					t.Fatalf("id %d after %d", id, prev)
				}
				prev = id
			}
			clock.Add(l.Unit)
			id, err := s.Next(ctx, testKey, alloc.Weak, 1)
			if err != nil {
				t.Fatal(err)
			}
			if p, _ := l.Decode(id); p.Seq != 0 || !p.Time.Equal(t0.Add(l.Unit)) {
				t.Fatalf("after a step: %+v", p)
			}
		})
	}
}

// TestBlocks checks a block is contiguous within one step, moves to the
// next step when the rest of this one is too short, and is refused when
// larger than a step holds.
func TestBlocks(t *testing.T) {
	l := Layout{TimeBits: 40, WorkerBits: 10, SeqBits: 4, Unit: time.Millisecond, Epoch: DefaultEpoch}
	s := start(t, newCluster().node(1), newFakeClock(t0), l, Config{})
	ctx := ctxT(t)
	a, err := s.Next(ctx, testKey, alloc.Weak, 10)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Next(ctx, testKey, alloc.Weak, 10) // 6 left in the step: next step
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := l.Decode(a)
	pb, _ := l.Decode(b)
	if pa.Seq != 0 || pb.Seq != 0 || pb.Tick != pa.Tick+1 {
		t.Fatalf("blocks %+v then %+v", pa, pb)
	}
	if _, err := s.Next(ctx, testKey, alloc.Weak, 17); !errors.Is(err, ErrBlockTooLarge) {
		t.Fatalf("17 IDs in a 16-ID step: %v", err)
	}
}

// TestClockBackNoDuplicate moves the clock back a little (within the
// drift bound: the node keeps counting from where it was) and a lot
// (beyond it: refused, naming the clock, until it catches up), and checks
// IDs keep increasing.
func TestClockBackNoDuplicate(t *testing.T) {
	clock := newFakeClock(t0)
	l := Milliseconds
	s := start(t, newCluster().node(1), clock, l, Config{Lease: time.Second, MaxDrift: 5 * time.Second})
	ctx := ctxT(t)
	var prev uint64
	next := func() (uint64, error) {
		id, err := s.Next(ctx, testKey, alloc.Weak, 1)
		if err == nil {
			if id <= prev {
				t.Fatalf("id %d after %d", id, prev)
			}
			prev = id
		}
		return id, err
	}
	for range 100 {
		if _, err := next(); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Millisecond)
	}
	clock.Add(-2 * time.Second) // back, within MaxDrift
	for range 100 {
		id, err := next()
		if err != nil {
			t.Fatalf("clock 2s back, within the 5s bound: %v", err)
		}
		if p, _ := l.Decode(id); p.Time.Before(t0.Add(99 * time.Millisecond)) {
			t.Fatalf("stamped %s, before the last time handed out", p.Time)
		}
	}
	clock.Add(-time.Minute) // far back
	_, err := next()
	if !errors.Is(err, ErrClock) || !errors.Is(err, alloc.ErrUnavailable) {
		t.Fatalf("clock a minute back: %v, want ErrClock", err)
	}
	clock.Set(t0.Add(time.Second))
	if _, err := next(); err != nil {
		t.Fatalf("clock caught up: %v", err)
	}
}

// TestRestartStartsAboveReservedTime restarts a node (a new Service over
// the same log) with its clock behind everything it reserved: it starts
// above that time, and refuses when that is beyond the drift bound.
func TestRestartStartsAboveReservedTime(t *testing.T) {
	c := newCluster()
	n := c.node(3)
	clock := newFakeClock(t0)
	cfg := Config{Lease: 2 * time.Second, MaxDrift: 10 * time.Second}
	s := start(t, n, clock, Milliseconds, cfg)
	ctx := ctxT(t)
	seen := map[uint64]bool{}
	var last uint64
	for range 1000 {
		id, err := s.Next(ctx, testKey, alloc.Weak, 1)
		if err != nil {
			t.Fatal(err)
		}
		seen[id], last = true, id
	}
	_, hi := s.Reserved()
	s.Close()

	clock.Add(-time.Second) // restarted on a host whose clock is behind
	s2 := start(t, n, clock, Milliseconds, cfg)
	id, err := s2.Next(ctx, testKey, alloc.Weak, 1)
	if err != nil {
		t.Fatal(err)
	}
	if seen[id] || id <= last {
		t.Fatalf("after restart: %d (last before %d)", id, last)
	}
	if p, _ := Milliseconds.Decode(id); uint64(p.Time.UnixMilli()) <= hi {
		t.Fatalf("restarted node stamped %s, not after its reserved %s", p.Time, time.UnixMilli(int64(hi)).UTC())
	}
	s2.Close()

	clock.Add(-time.Hour)
	s3 := start(t, n, clock, Milliseconds, cfg)
	if _, err := s3.Next(ctx, testKey, alloc.Weak, 1); !errors.Is(err, ErrClock) {
		t.Fatalf("restart an hour behind: %v, want ErrClock", err)
	}
}

// TestCutOffServesUntilReservedTimeRunsOut cuts a node off from the
// leader: it keeps serving WEAK IDs until the time it reserved runs out,
// then fails.
func TestCutOffServesUntilReservedTimeRunsOut(t *testing.T) {
	c := newCluster()
	n := c.node(1)
	clock := newFakeClock(t0)
	s := start(t, n, clock, Milliseconds, Config{Lease: time.Second, MaxDrift: 5 * time.Second})
	ctx := ctxT(t)
	if _, err := s.Next(ctx, testKey, alloc.Weak, 1); err != nil {
		t.Fatal(err)
	}
	n.setCut(true)
	_, hi := s.Reserved()
	for clock.Now().UnixMilli() < int64(hi) {
		if _, err := s.Next(ctx, testKey, alloc.Weak, 1); err != nil {
			t.Fatalf("cut off at %s with time reserved until %s: %v", clock.Now(), time.UnixMilli(int64(hi)).UTC(), err)
		}
		clock.Add(100 * time.Millisecond)
	}
	clock.Add(time.Second)
	if _, err := s.Next(ctx, testKey, alloc.Weak, 1); !errors.Is(err, errCut) {
		t.Fatalf("past its reserved time: %v, want the reservation's error", err)
	}
	n.setCut(false)
	if _, err := s.Next(ctx, testKey, alloc.Weak, 1); err != nil {
		t.Fatal(err)
	}
}

// TestStrongAcrossLeaderChange hands out STRONG IDs from one leader, then
// from another whose clock is behind: every ID exceeds every earlier one.
func TestStrongAcrossLeaderChange(t *testing.T) {
	c := newCluster()
	a, b := c.node(1), c.node(2)
	clockA, clockB := newFakeClock(t0), newFakeClock(t0.Add(-time.Second))
	cfg := Config{Lease: time.Second, MaxDrift: 5 * time.Second}
	sa := start(t, a, clockA, Seconds, cfg)
	sb := start(t, b, clockB, Seconds, cfg)
	ctx := ctxT(t)
	c.elect(a)
	var prev uint64
	strong := func(s *Service) {
		t.Helper()
		id, err := s.Next(ctx, testKey, alloc.Strong, 1)
		if err != nil {
			t.Fatal(err)
		}
		if id <= prev {
			t.Fatalf("STRONG %d after %d", id, prev)
		}
		prev = id
	}
	for range 50 {
		strong(sa)
	}
	if _, err := sb.Next(ctx, testKey, alloc.Strong, 1); !errors.Is(err, alloc.ErrNotLeader) {
		t.Fatalf("STRONG on a follower: %v", err)
	}
	// b served WEAK IDs too, from its own worker, before it leads.
	if _, err := sb.Next(ctx, testKey, alloc.Weak, 1); err != nil {
		t.Fatal(err)
	}
	c.elect(b)
	for range 50 {
		strong(sb)
	}
	c.elect(a)
	for range 50 {
		strong(sa)
	}
	if _, err := sb.Next(ctx, testKey, alloc.Strong, 1); !errors.Is(err, alloc.ErrNotLeader) {
		t.Fatalf("STRONG on the deposed leader: %v", err)
	}
}

// TestFloors sets a floor through one node: later IDs from every node
// exceed it, and a floor too far ahead of the clock is refused.
func TestFloors(t *testing.T) {
	c := newCluster()
	a, b := c.node(1), c.node(2)
	clock := newFakeClock(t0)
	cfg := Config{Lease: time.Second, MaxDrift: 5 * time.Second, FloorHold: time.Millisecond}
	sa := start(t, a, clock, Milliseconds, cfg)
	sb := start(t, b, clock, Milliseconds, cfg)
	ctx := ctxT(t)
	if _, err := sb.Next(ctx, testKey, alloc.Weak, 1); err != nil {
		t.Fatal(err)
	}
	l := Milliseconds
	floor := l.Compose(l.TickAt(uint64(t0.Add(2*time.Second).UnixMilli())), 900, 5)
	hw, err := sa.SetFloor(ctx, testKey, floor)
	if err != nil {
		t.Fatal(err)
	}
	if hw < floor {
		t.Fatalf("SetFloor returned %d, below the floor %d", hw, floor)
	}
	// b learns it as it applies it (here: the cluster's floor hook).
	sb.RaiseFloor(testKey, floor)
	for _, s := range []*Service{sa, sb} {
		id, err := s.Next(ctx, testKey, alloc.Weak, 1)
		if err != nil {
			t.Fatal(err)
		}
		if id <= floor {
			t.Fatalf("id %d at or below the floor %d", id, floor)
		}
	}
	// A key new to a node reads the floor from the log.
	sc := start(t, c.node(3), clock, Milliseconds, cfg)
	if id, err := sc.Next(ctx, testKey, alloc.Weak, 1); err != nil || id <= floor {
		t.Fatalf("a node new to the key: %d, %v; floor %d", id, err, floor)
	}
	far := l.Compose(l.TickAt(uint64(t0.Add(time.Hour).UnixMilli())), 0, 0)
	if _, err := sa.SetFloor(ctx, testKey, far); !errors.Is(err, ErrFloorAhead) {
		t.Fatalf("a floor an hour ahead: %v", err)
	}
}

// TestEvictedKeyDoesNotGoBack drops a key that borrowed steps ahead of the
// clock; its next ID still exceeds the last.
func TestEvictedKeyDoesNotGoBack(t *testing.T) {
	l := Layout{TimeBits: 40, WorkerBits: 10, SeqBits: 2, Unit: time.Millisecond, Epoch: DefaultEpoch}
	clock := newFakeClock(t0)
	s := start(t, newCluster().node(1), clock, l, Config{IdleTimeout: time.Hour})
	ctx := ctxT(t)
	var last uint64
	for range 100 { // 4 per step: borrows 25 steps ahead
		id, err := s.Next(ctx, testKey, alloc.Weak, 1)
		if err != nil {
			t.Fatal(err)
		}
		last = id
	}
	clock.Add(time.Hour)
	s.evictIdle()
	if s.Keys() != 0 {
		t.Fatalf("%d keys after eviction", s.Keys())
	}
	clock.Add(-time.Hour)
	id, err := s.Next(ctx, testKey, alloc.Weak, 1)
	if err != nil {
		t.Fatal(err)
	}
	if id <= last {
		t.Fatalf("after eviction: %d, last before %d", id, last)
	}
}

// TestPropertyNoDuplicate runs several nodes concurrently through random
// clock jumps (small and large, back and forward), restarts, leader
// changes, cut-offs and worker IDs passed to a new node, and checks that
// no ID repeats, each node's IDs of a key increase, and STRONG IDs
// increase in the order they were handed out.
func TestPropertyNoDuplicate(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { propertyRun(t, seed) })
	}
}

func propertyRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	l := Layout{TimeBits: 40, WorkerBits: 4, SeqBits: 3, Unit: time.Millisecond, Epoch: DefaultEpoch}
	c := newCluster()
	cfg := Config{Lease: 20 * time.Millisecond, MaxDrift: 200 * time.Millisecond, FloorHold: time.Millisecond}
	ctx := ctxT(t)
	type member struct {
		n     *node
		clock *fakeClock
		s     *Service
		last  map[string]uint64
	}
	members := make([]*member, 3)
	for i := range members {
		n := c.node(uint64(i))
		clock := newFakeClock(t0)
		members[i] = &member{n: n, clock: clock, s: start(t, n, clock, l, cfg), last: map[string]uint64{}}
	}
	c.elect(members[0].n)
	seen := map[string]string{}
	lastStrong := map[string]uint64{}
	strongs := 0 // STRONG calls served: the order check must have checked some
	keys := []string{"a", "b", "c"}
	now := t0
	for step := range 10000 {
		m := members[rng.IntN(len(members))]
		now = now.Add(time.Millisecond) // real time: the clocks stray from it and are stepped back to it
		for _, o := range members {
			o.clock.Add(time.Millisecond)
		}
		switch r := rng.IntN(100); {
		case r < 3: // a small jump back
			m.clock.Add(-time.Duration(rng.IntN(50)) * time.Millisecond)
		case r < 4: // a large jump back
			m.clock.Add(-time.Duration(rng.IntN(2000)+200) * time.Millisecond)
		case r < 8: // NTP steps the clock to the real time
			m.clock.Set(now)
		case r < 9: // restart
			m.s.Close()
			m.s = start(t, m.n, m.clock, l, cfg)
			m.last = map[string]uint64{}
		case r < 10: // leader change
			c.elect(members[rng.IntN(len(members))].n)
		case r < 11:
			m.n.setCut(!m.n.cut)
		case r < 12: // the node is wiped and readmitted: a new incarnation with a worker ID another node held
			m.s.Close()
			old := m.n.worker
			m.n = c.node(uint64(rng.IntN(1 << l.WorkerBits)))
			c.mu.Lock()
			if c.leader != nil && c.leader.worker == old {
				c.leader = m.n
			}
			c.mu.Unlock()
			m.s = start(t, m.n, m.clock, l, cfg)
			m.last = map[string]uint64{}
		default:
			key := keyspace.Key{Store: "s", Name: keys[rng.IntN(len(keys))]}
			mode := alloc.Weak
			if rng.IntN(4) == 0 {
				mode = alloc.Strong
			}
			count := uint64(rng.IntN(3) + 1)
			cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			first, err := m.s.Next(cctx, key, mode, count)
			cancel()
			if err != nil {
				continue // refusals are allowed; duplicates are not
			}
			for id := first; id < first+count; id++ {
				if prev, dup := seen[key.Name+fmt.Sprint(id)]; dup {
					t.Fatalf("step %d: id %d of key %s handed out twice (before: %s)", step, id, key.Name, prev)
				}
				seen[key.Name+fmt.Sprint(id)] = fmt.Sprintf("step %d worker %d %s", step, m.n.worker, mode)
			}
			if first <= m.last[key.Name] {
				t.Fatalf("step %d: node went back on key %s: %d after %d", step, key.Name, first, m.last[key.Name])
			}
			m.last[key.Name] = first + count - 1
			if mode == alloc.Strong {
				if first <= lastStrong[key.Name] {
					t.Fatalf("step %d: STRONG %d of key %s after %d", step, first, key.Name, lastStrong[key.Name])
				}
				lastStrong[key.Name] = first + count - 1
				strongs++
			}
		}
	}
	t.Logf("%d IDs handed out, %d STRONG calls served", len(seen), strongs)
	if len(seen) < 5000 || strongs < 100 {
		t.Fatalf("only %d IDs handed out and %d STRONG calls served: the run proved little", len(seen), strongs)
	}
}

func TestTimeStoreIsTheFSMs(t *testing.T) {
	if TimeStore != fsm.SnowflakeTimeStore {
		t.Fatalf("TimeStore %q, fsm.SnowflakeTimeStore %q", TimeStore, fsm.SnowflakeTimeStore)
	}
}

// TestStrongStampsOnlyTimeOfItsEpoch is the deposed leader whose proof
// passed just before a new leader was elected, with a clock ahead: it must
// not stamp a STRONG ID with time it reserves after the election (granted
// in the new term, after the new leader computed where its STRONG IDs
// start), or a later STRONG call on the new leader would get a smaller ID.
func TestStrongStampsOnlyTimeOfItsEpoch(t *testing.T) {
	c := newCluster()
	a, b := c.node(1), c.node(2)
	clockA, clockB := newFakeClock(t0.Add(2*time.Second)), newFakeClock(t0)
	cfg := Config{Lease: time.Second, MaxDrift: 5 * time.Second}
	c.elect(a)
	c.mu.Lock()
	staleEpoch := c.term
	c.mu.Unlock()
	// a's proofs keep answering the epoch it led in: the proof of the call
	// below completed just before b was elected.
	cfgA := cfg
	sa := start(t, a, clockA, Milliseconds, cfgA)
	sa.cfg.Confirm = func(context.Context) (alloc.Epoch, error) { return staleEpoch, nil }
	sb := start(t, b, clockB, Milliseconds, cfg)
	ctx := ctxT(t)
	first, err := sa.Next(ctx, testKey, alloc.Strong, 1)
	if err != nil {
		t.Fatal(err)
	}
	c.elect(b)
	fromB, err := sb.Next(ctx, testKey, alloc.Strong, 1)
	if err != nil {
		t.Fatal(err)
	}
	if fromB <= first {
		t.Fatalf("b's STRONG %d after a's %d", fromB, first)
	}
	// a's time ran out; what it reserves now is granted in b's term.
	clockA.Add(3 * time.Second)
	late, err := sa.Next(ctx, testKey, alloc.Strong, 1)
	if err == nil {
		// Had a returned it, a STRONG call that starts now on b must
		// still get a larger ID.
		next, err := sb.Next(ctx, testKey, alloc.Strong, 1)
		t.Fatalf("the deposed leader handed out STRONG %d; b's next is %d (%v)", late, next, err)
	}
	if !errors.Is(err, alloc.ErrNotLeader) {
		t.Fatalf("the deposed leader: %v, want ErrNotLeader", err)
	}
}

// TestWorkerLost takes a node's worker ID away (an etcd session lost, its
// worker taken by another node): it acquires another and keeps handing
// out increasing IDs, stamped after everything stamped under the old one.
func TestWorkerLost(t *testing.T) {
	c := newCluster()
	n := c.node(5)
	clock := newFakeClock(t0)
	s := start(t, n, clock, Milliseconds, Config{Lease: time.Second, MaxDrift: 5 * time.Second})
	ctx := ctxT(t)
	last := takeWeak(t, ctx, s, 10)
	_, hi := s.Reserved()
	clock.Add(2 * time.Second) // past the reserved time: the next call reserves
	next := uint64(2)
	n.mu.Lock()
	n.lose = &next
	n.mu.Unlock()
	if _, err := s.Next(ctx, testKey, alloc.Weak, 1); !errors.Is(err, ErrWorkerLost) {
		t.Fatalf("the reservation that found the worker lost: %v", err)
	}
	clock.Set(t0) // and the clock went back meanwhile
	id, err := s.Next(ctx, testKey, alloc.Weak, 1)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := Milliseconds.Decode(id)
	if p.Worker != 2 || id <= last || uint64(p.Time.UnixMilli()) <= hi {
		t.Fatalf("after losing worker 5: %d = %+v; last %d, old reserved time up to %d", id, p, last, hi)
	}
}
