package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ordinal-dev/ordinal/internal/history"
)

func rec(start, end, first int64, count int32, target uint16, key uint64) Record {
	return Record{Start: start, End: end, First: first, Count: count, Target: target, Key: key}
}

func TestVerifyDetectsPlantedViolations(t *testing.T) {
	tests := []struct {
		name            string
		records         []Record
		strong, perNode string // "" = passes, else a part of the error
	}{
		{"sequential", []Record{rec(0, 1, 1, 1, 0, 0), rec(2, 3, 2, 1, 0, 0), rec(4, 5, 10, 5, 0, 0)}, "", ""},
		{"concurrent calls in either order", []Record{rec(0, 10, 5, 1, 0, 0), rec(1, 9, 3, 1, 1, 0)}, "", ""},
		{"keys are independent", []Record{rec(0, 1, 5, 1, 0, 0), rec(2, 3, 3, 1, 0, 1)}, "", ""},
		{"duplicate", []Record{rec(0, 1, 5, 1, 0, 0), rec(2, 3, 6, 1, 0, 0), rec(4, 5, 5, 1, 1, 0)}, "DUPLICATE", "DUPLICATE"},
		{"duplicate among concurrent calls", []Record{rec(0, 10, 7, 1, 0, 0), rec(1, 9, 7, 1, 1, 0)}, "DUPLICATE", "DUPLICATE"},
		{"overlapping blocks", []Record{rec(0, 1, 1, 10, 0, 0), rec(0, 1, 10, 1, 1, 0)}, "DUPLICATE", "DUPLICATE"},
		{"block inside a block", []Record{rec(0, 1, 1, 10, 0, 0), rec(0, 1, 3, 2, 1, 0), rec(0, 1, 20, 2, 1, 0)}, "DUPLICATE", "DUPLICATE"},
		{"later call got a lower id, one target", []Record{rec(0, 10, 100, 1, 0, 0), rec(20, 30, 50, 1, 0, 0)}, "ORDER", "ORDER"},
		{"later call got a lower id, two targets", []Record{rec(0, 10, 100, 1, 0, 0), rec(20, 30, 50, 1, 1, 0)}, "ORDER", ""},
		{"later call inside an earlier block", []Record{rec(0, 10, 100, 1, 0, 0), rec(20, 30, 1, 99, 0, 0)}, "ORDER", "ORDER"},
		{"violation hidden among many", append(sequence(1000, 0), rec(5000, 5001, 3, 1, 0, 0)), "ORDER", "ORDER"},
		{"zero id", []Record{rec(0, 1, 0, 1, 0, 0)}, "positive", "positive"},
		{"touching intervals are concurrent", []Record{rec(0, 10, 100, 1, 0, 0), rec(10, 20, 50, 1, 0, 0)}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				order Order
				want  string
			}{{OrderStrong, tt.strong}, {OrderPerTarget, tt.perNode}} {
				err := Verify(slices.Clone(tt.records), c.order)
				switch {
				case c.want == "" && err != nil:
					t.Errorf("%v: %v, want no violation", c.order, err)
				case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
					t.Errorf("%v: %v, want an error containing %q", c.order, err, c.want)
				}
			}
		})
	}
}

// sequence is n back-to-back calls with increasing IDs (from 1000).
func sequence(n int, target uint16) []Record {
	out := make([]Record, n)
	for i := range out {
		out[i] = rec(int64(2*i), int64(2*i+1), int64(1000+i), 1, target, 0)
	}
	return out
}

// TestVerifyAgreesWithHistory checks the O(n log n) verifier against
// internal/history's checkers on random small histories, violations
// included: same verdict every time.
func TestVerifyAgreesWithHistory(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	bad := 0
	for i := range 3000 {
		n := 1 + rng.IntN(8)
		records := make([]Record, n)
		for j := range records {
			start := rng.Int64N(20)
			records[j] = rec(start, start+rng.Int64N(6), 1+rng.Int64N(12), int32(1+rng.IntN(3)), uint16(rng.IntN(2)), uint64(rng.IntN(2)))
		}
		for _, order := range []Order{OrderStrong, OrderPerTarget} {
			got := Verify(slices.Clone(records), order)
			want := historyVerdict(records, order)
			if (got == nil) != (want == nil) {
				t.Fatalf("case %d, %v: Verify says %v, history says %v\nrecords: %+v", i, order, got, want, records)
			}
			if got != nil {
				bad++
			}
		}
	}
	if bad < 1000 {
		t.Errorf("only %d of 6000 random histories had a violation; the test would not notice a verifier that misses them", bad)
	}
}

// historyVerdict checks records with internal/history: CheckUnique, and
// the real-time criterion of CheckWeakPerNode applied per target
// (OrderPerTarget) or to all calls as if served by one node (OrderStrong).
func historyVerdict(records []Record, order Order) error {
	ops := make([]history.Op, len(records))
	for i, r := range records {
		node := "all"
		if order == OrderPerTarget {
			node = fmt.Sprint(r.Target)
		}
		ops[i] = history.Op{Client: i, Node: node, Key: fmt.Sprint(r.Key), Call: r.Start, Return: r.End, First: r.First, Count: int64(r.Count)}
	}
	if err := history.CheckUnique(ops); err != nil {
		return err
	}
	return history.CheckWeakPerNode(ops)
}

func BenchmarkVerify1M(b *testing.B) {
	const n = 1_000_000
	src := make([]Record, n)
	for i := range src {
		// 64 callers, each call overlapping 63 others.
		src[i] = rec(int64(i), int64(i+64), int64(n-i), 1, uint16(i%3), 0)
	}
	rand.Shuffle(n, func(i, j int) { src[i], src[j] = src[j], src[i] })
	work := make([]Record, n)
	for b.Loop() {
		copy(work, src)
		// IDs decrease as time passes: a violation found at the end of
		// the sweep, after the whole sort.
		if err := Verify(work, OrderStrong); err == nil {
			b.Fatal("no violation found")
		}
	}
}
