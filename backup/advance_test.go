package backup

import (
	"errors"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/fsm"
)

// timeKey is a Snowflake worker's reserved time.
var timeKey = fsm.Key{Store: fsm.SnowflakeTimeStore, Name: "3"}

func TestAdvancer(t *testing.T) {
	taken := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	h := Header{
		TakenAt: taken,
		Rates: RateSummary{
			Window:      10 * time.Second,
			ClusterPeak: 1000,
			Keys:        []KeyRate{{Key: keyA, Peak: 100}},
		},
	}
	after := func(d time.Duration) time.Time { return taken.Add(d) }
	for _, tc := range []struct {
		name       string
		plan       Plan
		oldFloor   uint64
		key        fsm.Key
		hw         uint64
		want       uint64 // the key's new mark
		wantFloor  uint64
		wantSpan   time.Duration
		wantErrors bool
	}{
		{
			// 100/s × (80s + 2×10s) × 2 = 20000, above the minimum of 5;
			// the cluster's 1000/s gives the floor of every key.
			name: "default: the key's own rate", plan: Plan{Now: after(80 * time.Second), Min: 5},
			key: keyA, hw: 1e6, want: 1e6 + 20000, wantFloor: 200000, wantSpan: 100 * time.Second,
		},
		{
			name: "default: a key without a rate takes the cluster's", plan: Plan{Now: after(80 * time.Second), Min: 5},
			key: keyB, hw: 1e6, want: 1e6 + 200000, wantFloor: 200000, wantSpan: 100 * time.Second,
		},
		{
			name: "the minimum", plan: Plan{Now: after(80 * time.Second), Min: 1 << 30},
			key: keyA, hw: 50, want: 50 + 1<<30, wantFloor: 1 << 30, wantSpan: 100 * time.Second,
		},
		{
			name: "the default minimum", plan: Plan{Now: after(0)},
			key: keyA, hw: 50, want: 50 + DefaultMinAdvance, wantFloor: DefaultMinAdvance, wantSpan: 20 * time.Second,
		},
		{
			name: "safety", plan: Plan{Now: after(80 * time.Second), Min: 1, Safety: 3.5},
			key: keyA, hw: 1e6, want: 1e6 + 35000, wantFloor: 350000, wantSpan: 100 * time.Second,
		},
		{
			// A key's own advance stays below the floor of every key
			// unless its mark is high: the floor wins.
			name: "a low key rises to the floor", plan: Plan{Now: after(80 * time.Second), Min: 5},
			key: keyA, hw: 50, want: 200000, wantFloor: 200000, wantSpan: 100 * time.Second,
		},
		{
			name: "below the new floor, a key rises to it", plan: Plan{Now: after(80 * time.Second), Min: 1},
			key: keyA, hw: 1, oldFloor: 1000, want: 201000, wantFloor: 201000, wantSpan: 100 * time.Second,
		},
		{
			name: "--advance-for replaces the time since the backup", plan: Plan{Now: after(time.Hour), For: 30 * time.Second, Min: 1},
			key: keyA, hw: 1e6, want: 1e6 + 10000, wantFloor: 100000, wantSpan: 50 * time.Second,
		},
		{
			name: "--advance is exact", plan: Plan{Now: after(time.Hour), Advance: 7},
			key: keyA, hw: 10, oldFloor: 3, want: 17, wantFloor: 10,
		},
		{
			name: "--advance from the old floor", plan: Plan{Advance: 7},
			key: keyB, hw: 1, oldFloor: 30, want: 37, wantFloor: 37,
		},
		{
			name: "the floor key itself", plan: Plan{Advance: 7},
			key: AllKeysFloor, hw: 30, oldFloor: 30, want: 37, wantFloor: 37,
		},
		{
			name: "saturates at MaxID", plan: Plan{Advance: fsm.MaxID - 5},
			key: keyA, hw: 10, want: fsm.MaxID, wantFloor: fsm.MaxID - 5,
		},
		{
			name: "a slightly fast clock counts as no time elapsed", plan: Plan{Now: after(-20 * time.Second), Min: 1},
			key: keyA, hw: 1e6, want: 1e6 + 4000, wantFloor: 40000, wantSpan: 20 * time.Second,
		},
		{
			// A worker's reserved time moves to the restore's clock plus the
			// margin, not by a rate (which would put it hours ahead).
			name: "a Snowflake worker's time: the restore's clock", plan: Plan{Now: after(time.Hour)},
			key: timeKey, hw: uint64(taken.Add(3 * time.Second).UnixMilli()),
			want: uint64(taken.Add(time.Hour + DefaultTimeMargin).UnixMilli()), wantFloor: DefaultMinAdvance, wantSpan: time.Hour + 20*time.Second,
		},
		{
			name: "a Snowflake worker's time: the end --advance-for gives", plan: Plan{Now: after(time.Hour), For: time.Minute, TimeMargin: time.Second, Min: 1},
			key: timeKey, hw: uint64(taken.UnixMilli()),
			want: uint64(taken.Add(time.Minute + time.Second).UnixMilli()), wantFloor: 160000, wantSpan: 80 * time.Second,
		},
		{
			name: "a Snowflake worker's time never goes back", plan: Plan{Now: after(time.Minute)},
			key: timeKey, hw: uint64(taken.Add(time.Hour).UnixMilli()),
			want: uint64(taken.Add(time.Hour).UnixMilli()), wantFloor: DefaultMinAdvance, wantSpan: 80 * time.Second,
		},
		{
			// An exact advance counts IDs, not milliseconds: a worker's time
			// still moves to the restore's clock plus the margin (2^30 ms
			// would put it twelve days ahead, where no node may stamp).
			name: "a Snowflake worker's time with --advance: the restore's clock", plan: Plan{Advance: 1 << 30, Now: after(time.Hour)},
			key: timeKey, hw: uint64(taken.Add(3 * time.Second).UnixMilli()),
			want: uint64(taken.Add(time.Hour + DefaultTimeMargin).UnixMilli()), wantFloor: 1 << 30,
		},
		{
			// A backup taken a little after this host's clock says it is
			// now (accepted, within maxClockSkew): the old cluster served
			// until then at least.
			name: "a Snowflake worker's time: a backup slightly ahead of this clock", plan: Plan{Now: after(-20 * time.Second), Min: 1},
			key: timeKey, hw: uint64(taken.UnixMilli()),
			want: uint64(taken.Add(DefaultTimeMargin).UnixMilli()), wantFloor: 40000, wantSpan: 20 * time.Second,
		},
		{name: "a backup from the future", plan: Plan{Now: after(-time.Hour)}, wantErrors: true},
		{name: "both modes", plan: Plan{Advance: 5, For: time.Second}, wantErrors: true},
		{name: "safety below 1", plan: Plan{Safety: 0.5}, wantErrors: true},
		{name: "negative duration", plan: Plan{For: -time.Second}, wantErrors: true},
		{name: "negative Snowflake margin", plan: Plan{TimeMargin: -time.Second}, wantErrors: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAdvancer(h, tc.oldFloor, tc.plan)
			if tc.wantErrors {
				if !errors.Is(err, ErrInvalidPlan) {
					t.Fatalf("NewAdvancer: %v, want ErrInvalidPlan", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Mark(tc.key, tc.hw); got != tc.want {
				t.Errorf("Mark(%v, %d) = %d, want %d", tc.key, tc.hw, got, tc.want)
			}
			if a.Floor() != tc.wantFloor || a.Span() != tc.wantSpan {
				t.Errorf("floor %d, span %v; want %d, %v", a.Floor(), a.Span(), tc.wantFloor, tc.wantSpan)
			}
		})
	}
}
