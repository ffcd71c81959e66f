package snowflake

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/keyspace"
	"github.com/ordinal-dev/ordinal/metrics"
)

// TimeStore is the store whose key "W" (W the worker ID in decimal) holds
// the highest time, in Unix milliseconds, ever reserved for worker W. A
// node reserves time exactly as it reserves a counter's IDs: a reservation
// of that key grants it the milliseconds First..Last, above every one
// granted before to any holder of the worker. It equals
// fsm.SnowflakeTimeStore; the name starts with the prefix no call may use.
const TimeStore = "_ordinal.snowflake"

// TimeKey returns the key that holds worker's reserved time.
func TimeKey(worker uint64) keyspace.Key {
	return keyspace.Key{Store: TimeStore, Name: strconv.FormatUint(worker, 10)}
}

// Errors a Service returns, besides those of its Backend.
var (
	// ErrClock is wrapped by the error of a call that would have to stamp
	// an ID further ahead of this node's clock than Config.MaxDrift: the
	// clock went back (or the cluster's reserved time ran ahead of it),
	// and the node refuses rather than stamp far-future times. It wraps
	// alloc.ErrUnavailable: another node, or this one once its clock
	// catches up, serves the call.
	ErrClock = fmt.Errorf("snowflake: this node's clock is behind the time it must stamp: %w", alloc.ErrUnavailable)
	// ErrBlockTooLarge is returned for a block of more IDs than one time
	// step holds (Layout.MaxSeq+1): a block is contiguous, so it must fit
	// one step.
	ErrBlockTooLarge = errors.New("snowflake: block larger than one time step holds")
	// ErrFloorAhead is returned by SetFloor for a floor whose time lies
	// further ahead of this node's clock than Config.MaxDrift: every later
	// ID would have to be stamped with that time, which the node refuses.
	ErrFloorAhead = errors.New("snowflake: floor lies too far in the future")
	// ErrTimeExhausted is wrapped, with keyspace.ErrOverflow, by the
	// error of a call to a store whose layout's time has run out (its
	// TimeBits reach no further): the store cannot hand out another ID.
	ErrTimeExhausted = errors.New("snowflake: the layout's time has run out")
	// ErrWorkerLost is wrapped by a Backend's Reserve error when this node
	// no longer holds its worker ID (an etcd session that expired and
	// whose worker another node took). The Service then drops the worker
	// and the time reserved under it, and asks Backend.Worker for one
	// again; every later ID is stamped after everything it stamped before.
	// A call whose worker was dropped while it ran fails with it too.
	ErrWorkerLost = fmt.Errorf("snowflake: this node lost its worker ID: %w", alloc.ErrUnavailable)
	// ErrConflict is wrapped by the error of a declaration that conflicts
	// with what the cluster holds: the store is declared with another
	// layout, or it holds counters. The etcd store's declarations wrap it;
	// the Raft store's log answers fsm.ErrSnowflakeConflict.
	ErrConflict = errors.New("snowflake: the store's declaration conflicts with the cluster's")
	// ErrNoStrong is returned for STRONG calls (and HighWater) by a
	// Service whose store has no leader to fence them (etcd's Layotto
	// layout): only WEAK Snowflake IDs can be served there.
	ErrNoStrong = errors.New("snowflake: this store has no leader, so it serves WEAK Snowflake IDs only")
	// ErrNotSnowflake is returned for a key of a store that is not declared
	// a Snowflake store.
	ErrNotSnowflake = errors.New("snowflake: not a snowflake store")
)

// Backend is what a Service needs from the cluster: a worker ID, time
// reserved through the replicated log, floors, and what the log holds.
type Backend interface {
	// Worker returns this node's worker ID, acquiring one through the
	// cluster the first time: unique among members, the same across
	// restarts of the node's data directory.
	Worker(ctx context.Context) (uint64, error)
	// Reserve is alloc.Backend's Reserve; the Service uses it on
	// TimeKey(worker) only, to reserve milliseconds.
	Reserve(ctx context.Context, key keyspace.Key, want, need uint64) (alloc.Range, alloc.Epoch, error)
	// Floor durably raises key's high-water mark (the key's floor) to at
	// least value and returns the mark after the change.
	Floor(ctx context.Context, key keyspace.Key, value uint64) (uint64, error)
	// Applied returns key's high-water mark as this node applied it: for a
	// key of a Snowflake store its floor, for TimeKey(w) the time reserved
	// for worker w.
	Applied(key keyspace.Key) uint64
	// MaxReserved returns the highest time reserved for any worker but
	// except, as this node applied it.
	MaxReserved(except uint64) uint64
}

// Source is a Backend that also tells a node which Snowflake stores the
// other nodes declared and the floors they set: the etcd store's. (A Raft
// node learns both from its log, through hooks the daemon wires.)
type Source interface {
	Backend
	// OnDeclare calls fn for every Snowflake store declared, by any node:
	// those known, then each new one as the node learns it.
	OnDeclare(fn func(store string, layout Layout))
	// OnFloor calls fn for every floor of a Snowflake store's key set by
	// any node, before a time reservation made after it returns.
	OnFloor(fn func(key keyspace.Key, floor uint64))
}

// Clock tells the time. The Service stamps and reserves by it, so tests
// can move it back and forth; how long SetFloor waits out a floor hold is
// real time, which a clock offset does not change.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config tunes a Service. The zero value of every field means its default.
type Config struct {
	// Lease is how far ahead of its clock a node reserves time: a node cut
	// off from the leader keeps handing out IDs for up to Lease, and a
	// restarted node starts up to Lease ahead of its clock (and a new
	// leader's STRONG IDs up to Lease ahead of the cluster's clocks). A
	// longer lease means fewer log entries (about one per Lease/2 per
	// busy node), but larger jumps. Default 3s.
	Lease time.Duration
	// MaxDrift is how far ahead of this node's clock it stamps an ID
	// before refusing with ErrClock: while the clock is behind the time
	// the node must stamp (it went back, or the node restarted), it keeps
	// counting from the reserved time within MaxDrift. It must exceed
	// Lease. Default 10s.
	MaxDrift time.Duration
	// FloorHold is how long after a floor committed SetFloor waits when
	// not every node confirmed it applied the floor: a node that did not
	// learn of it stops stamping with older times within Lease plus
	// MaxDrift. Default Lease + MaxDrift + 1s.
	FloorHold time.Duration
	// IdleTimeout drops the memory of a key unused for between one and two
	// IdleTimeouts, and stops renewing time after a node served nothing
	// for that long. Default 5m.
	IdleTimeout time.Duration
	// ReserveTimeout bounds one time reservation. Default 5s.
	ReserveTimeout time.Duration
	// Confirm proves leadership for STRONG calls and HighWater: the
	// allocator's (alloc.Allocator.Confirm), so that counters and
	// Snowflake stores share proofs. Nil, for a store with no leader (etcd's
	// Layotto layout), refuses STRONG calls and HighWater with ErrNoStrong.
	Confirm func(ctx context.Context) (alloc.Epoch, error)
	// Clock is the wall clock; nil means the system's.
	Clock Clock
	// Logger receives warnings about the clock and failed reservations.
	Logger hclog.Logger
	// Metrics counts the IDs handed out. Nil counts nothing.
	Metrics *metrics.Alloc
}

// DefaultLease and DefaultMaxDrift are Config.Lease's and
// Config.MaxDrift's defaults (and --snowflake-lease's and
// --snowflake-max-drift's).
const (
	DefaultLease    = 3 * time.Second
	DefaultMaxDrift = 10 * time.Second
)

func (c Config) withDefaults() (Config, error) {
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.MaxDrift <= 0 {
		c.MaxDrift = DefaultMaxDrift
	}
	if c.MaxDrift <= c.Lease {
		return c, fmt.Errorf("snowflake: max drift %s must exceed the lease %s", c.MaxDrift, c.Lease)
	}
	if c.FloorHold <= 0 {
		c.FloorHold = c.Lease + c.MaxDrift + time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.ReserveTimeout <= 0 {
		c.ReserveTimeout = 5 * time.Second
	}
	if c.Confirm == nil {
		c.Confirm = func(context.Context) (alloc.Epoch, error) { return 0, ErrNoStrong }
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c, nil
}

// Service hands out Snowflake IDs for the stores declared to it. It
// implements alloc.Sequencer for those stores. It is safe for concurrent
// use.
type Service struct {
	cfg     Config
	backend Backend

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stores   atomic.Pointer[map[string]*store] // copy on write under storesMu
	storesMu sync.Mutex

	mu        sync.Mutex
	worker    uint64
	hasWorker bool
	lo, hi    uint64 // the time range this node may stamp, Unix ms, inclusive; lo > hi: none
	// slo..shi is the part of it granted to this node as leader in epoch
	// sepoch: the only time a STRONG call proven in that epoch may stamp
	// (a grant of a later epoch, taken by a deposed leader, may commit
	// after the new leader computed where its STRONG IDs start).
	slo, shi uint64
	sepoch   alloc.Epoch
	// minStart is the least time any ID may be stamped with from now on:
	// after the node lost its worker ID, past everything stamped under it
	// (ErrWorkerLost).
	minStart    uint64
	refill      *timeRefill
	strongEpoch alloc.Epoch  // the epoch strongFloor belongs to
	strongFloor uint64       // STRONG IDs stamp times after this (Unix ms)
	lastUse     atomic.Int64 // Unix ns of the last call served, for renewals
	// view is a copy of the fields above as of the last change, which
	// calls read without taking mu: every call needs them, and a mutex
	// all calls of all keys share was a visible part of a STRONG call's
	// cost at 64 callers. Writers hold mu and publish a new copy.
	view atomic.Pointer[view]
}

// view is what a call reads of the Service's state (see Service.view).
type view struct {
	worker      uint64
	hasWorker   bool
	lo, hi      uint64
	slo, shi    uint64
	sepoch      alloc.Epoch
	minStart    uint64
	strongEpoch alloc.Epoch
	strongFloor uint64
}

// publish makes the current state what calls read. The caller holds mu.
func (s *Service) publish() {
	s.view.Store(&view{worker: s.worker, hasWorker: s.hasWorker, lo: s.lo, hi: s.hi, slo: s.slo, shi: s.shi,
		sepoch: s.sepoch, minStart: s.minStart, strongEpoch: s.strongEpoch, strongFloor: s.strongFloor})
}

// timeRefill is one time reservation in flight; done closes when it ends.
type timeRefill struct {
	done  chan struct{}
	upTo  uint64 // the reservation covers at least up to here when it succeeds
	epoch alloc.Epoch
	err   error
}

// store is one declared Snowflake store: its layout and its keys.
type store struct {
	name   string
	layout Layout

	mu      sync.RWMutex
	keys    map[string]*keyState
	evicted uint64 // the highest step used by any key dropped from keys
}

// keyState is what this node remembers of one key: the last step and
// sequence it used, and the key's floor.
type keyState struct {
	mu      sync.Mutex
	tick    uint64 // the last step used
	seq     uint64 // the last sequence used in tick
	used    bool
	minTick uint64 // the key's floor: IDs stamp this step or later
	lastUse time.Time
	dropped bool
}

// testHookKeyFound is nil except in tests, which set it to run in take
// between finding a key's state and locking it: where the idle sweep may
// drop the state.
var testHookKeyFound func(*keyState)

// New returns a Service over backend. It serves no store until Declare.
func New(backend Backend, cfg Config) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, backend: backend, ctx: ctx, cancel: cancel, lo: 1, hi: 0, slo: 1, shi: 0}
	empty := map[string]*store{}
	s.stores.Store(&empty)
	s.publish()
	s.wg.Add(2)
	go s.renew()
	go s.sweep()
	return s, nil
}

// Close stops renewals and waits for them to end.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Declare makes name a Snowflake store with layout l on this node. The
// cluster calls it for every store it declared (on every node, as it
// applies the declaration); declaring a store again with the same layout
// changes nothing.
func (s *Service) Declare(name string, l Layout) error {
	if err := l.Validate(); err != nil {
		return err
	}
	s.storesMu.Lock()
	defer s.storesMu.Unlock()
	old := *s.stores.Load()
	if st, ok := old[name]; ok {
		if st.layout != l {
			return fmt.Errorf("snowflake: store %q is declared with layout %s, not %s", name, st.layout, l)
		}
		return nil
	}
	next := make(map[string]*store, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[name] = &store{name: name, layout: l, keys: map[string]*keyState{}}
	s.stores.Store(&next)
	return nil
}

// Layout returns the layout of store name and whether it is a Snowflake
// store.
func (s *Service) Layout(name string) (Layout, bool) {
	st := (*s.stores.Load())[name]
	if st == nil {
		return Layout{}, false
	}
	return st.layout, true
}

// Serves reports whether store name is a Snowflake store.
func (s *Service) Serves(name string) bool {
	_, ok := (*s.stores.Load())[name]
	return ok
}

func (s *Service) store(name string) (*store, error) {
	st := (*s.stores.Load())[name]
	if st == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotSnowflake, name)
	}
	return st, nil
}

// leaseMs is Config.Lease in milliseconds.
func (s *Service) leaseMs() uint64 { return uint64(s.cfg.Lease / time.Millisecond) }

// noteUse records that a call was served at now, for the renewals' idle
// check. It writes only when the last record is a tenth of a lease old, so
// that calls of every key do not all write one shared word.
func (s *Service) noteUse(now time.Time) {
	if ns := now.UnixNano(); ns-s.lastUse.Load() > int64(s.cfg.Lease/10) {
		s.lastUse.Store(ns)
	}
}

func (s *Service) nowMs() uint64 {
	ms := s.cfg.Clock.Now().UnixMilli()
	if ms < 0 {
		return 0
	}
	return uint64(ms)
}

// Next hands out count contiguous Snowflake IDs of key and returns the
// first. WEAK IDs come from this node's worker with no round trip; STRONG
// IDs only from the leader, after a leadership proof that started after
// the call arrived, and after every time any worker reserved before this
// leader's term.
func (s *Service) Next(ctx context.Context, key keyspace.Key, mode alloc.Mode, count uint64) (uint64, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, alloc.ErrClosed
	}
	st, err := s.store(key.Store)
	if err != nil {
		return 0, err
	}
	if count == 0 || count > st.layout.MaxSeq()+1 {
		return 0, fmt.Errorf("%w: %d IDs asked, store %q holds %d per %s step", ErrBlockTooLarge, count, key.Store, st.layout.MaxSeq()+1, st.layout.Unit)
	}
	worker, err := s.workerID(ctx)
	if err != nil {
		return 0, err
	}
	if worker > st.layout.MaxWorker() {
		return 0, fmt.Errorf("snowflake: worker ID %d does not fit the %d worker bits of store %q: %w", worker, st.layout.WorkerBits, key.Store, alloc.ErrUnavailable)
	}
	var after uint64      // STRONG: stamp only times after this
	var epoch alloc.Epoch // STRONG: the proven epoch
	if mode == alloc.Strong {
		if epoch, err = s.cfg.Confirm(ctx); err != nil {
			return 0, err
		}
		if after, err = s.strongAfter(ctx, epoch); err != nil {
			return 0, err
		}
	}
	for {
		now := s.cfg.Clock.Now()
		s.noteUse(now)
		id, wantMs, err := s.take(st, key.Name, worker, count, after, epoch, now)
		if err != nil || wantMs == 0 {
			if err == nil {
				s.cfg.Metrics.Issued(mode == alloc.Strong, count)
			}
			return id, err
		}
		got, err := s.reserveTime(ctx, wantMs+s.leaseMs())
		if err != nil {
			return 0, err
		}
		if epoch != 0 && got != epoch {
			// The time came from a reservation this node did not commit
			// as the leader of the proven epoch: it no longer leads.
			return 0, fmt.Errorf("%w: leadership changed during the call", alloc.ErrNotLeader)
		}
	}
}

// take stamps count IDs of key, or returns the time (Unix ms) the node must
// reserve up to first.
func (s *Service) take(st *store, name string, worker, count, after uint64, epoch alloc.Epoch, clock time.Time) (id, wantMs uint64, err error) {
	l := st.layout
	now := uint64(max(clock.UnixMilli(), 0))
	v := s.view.Load()
	if !v.hasWorker || v.worker != worker {
		// The worker was lost since the call read it: the time in view is
		// another worker's, or none.
		return 0, 0, fmt.Errorf("%w: worker %d was dropped during the call", ErrWorkerLost, worker)
	}
	lo, hi := v.lo, v.hi
	if epoch != 0 {
		// STRONG: only time granted to this node as leader of the
		// proven epoch.
		lo, hi = v.slo, v.shi
		if v.sepoch != epoch {
			lo, hi = 1, 0
		}
	}
	lo = max(lo, v.minStart)

	var ks *keyState
	for {
		ks = st.key(name, s.backend, clock)
		if testHookKeyFound != nil {
			testHookKeyFound(ks)
		}
		ks.mu.Lock()
		if !ks.dropped {
			break
		}
		// Dropped by the idle sweep after st.key returned it: its last
		// step is in st.evicted now, where a new state starts from.
		ks.mu.Unlock()
	}
	defer ks.mu.Unlock()
	tick := max(l.TickAt(now), ks.minTick, l.TickFrom(lo))
	if after > 0 {
		tick = max(tick, l.TickFrom(after+1))
	}
	seq := uint64(0)
	if ks.used && tick <= ks.tick {
		tick, seq = ks.tick, ks.seq+1
		if seq+count-1 > l.MaxSeq() {
			tick, seq = tick+1, 0
		}
	}
	if tick > l.MaxTick() {
		return 0, 0, fmt.Errorf("%w: store %q's layout ends at %s: %w", ErrTimeExhausted, st.name, l.End().Format(time.RFC3339), keyspace.ErrOverflow)
	}
	start := l.StartMs(tick)
	if ahead := time.Duration(start-min(start, now)) * time.Millisecond; ahead > s.cfg.MaxDrift {
		return 0, 0, fmt.Errorf("%w: store %q must stamp %s, %s ahead of this node's clock (%s); the limit is %s (--snowflake-max-drift): "+
			"check the clock (NTP), or wait for it to catch up",
			ErrClock, st.name, time.UnixMilli(int64(start)).UTC().Format(time.RFC3339Nano), ahead, time.UnixMilli(int64(now)).UTC().Format(time.RFC3339Nano), s.cfg.MaxDrift)
	}
	if start > hi || start < lo {
		return 0, max(start, lo), nil
	}
	ks.tick, ks.seq, ks.used = tick, seq+count-1, true
	ks.lastUse = clock
	return l.Compose(tick, worker, seq), 0, nil
}

// key returns the state of key name, creating it from the floor the node
// applied.
func (st *store) key(name string, b Backend, now time.Time) *keyState {
	st.mu.RLock()
	ks := st.keys[name]
	st.mu.RUnlock()
	if ks != nil {
		return ks
	}
	st.mu.Lock()
	if ks = st.keys[name]; ks != nil {
		st.mu.Unlock()
		return ks
	}
	// A key dropped while idle may have stamped steps ahead of the clock;
	// a new state starts after the highest step any dropped key used.
	ks = &keyState{tick: st.evicted, seq: st.layout.MaxSeq(), used: st.evicted > 0, lastUse: now}
	st.keys[name] = ks
	st.mu.Unlock()
	// The floor is read after the state is in the map, so a floor applied
	// meanwhile is either read here or raised by RaiseFloor.
	if f := b.Applied(keyspace.Key{Store: st.name, Name: name}); f > 0 {
		ks.raise(st.layout, f)
	}
	return ks
}

// raise makes every later ID of the key exceed floor.
func (ks *keyState) raise(l Layout, floor uint64) {
	t := floor >> (l.WorkerBits + l.SeqBits)
	ks.mu.Lock()
	ks.minTick = max(ks.minTick, t+1)
	ks.mu.Unlock()
}

// RaiseFloor makes every ID this node hands out for key from now on exceed
// floor. The cluster calls it when it applies a floor, on every node.
func (s *Service) RaiseFloor(key keyspace.Key, floor uint64) {
	st := (*s.stores.Load())[key.Store]
	if st == nil {
		return
	}
	st.mu.RLock()
	ks := st.keys[key.Name]
	st.mu.RUnlock()
	if ks != nil {
		ks.raise(st.layout, floor)
	}
}

func (s *Service) workerID(ctx context.Context) (uint64, error) {
	if v := s.view.Load(); v.hasWorker {
		return v.worker, nil
	}
	w, err := s.backend.Worker(ctx)
	if err != nil {
		return 0, fmt.Errorf("snowflake: no worker ID yet: %w", err)
	}
	s.mu.Lock()
	if !s.hasWorker {
		s.worker, s.hasWorker = w, true
		s.publish()
		s.cfg.Logger.Info("snowflake worker ID acquired", "worker", w)
	}
	w = s.worker
	s.mu.Unlock()
	return w, nil
}

// dropWorker forgets worker, which this node no longer holds, and every
// time reserved under it; the next call acquires a worker anew and stamps
// after everything stamped under the old one.
func (s *Service) dropWorker(worker uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasWorker || s.worker != worker {
		return
	}
	s.cfg.Logger.Warn("lost the snowflake worker ID; acquiring another", "worker", worker)
	if s.lo <= s.hi {
		s.minStart = max(s.minStart, s.hi+1)
	}
	s.hasWorker = false
	s.lo, s.hi, s.slo, s.shi, s.sepoch, s.strongEpoch = 1, 0, 1, 0, 0, 0
	s.publish()
}

// Acquire returns this node's worker ID, acquiring it through the
// Backend (which declares the node's stores with it) if the node has none
// yet.
func (s *Service) Acquire(ctx context.Context) (uint64, error) { return s.workerID(ctx) }

// Worker returns this node's worker ID, if it has one yet.
func (s *Service) Worker() (uint64, bool) {
	v := s.view.Load()
	return v.worker, v.hasWorker
}

// strongAfter returns the time after which a STRONG ID of the proven epoch
// must be stamped: after every time reserved for any other worker before
// this node's first reservation in the epoch. A deposed leader's STRONG IDs were
// stamped with times it had reserved, and those reservations committed
// before this node's term began, so every later STRONG ID exceeds them.
func (s *Service) strongAfter(ctx context.Context, epoch alloc.Epoch) (uint64, error) {
	if v := s.view.Load(); v.strongEpoch == epoch {
		return v.strongFloor, nil
	}
	// A reservation committed in this epoch; everything reserved before
	// it is applied here when it returns.
	got, err := s.reserveTime(ctx, s.nowMs()+s.leaseMs())
	if err != nil {
		return 0, err
	}
	if got != epoch {
		return 0, fmt.Errorf("%w: leadership changed during the call", alloc.ErrNotLeader)
	}
	// This node's own earlier IDs need no bound: it remembers each key's
	// last step (and a dropped key's, per store), and after a restart it
	// stamps only time granted after everything before. The backend is
	// read outside mu: for the etcd store it is a network round trip.
	floor := s.backend.MaxReserved(s.view.Load().worker)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.strongEpoch != epoch {
		s.strongEpoch, s.strongFloor = epoch, floor
		s.publish()
	}
	return s.strongFloor, nil
}

// reserveTime makes sure this node holds time up to upTo, sharing a
// reservation in flight that covers it. It returns the epoch of the
// reservation it waited for (0: not committed by this node as leader).
func (s *Service) reserveTime(ctx context.Context, upTo uint64) (alloc.Epoch, error) {
	for {
		s.mu.Lock()
		r := s.refill
		if r == nil || r.upTo < upTo {
			if r == nil {
				r = &timeRefill{done: make(chan struct{}), upTo: upTo}
				s.refill = r
				s.mu.Unlock()
				s.wg.Add(1)
				go s.runRefill(r)
			} else {
				s.mu.Unlock()
				// A smaller reservation is in flight: wait for it, then
				// ask for the rest.
				select {
				case <-r.done:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
				if r.err != nil {
					return 0, r.err
				}
				continue
			}
		} else {
			s.mu.Unlock()
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if r.err != nil {
			return 0, r.err
		}
		return r.epoch, nil
	}
}

func (s *Service) runRefill(r *timeRefill) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		if s.refill == r {
			s.refill = nil
		}
		s.mu.Unlock()
		close(r.done)
	}()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ReserveTimeout)
	defer cancel()
	worker, err := s.workerID(ctx)
	if err != nil {
		r.err = err
		return
	}
	key := TimeKey(worker)
	known := max(s.view.Load().hi, s.backend.Applied(key)) // the backend outside mu: etcd reads the network
	want := uint64(1)
	if r.upTo > known {
		want = r.upTo - known
	}
	rng, epoch, err := s.backend.Reserve(ctx, key, want, 1)
	if err != nil {
		r.err = fmt.Errorf("snowflake: reserve time for worker %d: %w", worker, err)
		s.cfg.Logger.Debug("time reservation failed", "worker", worker, "error", err)
		if errors.Is(err, ErrWorkerLost) {
			s.dropWorker(worker)
		}
		return
	}
	r.epoch = epoch
	s.mu.Lock()
	if s.worker != worker || !s.hasWorker {
		// The worker was dropped meanwhile: this time is not ours to use.
		s.mu.Unlock()
		r.err = fmt.Errorf("snowflake: worker %d was dropped during its reservation: %w", worker, ErrWorkerLost)
		return
	}
	extend(&s.lo, &s.hi, rng, true)
	if epoch != 0 {
		extend(&s.slo, &s.shi, rng, epoch == s.sepoch)
		s.sepoch = epoch
	}
	s.publish()
	s.mu.Unlock()
}

// extend adds the granted range rng to the range lo..hi when it follows on
// from it (and same says both belong together), and otherwise replaces
// it: a node keeps the time it was granted last, the rest of an older
// grant is a gap.
func extend(lo, hi *uint64, rng alloc.Range, same bool) {
	if same && rng.First == *hi+1 && *lo <= *hi {
		*hi = rng.Last
		return
	}
	*lo, *hi = rng.First, rng.Last
}

// renew keeps a busy node's reserved time at least Lease/2 ahead of its
// clock, so that callers do not wait for a reservation in the steady
// state. A node that served nothing for IdleTimeout stops renewing; its
// next call reserves on demand.
func (s *Service) renew() {
	defer s.wg.Done()
	t := time.NewTicker(max(s.cfg.Lease/4, 10*time.Millisecond))
	defer t.Stop()
	lease := uint64(s.cfg.Lease / time.Millisecond)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if s.cfg.Clock.Now().Sub(time.Unix(0, s.lastUse.Load())) > s.cfg.IdleTimeout {
			continue
		}
		now := s.nowMs()
		s.mu.Lock()
		hi, has := s.hi, s.hasWorker
		s.mu.Unlock()
		if has && hi < now+lease/2 {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ReserveTimeout)
			if _, err := s.reserveTime(ctx, now+lease); err != nil && s.ctx.Err() == nil {
				s.cfg.Logger.Warn("cannot renew reserved time; this node serves Snowflake IDs until its reserved time runs out",
					"reserved_until", time.UnixMilli(int64(hi)).UTC(), "error", err)
			}
			cancel()
		}
	}
}

// sweep drops keys idle for IdleTimeout, remembering the highest step each
// store's dropped keys used.
func (s *Service) sweep() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.IdleTimeout)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.evictIdle()
		}
	}
}

func (s *Service) evictIdle() {
	now := s.cfg.Clock.Now()
	for _, st := range *s.stores.Load() {
		st.mu.Lock()
		for name, ks := range st.keys {
			ks.mu.Lock()
			if now.Sub(ks.lastUse) >= s.cfg.IdleTimeout {
				if ks.used {
					st.evicted = max(st.evicted, ks.tick)
				}
				ks.dropped = true
				delete(st.keys, name)
			}
			ks.mu.Unlock()
		}
		st.mu.Unlock()
	}
}

// Keys returns how many keys of Snowflake stores this node holds in
// memory.
func (s *Service) Keys() int {
	n := 0
	for _, st := range *s.stores.Load() {
		st.mu.RLock()
		n += len(st.keys)
		st.mu.RUnlock()
	}
	return n
}

// HighWater returns a bound no ID of key handed out before the call
// started exceeds: the key's floor, or the last ID of the last step any
// worker reserved time for, whichever is higher. It is linearizable and
// so, like STRONG calls, only the leader answers.
func (s *Service) HighWater(ctx context.Context, key keyspace.Key) (uint64, error) {
	st, err := s.store(key.Store)
	if err != nil {
		return 0, err
	}
	epoch, err := s.cfg.Confirm(ctx)
	if err != nil {
		return 0, err
	}
	// A reservation in this epoch makes every earlier one applied here.
	if _, err := s.strongAfter(ctx, epoch); err != nil {
		return 0, err
	}
	return s.bound(st, key), nil
}

func (s *Service) bound(st *store, key keyspace.Key) uint64 {
	l := st.layout
	reserved := max(s.view.Load().hi, s.backend.MaxReserved(^uint64(0)))
	tick := min(l.TickAt(reserved), l.MaxTick())
	return max(s.backend.Applied(key), l.Compose(tick, l.MaxWorker(), l.MaxSeq()))
}

// SetFloor makes every ID of key that any node hands out after SetFloor
// returns exceed floor, and returns the key's high-water mark (HighWater's
// bound) after the change. The floor's time may lie at most MaxDrift ahead
// of this node's clock (ErrFloorAhead): every later ID is stamped with a
// later time.
//
// The floor holds on this node at once and on every other node as it
// applies it; SetFloor returns when the backend confirms every node did
// (alloc.FloorHolder) or else once FloorHold passed, when a node that did
// not learn of it has run out of the time it reserved before. If ctx ends
// first it fails with an error wrapping alloc.ErrFloorPending.
func (s *Service) SetFloor(ctx context.Context, key keyspace.Key, floor uint64) (uint64, error) {
	st, err := s.store(key.Store)
	if err != nil {
		return 0, err
	}
	l := st.layout
	if floor > keyspace.MaxID {
		return 0, fmt.Errorf("%w: %d is above 2^63-1", ErrFloorAhead, floor)
	}
	now := s.nowMs()
	if start := l.StartMs(floor>>(l.WorkerBits+l.SeqBits) + 1); start > now && time.Duration(start-now)*time.Millisecond > s.cfg.MaxDrift {
		return 0, fmt.Errorf("%w: floor %d is stamped %s; IDs after it would be %s ahead of this node's clock, beyond the %s limit (--snowflake-max-drift)",
			ErrFloorAhead, floor, time.UnixMilli(int64(start)).UTC().Format(time.RFC3339Nano), time.Duration(start-now)*time.Millisecond, s.cfg.MaxDrift)
	}
	if _, err := s.backend.Floor(ctx, key, floor); err != nil {
		return 0, err
	}
	committed := time.Now()
	s.RaiseFloor(key, floor)
	if err := alloc.AwaitFloor(ctx, s.backend, key, committed, s.cfg.FloorHold, "time reserved before it", s.cfg.Logger); err != nil {
		return 0, err
	}
	return s.bound(st, key), nil
}

// Reserved returns the time range this node may stamp, Unix milliseconds
// inclusive (lo > hi when it holds none).
func (s *Service) Reserved() (lo, hi uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lo, s.hi
}

var _ alloc.Sequencer = (*Service)(nil)
