package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The metrics pair is strong-leader-64 on two twin clusters, metrics on
// then metrics off, one right after the other, so that the pair sees the
// same moment; both are strong-leader-64 but for the cluster, and the
// mTLS twin still runs right after strong-leader-64.
func TestScenarioNoMetricsTwin(t *testing.T) {
	t.Parallel()
	idx := func(name string) int {
		return slices.IndexFunc(Scenarios, func(s Scenario) bool { return s.Name == name })
	}
	metricsOn, off, main, tls := idx("strong-leader-64-metrics"), idx("strong-leader-64-nometrics"), idx("strong-leader-64"), idx("tls-strong-leader-64")
	if metricsOn < 0 || off != metricsOn+1 || main < 0 || tls != main+1 {
		t.Fatalf("order: strong-leader-64-metrics at %d, strong-leader-64-nometrics at %d, strong-leader-64 at %d, tls-strong-leader-64 at %d; "+
			"want the pair in a row, and the mTLS twin right after strong-leader-64", metricsOn, off, main, tls)
	}
	s, twin, ref := Scenarios[off], Scenarios[metricsOn], Scenarios[main]
	for _, row := range []Scenario{s, twin} {
		if row.Ref != ref.Ref || row.Mode != ref.Mode || row.Conc != ref.Conc || row.Count != ref.Count || row.Key != ref.Key ||
			row.Keys != ref.Keys || row.KeyDist != ref.KeyDist || row.Store != ref.Store {
			t.Errorf("row %+v is not strong-leader-64 (%+v) on another cluster", row, ref)
		}
	}
	if s.Role != RoleLeaderNoMetrics || twin.Role != RoleLeaderMetrics || s.Plain != twin.Name || s.Check == nil {
		t.Errorf("metrics-off row %+v is not checked against its metrics-on twin %+v", s, twin)
	}
	if want := "strong-leader-64-metrics (metrics on) / strong-leader-64-nometrics ≥ 0.95"; !strings.Contains(s.Goal, want) {
		t.Errorf("goal %q lacks %q", s.Goal, want)
	}
}

// fakeRun is a run that measured ids IDs over one second.
func fakeRun(ids float64) *Result {
	return &Result{Calls: int64(ids), IDs: int64(ids), Elapsed: time.Second, P50: time.Millisecond, P99: 5 * time.Millisecond,
		AllCalls: int64(ids)}
}

// fakeComparison is a comparison of the no-op, metrics-off and metrics-on
// rows whose runs measured the given ids/s per round (0: the run failed;
// nil: the row did not run).
func fakeComparison(noop, off, on []float64) *Comparison {
	cfg := CompareConfig{Cluster: []string{"n1:1", "n2:1"}, ClusterNoMetrics: []string{"q1:1", "q2:1"}, ClusterMetrics: []string{"m1:1", "m2:1"}, Noop: "noop:1",
		Rounds: len(noop), Duration: time.Second, Warmup: time.Second, Machine: "a test", Command: "go test"}
	c := &Comparison{Config: cfg, byName: map[string]*ScenarioStats{}}
	for _, row := range []struct {
		name string
		ids  []float64
	}{{"noop-unary-64", noop}, {"strong-leader-64-metrics", on}, {"strong-leader-64-nometrics", off}} {
		if row.ids == nil {
			continue
		}
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

// The ratio is on / off, round by round, its median checked against 0.95
// in the main table, the metrics table and the target line.
func TestMarkdownMetricsOnOff(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name          string
		noop, off, on []float64
		ratio         float64 // median of on / off over rounds
		rounds        string
		verdict       string
	}{
		{"met", []float64{40000, 40000, 40000}, []float64{30000, 20000, 25000}, []float64{29100, 20000, 24000},
			0.97, "0.97 / 1.00 / 0.96", "met: on / off = 0.97 ≥ 0.95"},
		{"missed", []float64{40000, 40000, 40000}, []float64{30000, 20000, 25000}, []float64{27000, 18000, 25000},
			0.90, "0.90 / 0.90 / 1.00", "**missed**: on / off = 0.90, 5.3% short of 0.95"},
		// A failed round counts in neither the ratio nor its median.
		{"a round failed", []float64{40000, 40000, 40000}, []float64{30000, 0, 25000}, []float64{30000, 18000, 25000},
			1.00, "1.00 / failed / 1.00", "met: on / off = 1.00 ≥ 0.95"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := fakeComparison(tt.noop, tt.off, tt.on)
			st := c.byName["strong-leader-64-nometrics"]
			if math.Abs(st.MetricsOnRatio-tt.ratio) > 0.005 {
				t.Errorf("on / off = %v (rounds %v), want %.2f", st.MetricsOnRatio, st.RoundMetricsOnRatios, tt.ratio)
			}
			var md bytes.Buffer
			c.Markdown(&md)
			text := md.String()
			t.Log(text)
			goal := "strong-leader-64-metrics (metrics on) / strong-leader-64-nometrics ≥ 0.95 (same run)"
			on, off := c.byName["strong-leader-64-metrics"], st
			for _, want := range []string{
				// The main table, the metrics-off row right after its twin.
				"| metrics on, twin cluster: STRONG unary, 64 callers → leader | " + human(on.IDsPerSec) + " |",
				"| metrics off, twin cluster: STRONG unary, 64 callers → leader | " + human(off.IDsPerSec) + " |",
				"| " + goal + " | " + tt.verdict + " |",
				// The metrics table.
				"Metrics on vs off, same run (issue #13)",
				fmt.Sprintf("| strong-leader-64-metrics | strong-leader-64-nometrics | %s | %s | %.2f× | %s |", human(on.IDsPerSec), human(off.IDsPerSec), tt.ratio, tt.rounds),
				// The target line.
				"Target of issue #13 (the cost of metrics), " + goal + ": " + tt.verdict + ".",
				// The setup.
				"The metrics-off row (strong-leader-64-nometrics) runs against q1:1, q2:1",
				"strong-leader-64-metrics, runs next to it (before it in odd rounds, after it in even ones) on m1:1, m2:1",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("markdown lacks %q", want)
				}
			}
		})
	}
}

// Without its twin (--only, or a failed leader lookup every round) the
// metrics-off row says it was not measured and writes no metrics table.
func TestMarkdownMetricsOffAlone(t *testing.T) {
	t.Parallel()
	c := fakeComparison([]float64{40000}, []float64{30000}, nil)
	var md bytes.Buffer
	c.Markdown(&md)
	text := md.String()
	if !strings.Contains(text, "**missed**: not measured: no round ran both strong-leader-64-metrics and strong-leader-64-nometrics") {
		t.Errorf("markdown does not say the ratio was not measured:\n%s", text)
	}
	if strings.Contains(text, "Metrics on vs off") {
		t.Errorf("markdown has a metrics table without the metrics-on row:\n%s", text)
	}
}

// Compare runs the metrics pair against the leaders of ClusterMetrics
// and ClusterNoMetrics (in-process nodes standing in for them), one right
// after the other, measures the CPU of both clusters' nodes, and leaves
// the row out without ClusterNoMetrics.
func TestCompareNoMetrics(t *testing.T) {
	t.Parallel()
	node, quiet, noopAddr := insecureSingle(t), insecureSingle(t), startNoop(t)
	only := []string{"noop-unary-64", "strong-leader-64-metrics", "strong-leader-64-nometrics"}
	var log bytes.Buffer
	cfg := CompareConfig{
		// The no-op server stands in for the followers.
		Cluster: []string{node, noopAddr}, ClusterMetrics: []string{node, noopAddr}, ClusterNoMetrics: []string{quiet, noopAddr}, Noop: noopAddr, Rounds: 2,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Only: only, Log: &log, Machine: "a test", Command: "go test",
		PIDs: map[string]int{node: os.Getpid(), quiet: os.Getpid(), noopAddr: os.Getpid()},
	}
	cmp, err := Compare(context.Background(), cfg)
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
	if want := []string{"noop-unary-64", "strong-leader-64-metrics", "strong-leader-64-nometrics"}; !slices.Equal(names, want) {
		t.Fatalf("rows %v, want %v", names, want)
	}
	for _, want := range []string{"metrics-off cluster: leader " + quiet, "metrics-on twin cluster: leader " + node} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
	off, on := cmp.byName["strong-leader-64-nometrics"], cmp.byName["strong-leader-64-metrics"]
	for st, want := range map[*ScenarioStats]string{off: quiet, on: node} {
		if len(st.Runs) != 2 || st.Runs[0] == nil || st.Runs[0].Config.Targets[0] != want || len(st.TargetCPU) != 2 || len(st.OthersCPU) != 2 {
			t.Errorf("%s: runs %v, CPU %v / %v; want two runs against %s, with the CPU of its node and the others",
				st.Scenario.Name, st.Runs, st.TargetCPU, st.OthersCPU, want)
		}
	}
	if len(off.MetricsOnRatios) != 2 || math.IsNaN(off.RoundMetricsOnRatios[0]) || off.MetricsOnRatio <= 0 {
		t.Errorf("on / off ratios %v (per round %v), want one per round", off.MetricsOnRatios, off.RoundMetricsOnRatios)
	}
	for r := range 2 {
		if want := on.Runs[r].IDsPerSec() / off.Runs[r].IDsPerSec(); math.Abs(off.RoundMetricsOnRatios[r]-want) > 1e-9 {
			t.Errorf("round %d: on / off %v, want %v", r+1, off.RoundMetricsOnRatios[r], want)
		}
	}
	var md bytes.Buffer
	cmp.Markdown(&md)
	text := md.String()
	t.Log(text)
	verdict := "**missed**: "
	if off.MetricsOnRatio >= 0.95 {
		verdict = "met: "
	}
	for _, want := range []string{
		"Metrics on vs off, same run (issue #13)",
		fmt.Sprintf("| strong-leader-64-metrics | strong-leader-64-nometrics | %s | %s | %.2f× |", human(on.IDsPerSec), human(off.IDsPerSec), off.MetricsOnRatio),
		"(same run): " + verdict + fmt.Sprintf("on / off = %.2f", off.MetricsOnRatio),
		"For strong-leader-64-nometrics and strong-leader-64-metrics, \"other ordinal nodes\" are the other nodes of the metrics-off and metrics-on twin clusters.",
		"| strong-leader-64-nometrics |", // CPU and per-round tables
		"strong-leader-64-nometrics ordinal-bench run --mode strong --targets " + quiet + " --concurrency 64",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}

	// Without ClusterNoMetrics the row is left out, even when --only
	// names it.
	cfg.ClusterNoMetrics, cfg.Only, cfg.Rounds, cfg.PIDs = nil, []string{"strong-leader-64-nometrics"}, 1, nil
	if _, err := Compare(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "no scenario selected") {
		t.Errorf("Compare --only strong-leader-64-nometrics without its cluster: %v; want no scenario selected", err)
	}
}

// The pairs whose targets compare two rows close to 1 swap places every
// other round, so that the place in a round, which biases a row on a
// shared machine, falls on each row equally over an even number of
// rounds; every other row keeps its place.
func TestRoundOrderAlternates(t *testing.T) {
	t.Parallel()
	c := &Comparison{Config: CompareConfig{Rounds: 4}, byName: map[string]*ScenarioStats{}}
	for _, s := range Scenarios {
		st := &ScenarioStats{Scenario: s}
		c.Stats = append(c.Stats, st)
		c.byName[s.Name] = st
	}
	names := func(order []*ScenarioStats) []string {
		out := make([]string, len(order))
		for i, st := range order {
			out[i] = st.Scenario.Name
		}
		return out
	}
	odd := names(c.Stats)
	swapped := map[string]string{}
	for i, s := range Scenarios {
		if !s.Alternate {
			continue
		}
		j := slices.Index(odd, s.Plain)
		if j != i-1 && j != i+1 {
			t.Fatalf("%s alternates with %s, at %d, not next to it (%d)", s.Name, s.Plain, j, i)
		}
		swapped[s.Name], swapped[s.Plain] = s.Plain, s.Name
	}
	for _, pair := range [][2]string{{"strong-leader-64-nometrics", "strong-leader-64-metrics"}, {"sf-strong-leader-64", "strong-leader-64"}} {
		if swapped[pair[0]] != pair[1] {
			t.Errorf("%s does not alternate with %s", pair[0], pair[1])
		}
	}
	for round := 1; round <= 4; round++ {
		got := names(c.roundOrder(round))
		for i, name := range odd {
			want := name
			if round%2 == 0 && swapped[name] != "" {
				want = swapped[name]
			}
			if got[i] != want {
				t.Errorf("round %d, place %d: %s, want %s", round, i, got[i], want)
			}
		}
	}
	// The mTLS row keeps running right after strong-leader-64 in the odd
	// rounds, and the 3-node row stays in the round right before it.
	if i := slices.Index(odd, "tls-strong-leader-64"); i < 1 || odd[i-1] != "strong-leader-64" {
		t.Errorf("tls-strong-leader-64 is not right after strong-leader-64 in odd rounds: %v", odd)
	}
}
