package alloc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ordinal-dev/ordinal/keyspace"
	"github.com/ordinal-dev/ordinal/metrics"
)

// Mode selects how an ID is allocated.
type Mode int

const (
	// Weak IDs are unique and increase per node. Every node serves them from
	// ranges it reserved for itself, with no network round trip per call.
	Weak Mode = iota
	// Strong IDs increase strictly across the cluster and are linearizable.
	// Only the leader serves them, each call fenced by a leadership proof.
	Strong
)

// String returns "weak" or "strong".
func (m Mode) String() string {
	if m == Strong {
		return "strong"
	}
	return "weak"
}

// Config tunes an Allocator. The zero value of every field means its
// default.
type Config struct {
	// InitialReservation is how many IDs a key's first reservation asks
	// for. Default 64.
	InitialReservation uint64

	// MinReservation and MaxReservation bound the adaptive reservation size.
	// A larger maximum means fewer consensus rounds for a hot key but a
	// larger gap when a node restarts or leadership moves, since the unused
	// rest of a range is never handed out. Defaults 16 and 4,194,304.
	MinReservation, MaxReservation uint64

	// GrowWithin doubles a key's reservation size when its previous
	// reservation started less than this long ago. Default 1s.
	GrowWithin time.Duration

	// ShrinkAfter halves a key's reservation size when its previous
	// reservation started more than this long ago. Default 1m.
	ShrinkAfter time.Duration

	// ReserveTimeout bounds one reservation through the Backend. A
	// reservation runs on behalf of every caller of its key, so it is not
	// bound to any one caller's deadline. Default 5s.
	ReserveTimeout time.Duration

	// FenceTimeout bounds one leadership proof. Default 2s.
	FenceTimeout time.Duration

	// FenceRounds is how many leadership proofs may be in flight at once.
	// Calls that arrive while all are in flight share the next proof. With
	// one, a call under load waits for the proof in flight to end and then
	// for its own: about one and a half round trips. With more, proofs
	// start more often, so calls wait less, at the price of more proofs
	// per call. Raise it when proofs are slow but cheap (a remote etcd, a
	// cluster across zones); on a CPU-bound node it only adds work (on the
	// 2-core benchmark machine, 1 and 2 measured the same). Default 1.
	FenceRounds int

	// IdleTimeout drops the in-memory state of a key that was not used
	// for between one and two IdleTimeouts, so that a node that touched
	// millions of keys once does not keep a range for each. The rest of a
	// dropped key's ranges is never handed out (a gap). Default 5m.
	IdleTimeout time.Duration

	// WeakRangeTTL bounds how long a WEAK range may serve IDs, measured on
	// this node's monotonic clock from the moment its reservation was
	// asked for; an older range is dropped (a gap) and a new one reserved.
	// It is what makes a floor hold on a node that cannot be told about
	// it (cut off, paused): SetFloor returns once every node confirmed it
	// applied the floor or, failing that, once every range reserved
	// before the floor has expired (FloorHold). Every node of a cluster
	// must use the same value. Shorter makes SetFloor return sooner when a
	// node does not answer, but makes a key used less often than once per
	// TTL reserve on every use. Default DefaultWeakRangeTTL.
	WeakRangeTTL time.Duration

	// Logger receives debug logs about failed reservations. Nil means none.
	Logger hclog.Logger

	// Metrics records IDs handed out and skipped, leadership proofs and
	// reservations. Nil records nothing.
	Metrics *metrics.Alloc
}

func (c Config) withDefaults() Config {
	def := func(v *uint64, d uint64) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MinReservation, 16)
	def(&c.MaxReservation, 1<<22)
	def(&c.InitialReservation, 64)
	c.InitialReservation = min(max(c.InitialReservation, c.MinReservation), c.MaxReservation)
	defDur(&c.GrowWithin, time.Second)
	defDur(&c.ShrinkAfter, time.Minute)
	defDur(&c.ReserveTimeout, 5*time.Second)
	defDur(&c.FenceTimeout, 2*time.Second)
	defDur(&c.IdleTimeout, 5*time.Minute)
	defDur(&c.WeakRangeTTL, DefaultWeakRangeTTL)
	if c.FenceRounds <= 0 {
		c.FenceRounds = 1
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// DefaultWeakRangeTTL is the default Config.WeakRangeTTL.
const DefaultWeakRangeTTL = 10 * time.Second

// FloorHold is how long after a floor committed every WEAK range reserved
// before it has expired on every node, whatever its clock: ttl measured on
// one monotonic clock is taken to last at most 10% longer on another (Linux
// slews clocks by at most 0.05%), plus a margin for the time between a
// range's reservation being asked for and this node learning the floor
// committed, which only makes the wait longer than needed.
func FloorHold(ttl time.Duration) time.Duration {
	return ttl + ttl/10 + 100*time.Millisecond
}

// staleFenceRetries bounds how often a STRONG call takes a new leadership
// proof after finding a range newer than its proof; more than one retry only
// happens when leadership changes several times during one call.
const staleFenceRetries = 3

// Allocator hands out IDs per key from ranges reserved through a Backend.
// It is safe for concurrent use.
type Allocator struct {
	backend Backend
	cfg     Config
	logger  hclog.Logger
	fence   *fenceGroup

	ctx    context.Context // cancelled by Close, ends reservations in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup // reservations in flight

	mu     sync.RWMutex
	strong map[keyspace.Key]*pool
	weak   map[keyspace.Key]*pool
}

// New returns an Allocator over backend.
func New(backend Backend, cfg Config) *Allocator {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	a := &Allocator{
		backend: backend,
		cfg:     cfg,
		logger:  cfg.Logger,
		fence:   newFenceGroup(backend.Confirm, cfg.FenceTimeout, cfg.FenceRounds, cfg.Metrics),
		ctx:     ctx,
		cancel:  cancel,
		strong:  make(map[keyspace.Key]*pool),
		weak:    make(map[keyspace.Key]*pool),
	}
	a.wg.Add(1)
	go a.sweepIdle()
	return a
}

// sweepIdle evicts idle pools every IdleTimeout.
func (a *Allocator) sweepIdle() {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.IdleTimeout)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
			a.evictIdle()
		}
	}
}

func (a *Allocator) evictIdle() {
	for _, pools := range []map[keyspace.Key]*pool{a.strong, a.weak} {
		a.mu.RLock()
		var idle []*pool
		for _, p := range pools {
			if p.evictIfIdle() {
				idle = append(idle, p)
			}
		}
		a.mu.RUnlock()
		a.mu.Lock()
		for _, p := range idle {
			if pools[p.key] == p {
				delete(pools, p.key)
			}
		}
		a.mu.Unlock()
	}
}

// Next hands out count contiguous IDs of key and returns the first.
//
// A Strong call fails with an error wrapping ErrNotLeader on a node that
// does not lead; the caller forwards it to the leader. A Weak call only
// fails when the node has no IDs left in its ranges and cannot reserve more.
// A call that would pass keyspace.MaxID fails with an error wrapping
// keyspace.ErrOverflow.
func (a *Allocator) Next(ctx context.Context, key keyspace.Key, mode Mode, count uint64) (uint64, error) {
	if count == 0 {
		return 0, fmt.Errorf("alloc: count must be at least 1")
	}
	if err := a.ctx.Err(); err != nil {
		return 0, ErrClosed
	}
	if mode == Weak {
		for {
			first, err := a.pool(key, false).take(ctx, count, 0)
			if !errors.Is(err, errEvicted) {
				if err == nil {
					a.cfg.Metrics.Issued(false, count)
				}
				return first, err
			}
		}
	}
	// On the leader, a key with nothing reserved (a new key, or one whose
	// range ran out) starts its reservation now, so that it commits while
	// the call waits for its leadership proof instead of after (see
	// DESIGN.md, "A new key's first call"). A follower forwards the call.
	if l, ok := a.backend.(interface{ IsLeader() bool }); ok && l.IsLeader() {
		a.pool(key, true).reserveAhead(count)
	}
	for attempt := 0; ; attempt++ {
		epoch, err := a.fence.wait(ctx)
		if err != nil {
			return 0, err
		}
		first, err := a.pool(key, true).take(ctx, count, epoch)
		if errors.Is(err, errEvicted) {
			attempt--
			continue
		}
		if errors.Is(err, errStaleFence) && attempt < staleFenceRetries {
			continue
		}
		if errors.Is(err, errStaleFence) {
			err = fmt.Errorf("%w: leadership changed during the call", ErrNotLeader)
		}
		if err == nil {
			a.cfg.Metrics.Issued(true, count)
		}
		return first, err
	}
}

// Confirm returns the epoch proven by a leadership proof that started after
// Confirm was called, sharing proofs with the allocator's STRONG calls
// (package snowflake fences its STRONG calls with it). It fails with an
// error wrapping ErrNotLeader on a node that does not lead.
func (a *Allocator) Confirm(ctx context.Context) (Epoch, error) {
	return a.fence.wait(ctx)
}

// HighWater returns key's high-water mark, linearizably: every ID handed
// out before the call started, in either mode, is at or below it. It fails
// with an error wrapping ErrNotLeader on a node that does not lead.
func (a *Allocator) HighWater(ctx context.Context, key keyspace.Key) (uint64, error) {
	if _, err := a.fence.wait(ctx); err != nil {
		return 0, err
	}
	return a.backend.HighWater(ctx, key)
}

// SetFloor raises key's counter so that every ID any node hands out after
// SetFloor returns, in either mode, is above floor, and returns the
// high-water mark after the change.
//
// The floor holds on this node at once. Other nodes drop their WEAK ranges
// below it as they apply it; SetFloor returns once the backend confirms
// that every node that may hold a range applied it (FloorHolder), or else
// once FloorHold(WeakRangeTTL) has passed since the floor committed, when
// every range reserved before it has expired wherever it is. If ctx ends
// first, SetFloor fails with an error wrapping ErrFloorPending: the floor
// is committed and will hold by then; repeating the call is harmless.
func (a *Allocator) SetFloor(ctx context.Context, key keyspace.Key, floor uint64) (uint64, error) {
	hw, err := a.backend.Floor(ctx, key, floor)
	if err != nil {
		return 0, err
	}
	committed := time.Now() // the floor committed before this
	a.RaiseFloor(key, floor)
	if err := AwaitFloor(ctx, a.backend, key, committed, FloorHold(a.cfg.WeakRangeTTL), "WEAK ranges reserved before it", a.logger); err != nil {
		return 0, err
	}
	return hw, nil
}

// AwaitFloor returns once a floor of key that committed before committed
// holds on every node: as soon as backend, when it is a FloorHolder,
// confirms that every node that may serve from older reservations applied
// it, or else once hold has passed since committed, when those
// reservations (stale: what they are, for messages) have run out. If ctx
// ends first it fails with an error wrapping ErrFloorPending: the floor
// is committed and will hold by then. The Allocator's SetFloor and the
// Snowflake stores' share it.
func AwaitFloor(ctx context.Context, backend any, key keyspace.Key, committed time.Time, hold time.Duration, stale string, logger hclog.Logger) error {
	if h, ok := backend.(FloorHolder); ok {
		hctx, cancel := context.WithTimeout(ctx, hold)
		err := h.HoldFloor(hctx, hold)
		cancel()
		if err == nil {
			return nil
		}
		logger.Debug("not every node confirmed the floor; waiting for older reservations to run out",
			"store", key.Store, "key", key.Name, "wait", time.Until(committed.Add(hold)), "error", err)
	}
	t := time.NewTimer(time.Until(committed.Add(hold)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: not every node confirmed it, and %s may serve until %s from now; "+
			"no node will hand out an ID at or below it after that (%w)",
			ErrFloorPending, stale, time.Until(committed.Add(hold)).Round(time.Millisecond), ctx.Err())
	}
}

// RaiseFloor drops every ID at or below floor from this node's ranges for
// key. The store calls it when it applies a floor, so that nodes other than
// the one that took the call stop serving IDs below it too.
func (a *Allocator) RaiseFloor(key keyspace.Key, floor uint64) {
	a.mu.RLock()
	s, w := a.strong[key], a.weak[key]
	a.mu.RUnlock()
	if s != nil {
		s.raiseFloor(floor)
	}
	if w != nil {
		w.raiseFloor(floor)
	}
}

// Close stops the allocator and waits for reservations in flight to end.
// The unused rest of every range is abandoned: a gap, never a duplicate.
func (a *Allocator) Close() {
	a.cancel()
	a.wg.Wait()
	if a.cfg.Metrics == nil {
		return
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, pools := range []map[keyspace.Key]*pool{a.strong, a.weak} {
		for _, p := range pools {
			p.mu.Lock()
			a.cfg.Metrics.Skipped(metrics.SkipClosed, p.cur.Len()+p.next.Len())
			p.mu.Unlock()
		}
	}
}

// Pools returns how many keys hold ranges in this node's memory, counting
// a key used in both modes twice.
func (a *Allocator) Pools() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.strong) + len(a.weak)
}

func (a *Allocator) pool(key keyspace.Key, strong bool) *pool {
	pools := a.weak
	if strong {
		pools = a.strong
	}
	a.mu.RLock()
	p := pools[key]
	a.mu.RUnlock()
	if p != nil {
		return p
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if p = pools[key]; p == nil {
		p = newPool(a, key, strong)
		pools[key] = p
	}
	return p
}
