package backup

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/ordinal-dev/ordinal/fsm"
)

// Defaults of RatesConfig.
const (
	// DefaultRateWindow is the width of the intervals reservations are
	// counted over. A node reserves a hot key's IDs in ranges that last
	// about a second, so a window of several seconds sees a steady rate
	// rather than the bursts of single reservations.
	DefaultRateWindow = 10 * time.Second

	// DefaultRateHorizon is how long a key keeps its own rate after its
	// last reservation.
	DefaultRateHorizon = 15 * time.Minute

	// DefaultMaxRateKeys bounds how many keys Rates tracks at once: about
	// 100 bytes each plus the key's name, so at most about 10 MB.
	DefaultMaxRateKeys = 1 << 16
)

// RatesConfig configures Rates. Zero fields take their defaults.
type RatesConfig struct {
	// Window is the width of the intervals reservations are counted over.
	Window time.Duration
	// Horizon is how long a key keeps its own rate after its last
	// reservation; reservations older than this are not counted at all.
	Horizon time.Duration
	// MaxKeys bounds the keys tracked at once. Keys beyond it carry no
	// rate of their own, and a restore advances them by the cluster-wide
	// rate, which is never lower.
	MaxKeys int
}

func (c RatesConfig) withDefaults() RatesConfig {
	if c.Window <= 0 {
		c.Window = DefaultRateWindow
	}
	if c.Horizon <= 0 {
		c.Horizon = DefaultRateHorizon
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = DefaultMaxRateKeys
	}
	return c
}

// Rates measures how fast IDs are reserved, per key and cluster-wide, from
// the reservations a node applies (fsm.FSM.SetReserveHook). The state
// machine reads no clock, so rates are measured here, on the time each
// reservation's log entry was appended by the leader: replaying a log
// after a restart reports reservations at the times they were made, not
// as one burst.
//
// A rate is the most IDs reserved in one window (Window wide, aligned to
// the Unix epoch) divided by the window's length: the peak, not the mean,
// kept for as long as the key is tracked. A key is tracked from its first
// reservation until it has reserved nothing for Horizon; at most MaxKeys
// keys are tracked at once, so memory stays bounded whatever the number of
// keys. The cluster-wide peak is kept since the Rates was created.
//
// Rates is safe for concurrent use.
type Rates struct {
	cfg   RatesConfig
	since time.Time
	now   func() time.Time

	mu      sync.Mutex
	keys    map[fsm.Key]keyRate
	cluster keyRate
	swept   int64 // the window of the last sweep of idle keys
}

// keyRate counts one key's (or all keys') reservations.
type keyRate struct {
	window int64  // index of the current window (Unix nanoseconds / Window)
	count  uint64 // IDs reserved in it
	peak   uint64 // most IDs reserved in one window while tracked
	last   int64  // Unix nanoseconds of the latest reservation
}

// add counts ids reserved at (Unix nanoseconds) in window w. A
// reservation older than the current window (out of order, after a
// leader's clock stepped back) is counted in the current one: that can
// only raise the peak, never hide a reservation.
func (k *keyRate) add(w int64, ids uint64, at int64) {
	if w > k.window {
		k.window, k.count = w, 0
	}
	k.count = satAdd(k.count, ids)
	k.peak = max(k.peak, k.count)
	k.last = max(k.last, at)
}

// NewRates returns a Rates that starts observing now.
func NewRates(cfg RatesConfig) *Rates {
	return newRates(cfg, time.Now)
}

func newRates(cfg RatesConfig, now func() time.Time) *Rates {
	return &Rates{cfg: cfg.withDefaults(), since: now(), now: now, keys: make(map[fsm.Key]keyRate)}
}

// Observe counts ids IDs of k reserved at at, the time the leader
// appended the reservation to its log (time of arrival when zero, or when
// in the future). Reservations older than Horizon are ignored. Its
// signature is that of fsm.FSM.SetReserveHook. Snowflake workers'
// reserved time (fsm.SnowflakeTimeStore) is not counted: it is
// milliseconds, not IDs, and a restore advances it by the clock (see
// Advancer.Mark).
func (r *Rates) Observe(k fsm.Key, ids uint64, at time.Time) {
	if k.Store == fsm.SnowflakeTimeStore {
		return
	}
	now := r.now()
	if at.IsZero() || at.After(now) {
		at = now
	}
	if now.Sub(at) > r.cfg.Horizon || ids == 0 {
		return
	}
	ns := at.UnixNano()
	w := ns / int64(r.cfg.Window)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.cluster.add(w, ids, ns)
	if cur := now.UnixNano() / int64(r.cfg.Window); cur > r.swept {
		r.sweep(now)
		r.swept = cur
	}
	kr, ok := r.keys[k]
	if !ok && len(r.keys) >= r.cfg.MaxKeys {
		return // untracked: the cluster-wide rate stands in for it
	}
	kr.add(w, ids, ns)
	r.keys[k] = kr
}

// sweep forgets keys idle for longer than Horizon. It runs at most once
// per window, so it costs O(MaxKeys) per Window.
func (r *Rates) sweep(now time.Time) {
	cutoff := now.Add(-r.cfg.Horizon).UnixNano()
	for k, kr := range r.keys {
		if kr.last < cutoff {
			delete(r.keys, k)
		}
	}
}

// Summary returns the rates as of now, for a backup header.
func (r *Rates) Summary() RateSummary {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	cutoff := now.Add(-r.cfg.Horizon).UnixNano()
	s := RateSummary{
		Window:      r.cfg.Window,
		Horizon:     r.cfg.Horizon,
		Since:       r.since.UTC(),
		ClusterPeak: perSecond(r.cluster.peak, r.cfg.Window),
		Keys:        make([]KeyRate, 0, len(r.keys)),
	}
	for k, kr := range r.keys {
		if kr.last >= cutoff {
			s.Keys = append(s.Keys, KeyRate{Key: k, Peak: perSecond(kr.peak, r.cfg.Window)})
		}
	}
	slices.SortFunc(s.Keys, func(a, b KeyRate) int { return compareKeys(a.Key, b.Key) })
	return s
}

// perSecond converts IDs per window into IDs per second, rounded up, at
// least 1 for a non-zero count and at most fsm.MaxID.
func perSecond(ids uint64, window time.Duration) uint64 {
	if ids == 0 {
		return 0
	}
	v := math.Ceil(float64(ids) / window.Seconds())
	if v >= float64(fsm.MaxID) {
		return fsm.MaxID
	}
	return max(uint64(v), 1)
}

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}
