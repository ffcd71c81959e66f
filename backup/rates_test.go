package backup

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ordinal-dev/ordinal/fsm"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

var (
	epoch = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC) // a window boundary
	keyA  = fsm.Key{Store: "s", Name: "a"}
	keyB  = fsm.Key{Store: "s", Name: "b"}
)

// obs is one reservation: ids of key at epoch+at, observed at epoch+now.
type obs struct {
	key     fsm.Key
	ids     uint64
	at, now time.Duration
	zeroAt  bool // the entry carries no time
}

func TestRates(t *testing.T) {
	cfg := RatesConfig{Window: 10 * time.Second, Horizon: time.Minute, MaxKeys: 2}
	for _, tc := range []struct {
		name     string
		obs      []obs
		summary  time.Duration // when Summary is asked
		want     map[fsm.Key]uint64
		wantPeak uint64
	}{
		{
			name:    "one reservation",
			obs:     []obs{{key: keyA, ids: 64, at: time.Second, now: time.Second}},
			summary: 2 * time.Second,
			want:    map[fsm.Key]uint64{keyA: 7}, wantPeak: 7, // 64 per 10s, rounded up
		},
		{
			name: "the peak window counts, not the mean",
			obs: []obs{
				{key: keyA, ids: 100, at: time.Second, now: time.Second},
				{key: keyA, ids: 900, at: 12 * time.Second, now: 12 * time.Second},
				{key: keyA, ids: 900, at: 19 * time.Second, now: 19 * time.Second},
				{key: keyA, ids: 10, at: 25 * time.Second, now: 25 * time.Second},
			},
			summary: 26 * time.Second,
			want:    map[fsm.Key]uint64{keyA: 180}, wantPeak: 180,
		},
		{
			name: "cluster peak sums keys",
			obs: []obs{
				{key: keyA, ids: 300, at: time.Second, now: time.Second},
				{key: keyB, ids: 200, at: 2 * time.Second, now: 2 * time.Second},
			},
			summary: 3 * time.Second,
			want:    map[fsm.Key]uint64{keyA: 30, keyB: 20}, wantPeak: 50,
		},
		{
			name: "a replayed log counts at the entries' times",
			obs: []obs{
				{key: keyA, ids: 500, at: 1 * time.Second, now: 50 * time.Second},
				{key: keyA, ids: 500, at: 11 * time.Second, now: 50 * time.Second},
				{key: keyA, ids: 500, at: 21 * time.Second, now: 50 * time.Second},
			},
			summary: 50 * time.Second,
			want:    map[fsm.Key]uint64{keyA: 50}, wantPeak: 50,
		},
		{
			name: "entries older than the horizon are ignored",
			obs: []obs{
				{key: keyA, ids: 1 << 20, at: 0, now: 5 * time.Minute},
				{key: keyB, ids: 10, at: 5 * time.Minute, now: 5 * time.Minute},
			},
			summary: 5 * time.Minute,
			want:    map[fsm.Key]uint64{keyB: 1}, wantPeak: 1,
		},
		{
			name: "an idle key loses its rate; the cluster peak stays",
			obs: []obs{
				{key: keyA, ids: 1000, at: time.Second, now: time.Second},
				{key: keyB, ids: 10, at: 2 * time.Minute, now: 2 * time.Minute},
			},
			summary: 2 * time.Minute,
			want:    map[fsm.Key]uint64{keyB: 1}, wantPeak: 100,
		},
		{
			name: "no time: counted when observed",
			obs: []obs{
				{key: keyA, ids: 100, zeroAt: true, now: 5 * time.Second},
				{key: keyA, ids: 100, zeroAt: true, now: 6 * time.Second},
			},
			summary: 7 * time.Second,
			want:    map[fsm.Key]uint64{keyA: 20}, wantPeak: 20,
		},
		{
			name: "a time in the future counts now",
			obs: []obs{
				{key: keyA, ids: 100, at: time.Hour, now: 5 * time.Second},
				{key: keyA, ids: 100, at: 6 * time.Second, now: 6 * time.Second},
			},
			summary: 7 * time.Second,
			want:    map[fsm.Key]uint64{keyA: 20}, wantPeak: 20,
		},
		{
			name: "out of order counts in the current window",
			obs: []obs{
				{key: keyA, ids: 100, at: 15 * time.Second, now: 15 * time.Second},
				{key: keyA, ids: 100, at: 5 * time.Second, now: 16 * time.Second},
			},
			summary: 17 * time.Second,
			want:    map[fsm.Key]uint64{keyA: 20}, wantPeak: 20,
		},
		{
			name: "beyond MaxKeys a key has no rate of its own",
			obs: []obs{
				{key: keyA, ids: 10, at: time.Second, now: time.Second},
				{key: keyB, ids: 10, at: time.Second, now: time.Second},
				{key: fsm.Key{Store: "s", Name: "c"}, ids: 1000, at: time.Second, now: time.Second},
			},
			summary: 2 * time.Second,
			want:    map[fsm.Key]uint64{keyA: 1, keyB: 1}, wantPeak: 102,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: epoch}
			r := newRates(cfg, clock.now)
			for _, o := range tc.obs {
				clock.set(epoch.Add(o.now))
				at := epoch.Add(o.at)
				if o.zeroAt {
					at = time.Time{}
				}
				r.Observe(o.key, o.ids, at)
			}
			clock.set(epoch.Add(tc.summary))
			s := r.Summary()
			got := map[fsm.Key]uint64{}
			for _, kr := range s.Keys {
				got[kr.Key] = kr.Peak
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || s.ClusterPeak != tc.wantPeak {
				t.Fatalf("rates %v, cluster peak %d; want %v, %d", got, s.ClusterPeak, tc.want, tc.wantPeak)
			}
			if s.Window != cfg.Window || s.Horizon != cfg.Horizon || !s.Since.Equal(epoch) {
				t.Fatalf("summary %+v", s)
			}
		})
	}
}

// Keys that went idle are swept from memory, so a node that reserved for
// millions of keys once does not keep them.
func TestRatesForgetIdleKeys(t *testing.T) {
	clock := &fakeClock{t: epoch}
	r := newRates(RatesConfig{Window: time.Second, Horizon: 10 * time.Second}, clock.now)
	for i := range 1000 {
		r.Observe(fsm.Key{Store: "s", Name: fmt.Sprint(i)}, 1, clock.now())
	}
	clock.set(epoch.Add(time.Minute))
	r.Observe(keyA, 1, clock.now())
	r.mu.Lock()
	n := len(r.keys)
	r.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d keys tracked after the others went idle, want 1", n)
	}
}

// TestRatesIgnoreSnowflakeTime checks a Snowflake worker's reserved time,
// trillions of milliseconds in one reservation, counts in no rate: it
// would push every key of a restored cluster as far.
func TestRatesIgnoreSnowflakeTime(t *testing.T) {
	clock := &fakeClock{t: epoch}
	r := newRates(RatesConfig{Window: time.Second, Horizon: 10 * time.Second}, clock.now)
	r.Observe(fsm.Key{Store: fsm.SnowflakeTimeStore, Name: "0"}, 1_800_000_000_000, clock.now())
	r.Observe(keyA, 10, clock.now())
	if s := r.Summary(); s.ClusterPeak > 10 || len(s.Keys) != 1 || s.Keys[0].Key != keyA {
		t.Fatalf("summary %+v: the worker's time was counted", s)
	}
}

func TestPerSecond(t *testing.T) {
	for _, tc := range []struct {
		ids    uint64
		window time.Duration
		want   uint64
	}{
		{0, time.Second, 0},
		{1, 10 * time.Second, 1},
		{10, 10 * time.Second, 1},
		{11, 10 * time.Second, 2},
		{5, 500 * time.Millisecond, 10},
		{fsm.MaxID, time.Millisecond, fsm.MaxID},
	} {
		if got := perSecond(tc.ids, tc.window); got != tc.want {
			t.Errorf("perSecond(%d, %v) = %d, want %d", tc.ids, tc.window, got, tc.want)
		}
	}
}

// Wired to a state machine, Rates sees every reservation the log applies,
// at the time its entry was appended, and nothing else: not floors, not
// a reservation that failed.
func TestRatesFromTheStateMachine(t *testing.T) {
	clock := &fakeClock{t: epoch.Add(time.Minute)}
	r := newRates(RatesConfig{Window: 10 * time.Second}, clock.now)
	f := fsm.New(nil)
	f.SetReserveHook(r.Observe)
	apply := func(at time.Time, ops ...fsm.Op) {
		t.Helper()
		resp := f.Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: fsm.Command{Ops: ops}.Encode(), AppendedAt: at})
		if err, ok := resp.(error); ok {
			t.Fatal(err)
		}
	}
	huge := fsm.Key{Store: "s", Name: "full"}
	apply(epoch.Add(time.Second),
		fsm.Op{Kind: fsm.OpReserve, Key: keyA, Want: 640, Need: 1},
		fsm.Op{Kind: fsm.OpFloor, Key: keyB, Value: 1 << 40},
		fsm.Op{Kind: fsm.OpFloor, Key: huge, Value: fsm.MaxID - 1},
		fsm.Op{Kind: fsm.OpReserve, Key: huge, Want: 10, Need: 5}, // overflows: nothing granted
	)
	apply(epoch.Add(2*time.Second), fsm.Op{Kind: fsm.OpReserve, Key: keyA, Want: 360, Need: 1})
	s := r.Summary()
	if len(s.Keys) != 1 || s.Keys[0] != (KeyRate{Key: keyA, Peak: 100}) || s.ClusterPeak != 100 {
		t.Fatalf("summary %+v; want only %v at 100/s", s, keyA)
	}
}
