package alloc

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ordinal-dev/ordinal/keyspace"
	"github.com/ordinal-dev/ordinal/metrics"
)

// errEvicted means the pool was dropped for idleness after the caller
// looked it up; the caller looks the key up again. Serving from an evicted
// pool next to its replacement would break per-node order.
var errEvicted = errors.New("alloc: pool evicted")

// errStaleFence means a range reserved in a newer epoch than the caller's
// leadership proof turned up: the proof is stale and must be taken again.
var errStaleFence = errors.New("alloc: leadership proof older than the range")

var emptyRange = Range{First: 1, Last: 0}

// pool serves one key's IDs in one mode from reserved ranges. It consumes
// cur, keeps one prefetched range in next, and has at most one reservation
// in flight. IDs leave a pool in strictly increasing order: next was always
// reserved after cur, and the store only ever reserves above what it
// reserved before.
type pool struct {
	key    keyspace.Key
	strong bool // ranges are bound to the epoch they were reserved in
	alloc  *Allocator

	mu        sync.Mutex
	cur       Range
	curEpoch  Epoch
	curUntil  time.Time // a WEAK cur serves until then (WeakRangeTTL)
	next      Range
	nextEpoch Epoch
	nextUntil time.Time
	floor     uint64 // no ID at or below floor may be served
	size      uint64 // IDs asked for by the next reservation
	lastStart time.Time
	inflight  *refill
	used      bool // taken from since the last sweep
	evicted   bool // dropped from the allocator; serves nothing more
}

// refill is one reservation in flight; done is closed when it has landed.
type refill struct {
	done  chan struct{}
	epoch Epoch // the epoch the range was reserved under
	err   error
	// startedUnder is the epoch proven by the STRONG call that started
	// the refill (0 for WEAK pools).
	startedUnder Epoch
	// The pool's size and lastStart before this reservation adapted them;
	// a failed reservation puts them back, so retries during an outage
	// do not grow the next reservation.
	prevSize  uint64
	prevStart time.Time
	// asked is when the reservation was asked for: a WEAK range serves
	// until asked + WeakRangeTTL.
	asked time.Time
}

// result tells a caller that waited for r whether to look at the pool again.
// A STRONG caller whose fence proved epoch stops when the range landed
// under another epoch, with one exception: a refill started for an older
// tenure (the node lost leadership and won it again while the reservation
// was queued) says nothing about the current one, so the caller looks
// again and starts a refill of its own. A refill started under the
// caller's own epoch that lands under an older one means the node lost
// leadership since: looping would only reserve again and again.
func (r *refill) result(strong bool, epoch Epoch) error {
	switch {
	case r.err != nil:
		return r.err
	case !strong || r.epoch == epoch:
		return nil
	case r.epoch > epoch:
		return errStaleFence
	case r.startedUnder < epoch:
		return nil
	default:
		return ErrNotLeader
	}
}

func newPool(a *Allocator, key keyspace.Key, strong bool) *pool {
	return &pool{
		key:    key,
		strong: strong,
		alloc:  a,
		cur:    emptyRange,
		next:   emptyRange,
		size:   a.cfg.InitialReservation,
	}
}

// take hands out count contiguous IDs and returns the first. For a STRONG
// pool, epoch is the tenure proven by the caller's fence: ranges from older
// tenures are discarded, never served.
func (p *pool) take(ctx context.Context, count uint64, epoch Epoch) (uint64, error) {
	p.mu.Lock()
	p.used = true
	for {
		if p.evicted {
			p.mu.Unlock()
			return 0, errEvicted
		}
		if err := p.discardStale(epoch); err != nil {
			p.mu.Unlock()
			return 0, err
		}
		p.discardExpired()
		if p.cur.Len() >= count {
			first := p.cur.First
			p.cur.First += count
			p.prefetch(epoch)
			p.mu.Unlock()
			return first, nil
		}
		if p.next.Len() > 0 {
			// What is left of cur is too small for this call; skipping it
			// leaves a gap, which is allowed, and keeps IDs increasing.
			p.skipped(metrics.SkipTooSmall, p.cur.Len())
			p.cur, p.curEpoch, p.curUntil = p.next, p.nextEpoch, p.nextUntil
			p.next = emptyRange
			continue
		}
		r := p.inflight
		if r == nil {
			r = p.startRefill(count, epoch)
		}
		p.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if err := r.result(p.strong, epoch); err != nil {
			return 0, err
		}
		p.mu.Lock()
	}
}

// reserveAhead starts a reservation of at least count IDs when the pool
// holds fewer and none is in flight, before the caller knows its epoch:
// the range lands tagged with the epoch it was reserved in, and the caller
// uses it only if that is the epoch its own proof establishes, exactly as
// a range reserved after the proof (refill.result treats a reservation
// started under no proven epoch like one started under an older one).
func (p *pool) reserveAhead(count uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.evicted || p.inflight != nil || p.cur.Len() >= count || p.next.Len() >= count {
		return
	}
	p.startRefill(count, 0)
}

// discardStale drops ranges a STRONG call may not use under epoch.
func (p *pool) discardStale(epoch Epoch) error {
	if !p.strong {
		return nil
	}
	if p.curEpoch > epoch || p.nextEpoch > epoch {
		return errStaleFence
	}
	if p.curEpoch != epoch {
		p.skipped(metrics.SkipLeadership, p.cur.Len())
		p.cur = emptyRange
	}
	if p.nextEpoch != epoch {
		p.skipped(metrics.SkipLeadership, p.next.Len())
		p.next = emptyRange
	}
	return nil
}

// discardExpired drops WEAK ranges older than WeakRangeTTL: a floor this
// node has not heard of (it is cut off, or was paused) may lie above them,
// and the node that set it waits no longer than their expiry (see
// Allocator.SetFloor). What is left of them is a gap. STRONG ranges are
// fenced by a leadership proof instead, and the leader applies every floor
// before SetFloor returns.
func (p *pool) discardExpired() {
	if p.strong || p.cur.Len() == 0 && p.next.Len() == 0 {
		return
	}
	now := time.Now()
	if p.cur.Len() > 0 && !now.Before(p.curUntil) {
		p.skipped(metrics.SkipExpired, p.cur.Len())
		p.cur = emptyRange
	}
	if p.next.Len() > 0 && !now.Before(p.nextUntil) {
		p.skipped(metrics.SkipExpired, p.next.Len())
		p.next = emptyRange
	}
}

// prefetch reserves the next range in the background once cur is half used,
// so that a busy key does not stall at the boundary.
func (p *pool) prefetch(epoch Epoch) {
	if p.inflight != nil || p.next.Len() > 0 || p.cur.Len() > p.size/2 {
		return
	}
	p.startRefill(1, epoch)
}

// startRefill starts a reservation of at least need IDs for a caller whose
// fence proved epoch (0 for WEAK). The caller holds p.mu.
func (p *pool) startRefill(need uint64, epoch Epoch) *refill {
	now := time.Now()
	r := &refill{done: make(chan struct{}), startedUnder: epoch, prevSize: p.size, prevStart: p.lastStart, asked: now}
	p.adaptSize(now)
	want := max(p.size, need)
	p.inflight = r
	p.alloc.wg.Add(1)
	go p.runRefill(r, want, need)
	return r
}

// adaptSize doubles the reservation size for a key that used its last
// range up quickly and halves it for a key that sat idle, so a hot key costs
// few consensus rounds and an idle one leaves small gaps behind.
func (p *pool) adaptSize(now time.Time) {
	cfg := &p.alloc.cfg
	if !p.lastStart.IsZero() {
		switch since := now.Sub(p.lastStart); {
		case since < cfg.GrowWithin:
			p.size = min(p.size*2, cfg.MaxReservation)
		case since > cfg.ShrinkAfter:
			p.size = max(p.size/2, cfg.MinReservation)
		}
	}
	p.lastStart = now
}

func (p *pool) runRefill(r *refill, want, need uint64) {
	defer p.alloc.wg.Done()
	ctx, cancel := context.WithTimeout(p.alloc.ctx, p.alloc.cfg.ReserveTimeout)
	start := time.Now()
	rng, epoch, err := p.alloc.backend.Reserve(ctx, p.key, want, need)
	cancel()
	if m := p.alloc.cfg.Metrics; m != nil {
		m.Reserve(p.strong, time.Since(start), reserveResult(err))
	}

	p.mu.Lock()
	p.inflight = nil
	if err == nil {
		p.install(rng, epoch, r.asked.Add(p.alloc.cfg.WeakRangeTTL))
	} else {
		p.size, p.lastStart = r.prevSize, r.prevStart
		p.alloc.logger.Debug("reservation failed", "store", p.key.Store, "key", p.key.Name, "error", err)
	}
	r.epoch, r.err = epoch, err
	p.mu.Unlock()
	close(r.done)
}

// install adds a freshly reserved range behind the current one; a WEAK
// range serves until until.
func (p *pool) install(rng Range, epoch Epoch, until time.Time) {
	rng = p.clip(rng)
	if p.cur.Len() == 0 {
		p.cur, p.curEpoch, p.curUntil = rng, epoch, until
		return
	}
	p.next, p.nextEpoch, p.nextUntil = rng, epoch, until
}

// raiseFloor makes sure no ID at or below floor is served from now on.
func (p *pool) raiseFloor(floor uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.floor = max(p.floor, floor)
	p.cur = p.clip(p.cur)
	p.next = p.clip(p.next)
}

// clip drops the IDs of r at or below the pool's floor.
func (p *pool) clip(r Range) Range {
	c := clip(r, p.floor)
	p.skipped(metrics.SkipFloor, r.Len()-c.Len())
	return c
}

func clip(r Range, floor uint64) Range {
	if r.First <= floor {
		r.First = floor + 1
	}
	return r
}

// skipped records n IDs of the pool that will never be handed out.
func (p *pool) skipped(cause string, n uint64) {
	p.alloc.cfg.Metrics.Skipped(cause, n)
}

// reserveResult names a reservation's outcome for metrics.
func reserveResult(err error) string {
	switch {
	case err == nil:
		return metrics.ResultOK
	case errors.Is(err, ErrNotLeader):
		return metrics.ResultNotLeader
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return metrics.ResultUnavailable
	}
	return metrics.ResultError
}

// evictIfIdle marks the pool evicted when nobody took from it since the
// last sweep and no reservation is in flight, and reports whether it did.
// The unused rest of its ranges is abandoned: a gap.
func (p *pool) evictIfIdle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used || p.inflight != nil {
		p.used = false
		return false
	}
	p.evicted = true
	p.skipped(metrics.SkipEvicted, p.cur.Len()+p.next.Len())
	return true
}
