package backup

import (
	"fmt"
	"math"
	"time"

	"github.com/ordinal-dev/ordinal/fsm"
)

// Defaults of Plan.
const (
	// DefaultSafety multiplies the recorded rates: a key may reserve IDs
	// up to twice as fast after the backup as it did before and still get
	// none of them again.
	DefaultSafety = 2

	// DefaultMinAdvance is the least a restore advances any key by in the
	// rate-based modes: four of the largest ranges a node reserves for a
	// key at once (alloc's MaxReservation, 4,194,304). A key that was
	// idle when the backup was taken has no rate of its own, and a node's
	// adaptive ranges can outgrow the recorded rate for a few
	// reservations; the minimum covers both. IDs are 63-bit: the gap it
	// leaves is cheap, a reissued ID is not.
	DefaultMinAdvance = 1 << 24

	// DefaultTimeMargin is how far past the restore's clock (or, with
	// Plan.For, past the end of the old cluster's service) a restore puts
	// every Snowflake worker's reserved time: the old cluster's nodes
	// stamped IDs at most their lease plus their drift bound ahead of
	// their clocks (3 s and 10 s by default), so its last IDs lie within
	// it. The restored cluster's Snowflake stores answer Unavailable
	// until their clocks are within the drift bound of it: a few seconds.
	DefaultTimeMargin = 15 * time.Second

	// maxClockSkew is how far the restoring host's clock may be behind
	// the backup's time before Plan refuses: a backup "from the future"
	// means one of the clocks is wrong, and the elapsed time the default
	// mode multiplies is then unknown.
	maxClockSkew = time.Minute
)

// Plan says how far a restore advances each key past its high-water mark
// in the backup, to cover the IDs the old cluster may have handed out
// after the backup was taken. Exactly one mode applies:
//
//   - Advance > 0: every key by exactly Advance.
//   - For > 0: every key by its peak rate × (For + 2 rate windows) ×
//     Safety, at least Min: for an operator who knows how long the old
//     cluster ran after the backup.
//   - otherwise (the default): every key by its peak rate × (Now − the
//     backup's time + 2 rate windows) × Safety, at least Min.
//
// A key without a rate of its own (idle for the rate horizon before the
// backup, or beyond the tracked keys) uses the cluster-wide peak rate.
// The two extra windows cover the alignment of the windows rates are
// counted in (see DESIGN.md).
type Plan struct {
	// Advance, when non-zero, is the exact advance of every key.
	Advance uint64
	// For, when non-zero, is how long the old cluster served after the
	// backup; it replaces the time elapsed since the backup.
	For time.Duration
	// Safety multiplies the rates; 0 means DefaultSafety. At least 1.
	Safety float64
	// Min is the least advance in the rate-based modes; 0 means
	// DefaultMinAdvance. Use 1 for no minimum.
	Min uint64
	// Now is the time of the restore; zero means time.Now().
	Now time.Time
	// TimeMargin is how far past the restore's clock (or past the backup's
	// time plus For) a Snowflake worker's reserved time is put, whatever
	// the mode (an exact Advance counts IDs, not milliseconds); 0 means
	// DefaultTimeMargin.
	TimeMargin time.Duration
}

// Advancer computes the new high-water marks of a restored cluster.
type Advancer struct {
	plan  Plan
	end   time.Time     // when the old cluster stopped serving, at the latest
	span  time.Duration // the time the rates are multiplied by
	rates map[fsm.Key]uint64
	peak  uint64 // cluster-wide peak rate
	floor uint64 // the new AllKeysFloor
}

// Advancer returns the advances plan gives for b.
func (b *Backup) Advancer(plan Plan) (*Advancer, error) {
	return NewAdvancer(b.Header, b.State.HighWater(AllKeysFloor), plan)
}

// NewAdvancer returns the advances plan gives for a backup with header h
// whose AllKeysFloor key's high-water mark is floor (0 when it has none).
func NewAdvancer(h Header, floor uint64, plan Plan) (*Advancer, error) {
	if plan.Safety == 0 {
		plan.Safety = DefaultSafety
	}
	if plan.Min == 0 {
		plan.Min = DefaultMinAdvance
	}
	if plan.Now.IsZero() {
		plan.Now = time.Now()
	}
	if plan.TimeMargin == 0 {
		plan.TimeMargin = DefaultTimeMargin
	}
	switch {
	case plan.Advance > 0 && plan.For > 0:
		return nil, fmt.Errorf("%w: give an exact advance or the time the old cluster ran after the backup, not both", ErrInvalidPlan)
	case math.IsNaN(plan.Safety) || math.IsInf(plan.Safety, 0) || plan.Safety < 1:
		return nil, fmt.Errorf("%w: the safety factor is %v; it must be at least 1", ErrInvalidPlan, plan.Safety)
	case plan.For < 0:
		return nil, fmt.Errorf("%w: the time the old cluster ran after the backup is negative (%v)", ErrInvalidPlan, plan.For)
	case plan.TimeMargin < 0:
		return nil, fmt.Errorf("%w: the Snowflake margin is negative (%v)", ErrInvalidPlan, plan.TimeMargin)
	}
	a := &Advancer{plan: plan, rates: make(map[fsm.Key]uint64, len(h.Rates.Keys)), peak: h.Rates.ClusterPeak}
	for _, kr := range h.Rates.Keys {
		a.rates[kr.Key] = kr.Peak
	}
	// The old cluster served until the backup at least, even when this
	// host's clock is a little behind the leader's that took it.
	a.end = plan.Now
	if h.TakenAt.After(a.end) {
		a.end = h.TakenAt
	}
	switch {
	case plan.Advance > 0:
	case plan.For > 0:
		a.span = plan.For + 2*h.Rates.Window
		a.end = h.TakenAt.Add(plan.For)
	default:
		elapsed := plan.Now.Sub(h.TakenAt)
		if elapsed < -maxClockSkew {
			return nil, fmt.Errorf("%w: the backup was taken at %s, %v after this host's clock says it is now (%s): one of the clocks is wrong; fix it, or give --advance or --advance-for",
				ErrInvalidPlan, h.TakenAt.Format(time.RFC3339), -elapsed, plan.Now.UTC().Format(time.RFC3339))
		}
		a.span = max(elapsed, 0) + 2*h.Rates.Window
	}
	a.floor = satAddMax(floor, a.advance(a.peak))
	return a, nil
}

// Span returns the time the rates are multiplied by (0 with an exact
// advance).
func (a *Advancer) Span() time.Duration { return a.span }

// TimeFloor returns the new cluster's SnowflakeTimeFloor: TimeMargin past
// the end of the old cluster's service (Unix milliseconds).
func (a *Advancer) TimeFloor() uint64 { return uint64(a.end.Add(a.plan.TimeMargin).UnixMilli()) }

// Plan returns the plan with its defaults filled in.
func (a *Advancer) Plan() Plan { return a.plan }

// Floor returns the new cluster's AllKeysFloor mark: the old one advanced
// by the cluster-wide rate. Every key of the new cluster is at least at
// this mark; keys not in the backup start above it.
func (a *Advancer) Floor() uint64 { return a.floor }

// Rate returns the rate k is advanced by: its own peak rate, or the
// cluster-wide one when it has none.
func (a *Advancer) Rate(k fsm.Key) uint64 {
	if r, ok := a.rates[k]; ok {
		return r
	}
	return a.peak
}

// Mark returns k's high-water mark in the new cluster given its mark hw
// in the backup: hw advanced by the plan, and at least Floor. A Snowflake
// worker's reserved time (fsm.SnowflakeTimeStore) is instead put
// TimeMargin past the end of the old cluster's service: the restore's
// time (or the backup's, if later), or the backup's plus For, in every
// mode. It never
// exceeds fsm.MaxID; a key that reaches it has no IDs left.
func (a *Advancer) Mark(k fsm.Key, hw uint64) uint64 {
	if k == AllKeysFloor {
		return max(hw, a.floor)
	}
	if k.Store == fsm.SnowflakeTimeStore {
		// A worker's reserved time (Unix ms) advances with the clock, not
		// with a rate or an exact advance (both count IDs): past every
		// time the old cluster could have stamped, and no further, so
		// that the restored cluster's Snowflake stores serve again within
		// seconds.
		return max(hw, a.TimeFloor())
	}
	return max(satAddMax(hw, a.advance(a.Rate(k))), a.floor)
}

// advance returns how far a key reserving rate IDs per second advances.
func (a *Advancer) advance(rate uint64) uint64 {
	if a.plan.Advance > 0 {
		return a.plan.Advance
	}
	v := math.Ceil(a.plan.Safety * float64(rate) * a.span.Seconds())
	if v >= float64(fsm.MaxID) {
		return fsm.MaxID
	}
	return max(uint64(v), a.plan.Min)
}

// satAddMax returns a+b, at most fsm.MaxID.
func satAddMax(a, b uint64) uint64 {
	if a >= fsm.MaxID || b >= fsm.MaxID-a {
		return fsm.MaxID
	}
	return a + b
}
