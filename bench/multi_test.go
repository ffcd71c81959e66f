package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/internal/testcluster"
)

// insecureCluster starts n nodes in development mode and returns their
// client addresses.
func insecureCluster(t *testing.T, n int) []string {
	t.Helper()
	c := testcluster.NewWithOptions(t, n, testcluster.Options{Insecure: true})
	var addrs []string
	for _, nd := range c.Nodes() {
		addrs = append(addrs, nd.GRPCAddr)
	}
	c.Leader() // waits for one
	return addrs
}

// Runs through one client over a 3-node cluster (--multi-address): STRONG
// calls in real-time order, WEAK calls unique, WEAK calls through a
// prefetching client in order per caller; and the multi-address rows of
// Compare, next to their twins.
//
// Not parallel, as TestCompareTLS: the nodes' ports are picked free
// before they bind.
func TestMultiAddress(t *testing.T) {
	cluster := insecureCluster(t, 3)
	all := strings.Join(cluster, ",")

	t.Run("run", func(t *testing.T) {
		for _, tt := range []struct {
			name     string
			mode     Mode
			prefetch int
			order    Order
		}{
			{"strong", ModeStrong, 0, OrderStrong},
			{"weak", ModeWeak, 0, OrderNone},
			{"weak-prefetch", ModeWeak, 1000, OrderPerCaller},
		} {
			t.Run(tt.name, func(t *testing.T) {
				cfg := testConfig(tt.mode, cluster...)
				cfg.MultiAddress, cfg.WeakPrefetch, cfg.Keys = true, tt.prefetch, 1
				res := runAndCheck(t, cfg)
				if res.Order != tt.order {
					t.Errorf("order %v, want %v", res.Order, tt.order)
				}
				var out bytes.Buffer
				res.Print(&out)
				for _, want := range []string{"callers sharing one client over " + all, "multi_address=true",
					fmt.Sprintf("weak_prefetch=%d", tt.prefetch), "targets=" + all} {
					if !strings.Contains(out.String(), want) {
						t.Errorf("report lacks %q:\n%s", want, out.String())
					}
				}
				if tt.prefetch > 0 && (res.LatencySample != PrefetchSampleEvery || !strings.Contains(out.String(), "of 1 call in 64") ||
					res.Verified != int(res.AllCalls) || res.Calls < 100*int64(cfg.Concurrency)) {
					t.Errorf("prefetch run: latency sample %d, verified %d of %d calls, %d measured:\n%s",
						res.LatencySample, res.Verified, res.AllCalls, res.Calls, out.String())
				}
			})
		}
	})

	t.Run("compare", func(t *testing.T) {
		noopAddr := startNoop(t)
		pids := map[string]int{noopAddr: os.Getpid()}
		for _, a := range cluster {
			pids[a] = os.Getpid()
		}
		var log bytes.Buffer
		cmp, err := Compare(context.Background(), CompareConfig{
			Cluster: cluster, Noop: noopAddr, Rounds: 2, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
			Only: []string{"noop-unary-64", "strong-leader-64", "strong-multi-64", "weak-prefetch-64"},
			Log:  &log, Machine: "a test", Command: "go test", PIDs: pids,
		})
		if err != nil {
			t.Fatalf("Compare: %v\n%s", err, log.String())
		}
		if len(cmp.Failures) > 0 {
			t.Fatalf("failures: %v\n%s", cmp.Failures, log.String())
		}
		var names []string
		for _, st := range cmp.Stats {
			names = append(names, st.Scenario.Name)
		}
		if want := []string{"noop-unary-64", "strong-multi-64", "strong-leader-64", "weak-prefetch-64"}; !slices.Equal(names, want) {
			t.Fatalf("rows %v, want %v", names, want)
		}
		multi, direct, prefetch := cmp.byName["strong-multi-64"], cmp.byName["strong-leader-64"], cmp.byName["weak-prefetch-64"]
		for _, st := range []*ScenarioStats{multi, prefetch} {
			for r, run := range st.Runs {
				if run == nil || !run.Config.MultiAddress || !slices.Equal(run.Config.Targets, cluster) || run.VerifyErr != nil {
					t.Fatalf("%s, round %d: %+v; want a verified run through one client over %v", st.Scenario.Name, r+1, run, cluster)
				}
			}
			if len(st.TargetCPU) != 2 || len(st.OthersCPU) != 2 || len(st.EntriesPerCall) != 2 {
				t.Errorf("%s: CPU %v / %v, entries %v; want one per round", st.Scenario.Name, st.TargetCPU, st.OthersCPU, st.EntriesPerCall)
			}
		}
		if c := prefetch.Runs[0].Config; c.Mode != ModeWeak || c.WeakPrefetch != 100_000 || prefetch.Runs[0].Order != OrderPerCaller {
			t.Errorf("weak-prefetch-64 ran %+v, order %v", c, prefetch.Runs[0].Order)
		}
		if c := multi.Runs[0].Config; c.Mode != ModeStrong || c.WeakPrefetch != 0 || multi.Runs[0].Order != OrderStrong {
			t.Errorf("strong-multi-64 ran %+v, order %v", c, multi.Runs[0].Order)
		}
		if len(multi.PlainRatios) != 2 || multi.PlainRatio <= 0 {
			t.Fatalf("multi / direct ratios %v (per round %v), want one per round", multi.PlainRatios, multi.RoundPlainRatios)
		}
		for r := range 2 {
			if want := multi.Runs[r].IDsPerSec() / direct.Runs[r].IDsPerSec(); math.Abs(multi.RoundPlainRatios[r]-want) > 1e-9 {
				t.Errorf("round %d: multi / direct %v, want %v", r+1, multi.RoundPlainRatios[r], want)
			}
		}
		var md bytes.Buffer
		cmp.Markdown(&md)
		text := md.String()
		t.Log(text)
		verdict := "**missed**: "
		if multi.PlainRatio >= 0.9 {
			verdict = "met: "
		}
		rate := "**missed**: "
		if prefetch.IDsPerSec >= 20e6 {
			rate = "met: "
		}
		for _, want := range []string{
			"Multi-address client vs the leader's address, same run (issue #14)",
			fmt.Sprintf("| strong-multi-64 | strong-leader-64 | %s | %s | %.2f× |", human(multi.IDsPerSec), human(direct.IDsPerSec), multi.PlainRatio),
			"Target of issue #14 (the multi-address client), strong-multi-64 / strong-leader-64 ≥ 0.9 (same run): " + verdict,
			"| WEAK through one client with WithWeakPrefetch(100000), 64 callers → all 3 nodes | " + human(prefetch.IDsPerSec) + " |",
			"| ≥ 20M ids/s | " + rate,
			"for the WithWeakPrefetch row, each caller's order",
			"The multi-address rows (issue #14) call " + strings.Join(cluster, ", "),
			"`client.New(\"" + all + "\")`",
			prefetchVerified,
			"\"server called\" is the leader",
			"strong-multi-64        ordinal-bench run --mode strong --targets " + all + " --concurrency 64 --multi-address --duration",
			"weak-prefetch-64       ordinal-bench run --mode weak --targets " + all + " --concurrency 64 --multi-address --weak-prefetch 100000 --duration",
			"all passed.",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("markdown lacks %q", want)
			}
		}
	})
}

// fakeCaller hands out IDs from a counter of its own or one it shares,
// breaking its promises on purpose.
type fakeCaller struct {
	n     *atomic.Int64
	calls int64
	fault string // "", "regress" (every 500th call below the caller's previous IDs) or "zero" (the 300th call)
}

func (f *fakeCaller) next(_ context.Context, _ string, count int64) (int64, error) {
	f.calls++
	first := f.n.Add(count) - count + 1
	switch {
	case f.fault == "regress" && f.calls%500 == 0:
		return first - 10*count, nil // below this caller's previous IDs
	case f.fault == "zero" && f.calls == 300:
		return 0, nil
	}
	return first, nil
}

func (f *fakeCaller) close() error { return nil }

// runPrefetch checks what a prefetching client promises and nothing more:
// callers that each get increasing IDs pass, whatever the order across
// callers; a caller whose IDs go down, an ID handed out twice (to two
// callers, each in order) and a non-positive ID fail the run.
func TestRunPrefetchVerifies(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"", "interleaved", "regress", "duplicate", "zero"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			const callers = 4
			cfg, err := Config{Mode: ModeWeak, Targets: []string{"fake"}, Concurrency: callers, Conns: callers, WeakPrefetch: 100,
				Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Count: 3}.WithDefaults()
			if err != nil {
				t.Fatal(err)
			}
			shared := new(atomic.Int64)
			group := make([]caller, callers)
			for i := range group {
				f := &fakeCaller{n: new(atomic.Int64)}
				f.n.Store(int64(i) << 40) // each caller its own range: unique
				switch {
				case fault == "interleaved":
					f.n = shared // unique, each caller's increasing, callers interleaved
				case fault == "duplicate" && i < 2:
					f.n.Store(1 << 50) // callers 0 and 1 get the same IDs, each in order
				case i == 2:
					f.fault = fault
				}
				group[i] = f
			}
			res, err := runPrefetch(context.Background(), cfg, [][]caller{group}, cfg.keyNames())
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"regress": "ORDER (per-caller order", "duplicate": "DUPLICATE", "zero": "IDs must be positive"}[fault]
			switch {
			case want == "" && res.VerifyErr != nil:
				t.Fatalf("VerifyErr = %v, want none", res.VerifyErr)
			case want != "" && (res.VerifyErr == nil || !strings.Contains(res.VerifyErr.Error(), want)):
				t.Fatalf("VerifyErr = %v, want one containing %q", res.VerifyErr, want)
			}
			if res.Verified != int(res.AllCalls) || res.Calls == 0 || res.IDs != 3*res.Calls || res.Calls >= res.AllCalls ||
				res.LatencySample != PrefetchSampleEvery || res.P50 <= 0 || res.Max < res.P999 || res.Order != OrderPerCaller {
				t.Errorf("result %+v: want every call verified, the warm-up's not measured, sampled latencies", res)
			}
		})
	}
}

// A worker's delta stream gives back every ID it was given, across
// chunks, jumps and a regression (kept, so that uniqueness is still
// checked exactly), and it reports the first regression.
func TestPrefetchWorkerStream(t *testing.T) {
	const count = 2
	var w prefetchWorker
	var want []int64
	id := int64(5)
	for i := range 3_000_000 {
		switch {
		case i%100_000 == 0:
			id += 1 << 40 // a block far above
		case i == 2_000_001:
			id -= 7 // a regression
		default:
			id += int64(count + i%50) // up to 50 above the previous call's last ID: a byte
		}
		w.add(3, id, count)
		want = append(want, id)
	}
	if len(w.done) < 2 {
		t.Errorf("%d full chunks; want the stream to span several", len(w.done))
	}
	if w.orderErr == nil || !strings.Contains(w.orderErr.Error(), "caller 3's call 2000002 got") {
		t.Errorf("order error %v; want one naming caller 3's call 2000002", w.orderErr)
	}
	var got []int64
	if err := w.each(count, func(first int64) error { got = append(got, first); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("stream gave back %d IDs, not the %d given", len(got), len(want))
	}
	bytes := len(w.cur)
	for _, c := range w.done {
		bytes += len(c)
	}
	if bytes > len(want)*11/10 {
		t.Errorf("%d bytes for %d calls; want about a byte each", bytes, len(want))
	}
	stop := errors.New("stop")
	if err := w.each(count, func(int64) error { return stop }); err != stop {
		t.Errorf("each returned %v, want f's error", err)
	}
}

func TestIDSet(t *testing.T) {
	var s idSet
	for _, id := range []int64{1, 2, 63, 64, 65535, 65536, 1 << 40, 1<<40 + 1, 1<<62 + 5} {
		if !s.add(id) {
			t.Errorf("%d: already in the set", id)
		}
	}
	for _, id := range []int64{1, 64, 65536, 1 << 40, 1<<62 + 5} {
		if s.add(id) {
			t.Errorf("%d: added twice", id)
		}
	}
	if s.add(3) != true || len(s.pages) != 4 {
		t.Errorf("%d pages, want 4", len(s.pages))
	}
}

// OrderNone checks uniqueness only.
func TestVerifyOrderNone(t *testing.T) {
	recs := []Record{{Start: 0, End: 1, First: 10, Count: 1}, {Start: 2, End: 3, First: 5, Count: 1}}
	if err := Verify(slices.Clone(recs), OrderNone); err != nil {
		t.Errorf("OrderNone: %v; want no order checked", err)
	}
	if err := Verify(slices.Clone(recs), OrderStrong); err == nil {
		t.Error("OrderStrong passed IDs that went down")
	}
	recs[1].First = 10
	if err := Verify(recs, OrderNone); err == nil || !strings.Contains(err.Error(), "DUPLICATE") {
		t.Errorf("OrderNone with a duplicate: %v", err)
	}
}

func TestConfigErrorsMulti(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: ModeStrong, WeakPrefetch: 1000, Targets: []string{"x"}}, "use mode weak"},
		{Config{Mode: ModeWeak, WeakPrefetch: 1, Targets: []string{"x"}}, "between 2 and"},
		{Config{Mode: ModeWeak, WeakPrefetch: -5, Targets: []string{"x"}}, "between 2 and"},
		{Config{Mode: ModeWeak, WeakPrefetch: 1000, Keys: 10, Targets: []string{"x"}}, "one key"},
		{Config{Mode: ModeWeak, WeakPrefetch: 1000, KeyDist: KeyFresh, Targets: []string{"x"}}, "one key"},
		{Config{Mode: ModeWeak, Backend: BackendEtcd, WeakPrefetch: 1000, Targets: []string{"x"}}, "backend ordinal"},
		{Config{Mode: ModeStrong, Backend: BackendEtcd, MultiAddress: true, Targets: []string{"x", "y"}}, "multi-address"},
	} {
		_, err := tt.cfg.WithDefaults()
		var u *UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("WithDefaults(%+v) = %v, want a UsageError containing %q", tt.cfg, err, tt.want)
		}
	}
}

// fakeRow is a row of a made-up comparison: its runs' ids/s per round (0:
// the run failed).
type fakeRow struct {
	name string
	ids  []float64
}

// fakeRows is a comparison of the named Scenarios whose runs measured the
// given ids/s per round.
func fakeRows(cfg CompareConfig, rows ...fakeRow) *Comparison {
	c := &Comparison{Config: cfg, byName: map[string]*ScenarioStats{}}
	for _, row := range rows {
		st := &ScenarioStats{Scenario: Scenarios[slices.IndexFunc(Scenarios, func(s Scenario) bool { return s.Name == row.name })]}
		for _, v := range row.ids {
			if v == 0 {
				st.Runs = append(st.Runs, nil)
			} else {
				st.Runs = append(st.Runs, fakeRun(v))
			}
		}
		c.Stats = append(c.Stats, st)
		c.byName[row.name] = st
	}
	c.summarise()
	return c
}

// strong-multi-64's target is the median of multi / direct over rounds,
// checked against 0.9 in the main table, the multi-address table and the
// target line; weak-prefetch-64's is ≥ 20M ids/s, in the main table.
func TestMarkdownMultiAddress(t *testing.T) {
	t.Parallel()
	cfg := CompareConfig{Cluster: []string{"n1:1", "n2:1", "n3:1"}, Noop: "noop:1", Rounds: 3, Duration: time.Second, Warmup: time.Second,
		Machine: "a test", Command: "go test"}
	for _, tt := range []struct {
		name           string
		multi, direct  []float64
		prefetch       []float64
		ratio          float64
		rounds         string
		verdict        string
		prefetchResult string
	}{
		{"met", []float64{19000, 15000, 16000}, []float64{20000, 15500, 18000}, []float64{25e6, 21e6, 19e6},
			0.95, "0.95 / 0.97 / 0.89", "met: 0.95× strong-leader-64 ≥ 0.90×", "met: 21.00M ≥ 20.00M ids/s"},
		{"missed", []float64{15000, 15000, 16000}, []float64{20000, 15500, 18000}, []float64{15e6, 16e6, 19e6},
			0.89, "0.75 / 0.97 / 0.89", "**missed**: 0.89× strong-leader-64, 1.2% short of 0.90×", "**missed**: 16.00M ids/s, 20.0% short of 20.00M"},
		// A failed round counts in neither the ratio nor its median.
		{"a round failed", []float64{19000, 0, 16000}, []float64{20000, 15500, 18000}, []float64{25e6, 0, 19e6},
			0.92, "0.95 / failed / 0.89", "met: 0.92× strong-leader-64 ≥ 0.90×", "met: 22.00M ≥ 20.00M ids/s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := fakeRows(cfg, fakeRow{"noop-unary-64", []float64{40000, 40000, 40000}}, fakeRow{"strong-multi-64", tt.multi},
				fakeRow{"strong-leader-64", tt.direct}, fakeRow{"weak-prefetch-64", tt.prefetch})
			multi, direct, prefetch := c.byName["strong-multi-64"], c.byName["strong-leader-64"], c.byName["weak-prefetch-64"]
			if math.Abs(multi.PlainRatio-tt.ratio) > 0.005 {
				t.Errorf("multi / direct = %v (rounds %v), want %.2f", multi.PlainRatio, multi.RoundPlainRatios, tt.ratio)
			}
			var md bytes.Buffer
			c.Markdown(&md)
			text := md.String()
			t.Log(text)
			goal := "strong-multi-64 / strong-leader-64 ≥ 0.9 (same run)"
			for _, want := range []string{
				// The main table.
				"| multi-address client: STRONG unary, 64 callers → all 3 nodes (the client finds the leader) | " + human(multi.IDsPerSec) + " |",
				"| " + goal + " | " + tt.verdict + " |",
				"| WEAK through one client with WithWeakPrefetch(100000), 64 callers → all 3 nodes | " + human(prefetch.IDsPerSec) + " |",
				"| — | 0 | ≥ 20M ids/s | " + tt.prefetchResult + " |",
				// The multi-address table.
				"Multi-address client vs the leader's address, same run (issue #14)",
				fmt.Sprintf("| strong-multi-64 | strong-leader-64 | %s | %s | %.2f× | %s |", human(multi.IDsPerSec), human(direct.IDsPerSec), tt.ratio, tt.rounds),
				// The target line.
				"Target of issue #14 (the multi-address client), " + goal + ": " + tt.verdict + ".",
				// The setup and the verification.
				"The multi-address rows (issue #14) call n1:1, n2:1, n3:1 through one client",
				"strong-multi-64 is strong-leader-64 through that client",
				"weak-prefetch-64 adds `client.WithWeakPrefetch(100000)`",
				"latencies are those of 1 call in 64",
				prefetchVerified,
			} {
				if !strings.Contains(text, want) {
					t.Errorf("markdown lacks %q", want)
				}
			}
		})
	}

	// Without its twin the multi-address row says it was not measured
	// and writes no table.
	c := fakeRows(cfg, fakeRow{"noop-unary-64", []float64{40000}}, fakeRow{"strong-multi-64", []float64{30000}})
	var md bytes.Buffer
	c.Markdown(&md)
	text := md.String()
	if !strings.Contains(text, "**missed**: not measured: no round ran both strong-multi-64 and strong-leader-64") ||
		strings.Contains(text, "Multi-address client vs") || strings.Contains(text, "for the WithWeakPrefetch row") {
		t.Errorf("markdown of strong-multi-64 alone:\n%s", text)
	}
}

// Latencies below a microsecond (weak-prefetch-64's) are written in ns,
// and CPU per call below 0.05 µs to a thousandth.
func TestFormatsBelowMicrosecond(t *testing.T) {
	for d, want := range map[time.Duration]string{58: "58 ns", 999: "999 ns", time.Microsecond: "1 µs", 1500 * time.Microsecond: "1.50 ms"} {
		if got := fmtLatency(d); got != want {
			t.Errorf("fmtLatency(%v) = %q, want %q", d, got, want)
		}
	}
	for v, want := range map[float64]string{0.034: "0.034", 0: "0.0", 0.05: "0.1", 12.34: "12.3"} {
		if got := fmtCPU(v); got != want {
			t.Errorf("fmtCPU(%v) = %q, want %q", v, got, want)
		}
	}
}

// BenchmarkPrefetchBookkeeping is what a caller of a WeakPrefetch run
// spends per call besides the call: the order check and the delta
// stream (the clock is read once in PrefetchSampleEvery calls). The
// client's own path is about 30 ns (client BenchmarkWeakPrefetch), so this
// must stay a few ns.
func BenchmarkPrefetchBookkeeping(b *testing.B) {
	var w prefetchWorker
	id := int64(1)
	for i := range b.N {
		id += int64(1 + i%7)
		w.add(0, id, 1)
		if w.calls == 1<<24 {
			w = prefetchWorker{}
			id = 1
		}
	}
}
