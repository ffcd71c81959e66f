package bench

import (
	"bytes"
	"context"
	"errors"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/bench/noop"
)

// Each run lasts about a second: the tests run under the race detector in
// make test and must stay fast.
const (
	testDuration = 700 * time.Millisecond
	testWarmup   = 300 * time.Millisecond
)

func startNoop(t *testing.T) string {
	t.Helper()
	l, err := noop.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l.Addr()
}

func testConfig(mode Mode, targets ...string) Config {
	cfg := Config{Mode: mode, Targets: targets, Concurrency: 8, Duration: testDuration, Warmup: testWarmup, Keys: 2, Key: "k-" + string(mode)}
	if mode == ModeStream {
		cfg.Concurrency = 64
	}
	return cfg
}

// runAndCheck runs cfg and fails unless calls succeeded, none failed and
// the verifier passed.
func runAndCheck(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run(%s): %v", cfg.Mode, err)
	}
	var out bytes.Buffer
	res.Print(&out)
	t.Logf("%s", out.String())
	if res.VerifyErr != nil {
		t.Errorf("verification failed: %v", res.VerifyErr)
	}
	if res.Calls == 0 || res.IDs != res.Calls*res.Config.Count {
		t.Errorf("calls %d, ids %d: want some calls of %d ids each", res.Calls, res.IDs, res.Config.Count)
	}
	if n := res.ErrorCount(); n != 0 {
		t.Errorf("%d calls failed: %s", n, res.errorSummary())
	}
	if res.Verified < int(res.Calls) || res.P50 <= 0 || res.P99 < res.P50 || res.P999 < res.P99 || res.Max < res.P999 {
		t.Errorf("verified %d of %d calls; latencies p50 %v p99 %v p999 %v max %v", res.Verified, res.Calls, res.P50, res.P99, res.P999, res.Max)
	}
	if !strings.Contains(res.Summary(), "verified=ok") || !strings.HasPrefix(res.Summary(), "RESULT ") {
		t.Errorf("summary %q", res.Summary())
	}
	return res
}

func TestRunAgainstNoop(t *testing.T) {
	t.Parallel()
	addr := startNoop(t)
	for _, mode := range []Mode{ModeStrong, ModeWeak, ModeBatch, ModeStream} {
		t.Run(string(mode), func(t *testing.T) {
			runAndCheck(t, testConfig(mode, addr))
		})
	}
}

func TestRunAgainstNode(t *testing.T) {
	t.Parallel()
	addr := insecureSingle(t)
	for _, mode := range []Mode{ModeStrong, ModeWeak, ModeBatch, ModeStream} {
		t.Run(string(mode), func(t *testing.T) {
			res := runAndCheck(t, testConfig(mode, addr))
			if want := map[Mode]Order{ModeWeak: OrderPerTarget}[mode]; res.Order != want {
				t.Errorf("order %v, want %v", res.Order, want)
			}
		})
	}
}

// faultyServer is a Sequencer that breaks its promises on purpose.
type faultyServer struct {
	ordinalv1.UnimplementedSequencerServiceServer
	n     atomic.Int64
	fault string // "duplicate" or "regress"
}

func (s *faultyServer) GetNextId(context.Context, *ordinalv1.GetNextIdRequest) (*ordinalv1.GetNextIdResponse, error) {
	n := s.n.Add(1)
	id := n + 1<<40
	if n%200 == 0 {
		switch s.fault {
		case "duplicate":
			id-- // the previous caller's ID, again
		case "regress":
			id = n / 200 // far below IDs already returned, and unique
		}
	}
	return &ordinalv1.GetNextIdResponse{NextId: id}, nil
}

// TestRunDetectsBrokenServer runs the whole pipeline against servers that
// hand out a duplicate or a regressing ID now and then: the verifier must
// catch them.
func TestRunDetectsBrokenServer(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"duplicate", "regress"} {
		t.Run(fault, func(t *testing.T) {
			addr := serveFaulty(t, &faultyServer{fault: fault})
			cfg := testConfig(ModeStrong, addr)
			cfg.Keys = 1
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"duplicate": "DUPLICATE", "regress": "ORDER"}[fault]
			if res.VerifyErr == nil || !strings.Contains(res.VerifyErr.Error(), want) {
				t.Fatalf("VerifyErr = %v, want one containing %q", res.VerifyErr, want)
			}
			if !strings.Contains(res.Summary(), "verified=FAILED") {
				t.Errorf("summary %q does not say FAILED", res.Summary())
			}
		})
	}
}

func serveFaulty(t *testing.T, s ordinalv1.SequencerServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	ordinalv1.RegisterSequencerServiceServer(g, s)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func TestRunCountsErrors(t *testing.T) {
	t.Parallel()
	addr := startNoop(t)
	cfg := testConfig(ModeStrong, addr)
	cfg.Duration, cfg.Warmup = 200*time.Millisecond, -1

	// Nothing listens on port 1: calls to it fail, and Run counts them.
	cfg.Targets = []string{addr, "127.0.0.1:1"}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run with one dead target: %v", err)
	}
	if res.Errors[codes.Unavailable] == 0 {
		t.Errorf("errors %v, want Unavailable from the dead target", res.Errors)
	}
	cfg.Targets = []string{"127.0.0.1:1"}
	if _, err := Run(context.Background(), cfg); !errors.Is(err, ErrNoCalls) {
		t.Errorf("Run against nothing: %v, want ErrNoCalls", err)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: "fast", Targets: []string{"x"}}, "unknown mode"},
		{Config{Mode: ModeStrong}, "no targets"},
		{Config{Mode: ModeStream, Backend: BackendEtcd, Targets: []string{"x"}}, "one ID per call"},
		{Config{Mode: ModeStrong, Backend: "redis", Targets: []string{"x"}}, "unknown backend"},
		{Config{Mode: ModeBatch, Count: -1, Targets: []string{"x"}}, "count"},
		{Config{Mode: ModeStrong, Keys: MaxKeys + 1, Targets: []string{"x"}}, "keys"},
		{Config{Mode: ModeStrong, KeyDist: "uniform", Targets: []string{"x"}}, "unknown key distribution"},
		{Config{Mode: ModeStrong, KeyDist: KeyFresh, Keys: 10, Targets: []string{"x"}}, "fresh"},
	}
	for _, tt := range tests {
		_, err := Run(context.Background(), tt.cfg)
		var u *UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(%+v) = %v, want a UsageError containing %q", tt.cfg, err, tt.want)
		}
	}
}

// A zero Warmup means the default unless NoWarmup says none; a negative
// one means none too.
func TestConfigWarmup(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		warmup   time.Duration
		noWarmup bool
		want     time.Duration
	}{
		{0, false, DefaultWarmup},
		{0, true, 0},
		{-1, false, 0},
		{300 * time.Millisecond, false, 300 * time.Millisecond},
		{300 * time.Millisecond, true, 0},
	} {
		cfg, err := Config{Mode: ModeStrong, Targets: []string{"x"}, Warmup: tt.warmup, NoWarmup: tt.noWarmup}.WithDefaults()
		if err != nil || cfg.Warmup != tt.want {
			t.Errorf("Warmup %v, NoWarmup %v: WithDefaults gives %v, %v; want %v", tt.warmup, tt.noWarmup, cfg.Warmup, err, tt.want)
		}
	}
}

func TestFailoverWithoutKill(t *testing.T) {
	t.Parallel()
	addr := insecureSingle(t)
	killed := 0
	res, err := Failover(context.Background(), FailoverConfig{KillPID: 12345, Targets: []string{addr, addr},
		Kill: func(pid int) error { killed = pid; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if killed != 12345 || res.FirstOK <= 0 || res.AllOK < res.FirstOK || res.Before < 1 {
		t.Errorf("killed %d, result %+v", killed, res)
	}
	var out bytes.Buffer
	res.Print(&out)
	if !strings.Contains(out.String(), "RESULT label=failover") {
		t.Errorf("output %q", out.String())
	}
}

func TestCompareAndMarkdown(t *testing.T) {
	t.Parallel()
	node, noopAddr := insecureSingle(t), startNoop(t)
	var log bytes.Buffer
	cmp, err := Compare(context.Background(), CompareConfig{
		// The no-op server stands in for a follower: findRoles takes any
		// address that is not the leader's.
		Cluster: []string{node, noopAddr}, Noop: noopAddr, Rounds: 2,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Only: []string{"noop-unary-1", "strong-leader-1", "weak-follower-64", "noop-unary-64"},
		Log:  &log, Machine: "a test", Command: "go test",
		// Both servers run in this process; good enough to exercise the
		// CPU accounting.
		PIDs: map[string]int{node: os.Getpid(), noopAddr: os.Getpid()},
	})
	if err != nil {
		t.Fatalf("Compare: %v\n%s", err, log.String())
	}
	if len(cmp.Failures) > 0 {
		t.Fatalf("failures: %v", cmp.Failures)
	}
	var md bytes.Buffer
	cmp.Markdown(&md)
	text := md.String()
	t.Log(text)
	for _, want := range []string{"| scenario | ids/s", "STRONG unary, 1 caller → leader", "p99 ≤ 0.5 ms", "round 2", "all passed.", "CPU time per call", "| strong-leader-1 |",
		"--mode strong --targets " + node + " --concurrency 1"} {
		if !strings.Contains(text, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	for _, st := range cmp.Stats {
		if len(st.Runs) != 2 || st.IDsPerSec <= 0 || st.Scenario.Ref != "" && len(st.Ratios) != 2 {
			t.Errorf("%s: %d runs, %v ids/s, ratios %v", st.Scenario.Name, len(st.Runs), st.IDsPerSec, st.Ratios)
		}
	}
}

// Compare runs the many-key rows and the 5-node row against an in-process
// node (standing in for both clusters) and reports entries per new key.
func TestCompareManyKeys(t *testing.T) {
	t.Parallel()
	node, noopAddr := insecureSingle(t), startNoop(t)
	var log bytes.Buffer
	only := []string{"noop-unary-64", "strong-leader-64", "strong-leader-64-5nodes", "fresh-strong-leader-64", "fresh-weak-follower-64",
		"keys100k-strong-leader-64", "zipf100k-strong-leader-64", "zipf100k-weak-follower-64", "noop-unary-1", "strong-leader-1", "fresh-strong-leader-1"}
	cmp, err := Compare(context.Background(), CompareConfig{
		// The no-op server stands in for a follower, the node for the
		// 5-node cluster.
		Cluster: []string{node, noopAddr}, Cluster5: []string{node}, Noop: noopAddr, Rounds: 1,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Only: only, Log: &log, Machine: "a test", Command: "go test",
	})
	if err != nil {
		t.Fatalf("Compare: %v\n%s", err, log.String())
	}
	if len(cmp.Failures) > 0 {
		t.Fatalf("failures: %v\n%s", cmp.Failures, log.String())
	}
	if len(cmp.Stats) != len(only) {
		t.Fatalf("%d rows ran; want %d", len(cmp.Stats), len(only))
	}
	var md bytes.Buffer
	cmp.Markdown(&md)
	text := md.String()
	t.Log(text)
	for _, want := range []string{
		"| a new key per call: STRONG unary, 64 callers → leader |", "≥ 0.5× no-op and ≥ 2× etcd", "etcd-64 not measured",
		"| 100,000 keys, Zipf: STRONG unary, 64 callers → leader |", "≥ 0.6× no-op",
		"p99 ≤ 1.5× strong-leader-1's", "× strong-leader-1's",
		"Raft entries per call", "**entries per new key**", "≤ 0.1 per new key",
		"Quorum size", "| strong-leader-64-5nodes | strong-leader-64 |", "× strong-leader-64 (3 nodes, same round)",
		"The many-key rows", "The 5-node row runs against " + node,
		"--key-dist fresh --duration", "--keys 100000 --key-dist zipf", "--keys 100000 --duration",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	for _, name := range []string{"fresh-strong-leader-64", "fresh-strong-leader-1", "keys100k-strong-leader-64"} {
		st := cmp.byName[name]
		if len(st.EntriesPerCall) != 1 || st.EntriesPerCall[0] <= 0 || st.EntriesPerCall[0] > 1.5 {
			t.Errorf("%s: entries per call %v; want one figure, above 0 (the calls reserve) and about 1 at most", name, st.EntriesPerCall)
		}
		if !regexp.MustCompile(`\| ` + name + ` \| [0-9]+ \| [0-9]+ \| [0-9]+\.[0-9]{4} \|`).MatchString(text) {
			t.Errorf("the entries table has no figure for %s", name)
		}
	}
	if st := cmp.byName["fresh-strong-leader-64"]; st.Runs[0].Keys != st.Runs[0].AllCalls || st.Runs[0].Config.KeyDist != KeyFresh {
		t.Errorf("fresh row: %d keys over %d calls, dist %s", st.Runs[0].Keys, st.Runs[0].AllCalls, st.Runs[0].Config.KeyDist)
	}
	if st := cmp.byName["strong-leader-64-5nodes"]; len(st.PlainRatios) != 1 {
		t.Errorf("5-node row: ratios to the 3-node row %v", st.PlainRatios)
	}
}

func TestProcessCPU(t *testing.T) {
	t.Parallel()
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	} // burn some CPU
	d, err := ProcessCPU(os.Getpid())
	if err != nil || d <= 0 {
		t.Errorf("ProcessCPU(self) = %v, %v; want a positive duration", d, err)
	}
	if _, err := ProcessCPU(0); err == nil {
		t.Error("ProcessCPU(0) succeeded")
	}
}

// A worker's compact record expands to the same Records a caller making
// those calls would have written out in full, across chunk boundaries and
// failures, whichever way keys are picked.
func TestWorkerRecords(t *testing.T) {
	const count, target = 5, 2
	for _, cfg := range []Config{
		{Keys: 3, KeyDist: KeyCycle, Concurrency: 4},
		{Keys: 1, KeyDist: KeyFresh, Concurrency: 4},
		{Keys: 1000, KeyDist: KeyZipf, Concurrency: 4, Seed: 7},
	} {
		t.Run(string(cfg.KeyDist), func(t *testing.T) {
			const caller = 1
			var w worker
			var want []Record
			seq := newKeySeq(cfg, caller)
			now, key := int64(100), seq.next()
			w.restart(now, 0)
			for i := range 5000 {
				start := now
				now += int64(1 + i%7)
				callKey := key
				key = seq.next()
				if i%997 == 500 || i%1999 == 900 || i%1999 == 901 { // failures, then a pause before the next call
					w.fail(status.Error(codes.Unavailable, "down"))
					now += 1000
					w.restart(now, seq.draws-1)
					continue
				}
				first := int64(10 * (i + 1))
				w.record(now, first)
				want = append(want, Record{Start: start, End: now, First: first, Count: count, Target: target, Key: callKey})
			}
			if w.n != len(want) || w.errors[codes.Unavailable] != 11 {
				t.Fatalf("worker counted %d calls and errors %v; want %d calls, 11 Unavailable", w.n, w.errors, len(want))
			}
			got := w.appendTo([]Record{{First: -1}}, count, target, newKeySeq(cfg, caller))
			if len(got) != len(want)+1 || got[0].First != -1 {
				t.Fatalf("appendTo returned %d records; want the 1 given plus %d", len(got), len(want))
			}
			for i, r := range got[1:] {
				if r != want[i] {
					t.Fatalf("record %d is %+v; want %+v", i, r, want[i])
				}
			}
		})
	}
}

// Fresh keys never repeat: not within a caller, not across callers, not
// across runs (the nonce), and their names say so too.
func TestKeySeqFresh(t *testing.T) {
	cfg, err := Config{Mode: ModeStrong, Targets: []string{"x"}, Concurrency: 7, Key: "f", KeyDist: KeyFresh}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	names := cfg.keyNames()
	seen := map[uint64]bool{}
	seenName := map[string]bool{}
	var buf []byte
	for c := range cfg.Concurrency {
		seq := newKeySeq(cfg, c)
		for range 3000 {
			k := seq.next()
			name := names.name(k, &buf)
			if seen[k] || seenName[name] {
				t.Fatalf("caller %d drew key %d (%q) again", c, k, name)
			}
			seen[k], seenName[name] = true, true
		}
	}
	if other := cfg.keyNames(); other.prefix == names.prefix || !strings.HasPrefix(names.prefix, "f-") {
		t.Errorf("two runs' fresh prefixes: %q and %q; want different ones, starting with the key", names.prefix, other.prefix)
	}
}

// Zipf keys stay among the Keys keys, are skewed as ZipfS says (key 0 the
// most popular), differ between callers and repeat for the same seed.
func TestKeySeqZipf(t *testing.T) {
	const n, draws = 100_000, 200_000
	cfg := Config{Keys: n, KeyDist: KeyZipf, Concurrency: 64, Seed: 3}
	counts := make([]int, n)
	a, b, again := newKeySeq(cfg, 0), newKeySeq(cfg, 1), newKeySeq(cfg, 0)
	same := 0
	for range draws {
		k := a.next()
		if k >= n {
			t.Fatalf("drew key %d of %d", k, n)
		}
		counts[k]++
		if k2 := again.next(); k2 != k {
			t.Fatalf("the same seed and caller drew %d, then %d", k, k2)
		}
		if b.next() == k {
			same++
		}
	}
	sorted := slices.Sorted(slices.Values(counts))
	slices.Reverse(sorted)
	top1pct := 0
	for _, c := range sorted[:n/100] {
		top1pct += c
	}
	distinct := 0
	for _, c := range counts {
		if c > 0 {
			distinct++
		}
	}
	t.Logf("key 0: %.1f%% of draws; top 1%% of keys: %.1f%%; keys drawn at least once: %d; callers 0 and 1 drew the same key %d times",
		100*float64(counts[0])/draws, 100*float64(top1pct)/draws, distinct, same)
	// (k+1)^-1.1 over 100,000 keys: key 0 about 13.5%, the top 1% about 75%.
	if share := float64(counts[0]) / draws; share < 0.11 || share > 0.16 || counts[0] != sorted[0] {
		t.Errorf("key 0 has %.3f of the draws (the most: %v); want about 0.135, the most", share, counts[0] == sorted[0])
	}
	if share := float64(top1pct) / draws; share < 0.7 || share > 0.8 {
		t.Errorf("the top 1%% of keys have %.3f of the draws; want about 0.75", share)
	}
	if same > draws/5 {
		t.Errorf("callers 0 and 1 drew the same key %d times of %d: not independent sources", same, draws)
	}
}

// Cycling callers start spread over the keys and go through them in turn.
func TestKeySeqCycle(t *testing.T) {
	cfg := Config{Keys: 100_000, KeyDist: KeyCycle, Concurrency: 64}
	for _, c := range []int{0, 1, 63} {
		seq := newKeySeq(cfg, c)
		start := uint64(c) * 100_000 / 64
		for i := range uint64(200_000) {
			if k := seq.next(); k != (start+i)%100_000 {
				t.Fatalf("caller %d, call %d: key %d; want %d", c, i, k, (start+i)%100_000)
			}
		}
	}
	seq := newKeySeq(Config{Keys: 1, KeyDist: KeyCycle, Concurrency: 3}, 2)
	for range 5 {
		if k := seq.next(); k != 0 {
			t.Fatalf("one key: drew %d", k)
		}
	}
}

// keyServer hands out IDs from one counter, remembers the key each was
// handed out for, and fails every 50th call.
type keyServer struct {
	ordinalv1.UnimplementedSequencerServiceServer
	n    atomic.Int64
	mu   sync.Mutex
	keys map[int64]string
}

func (s *keyServer) GetNextId(_ context.Context, req *ordinalv1.GetNextIdRequest) (*ordinalv1.GetNextIdResponse, error) {
	id := s.n.Add(1)
	if id%50 == 0 {
		return nil, status.Error(codes.Unavailable, "every 50th call fails")
	}
	s.mu.Lock()
	s.keys[id] = req.GetKey()
	s.mu.Unlock()
	return &ordinalv1.GetNextIdResponse{NextId: id}, nil
}

// The records of a run carry the key each call asked for, with every key
// distribution and with failed calls in between: the server's own account
// of which key each ID went to is the judge.
func TestRecordsCarryTheKey(t *testing.T) {
	t.Parallel()
	for _, dist := range []KeyDist{KeyCycle, KeyFresh, KeyZipf} {
		t.Run(string(dist), func(t *testing.T) {
			srv := &keyServer{keys: map[int64]string{}}
			addr := serveFaulty(t, srv)
			cfg := testConfig(ModeStrong, addr)
			cfg.KeyDist, cfg.Keys, cfg.Key = dist, 1000, "rk"
			if dist == KeyFresh {
				cfg.Keys = 0
			}
			res, records, names, err := run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.VerifyErr != nil || res.Errors[codes.Unavailable] == 0 || len(records) < 100 {
				t.Fatalf("verify %v, errors %v, %d records; want a verified run with some failures", res.VerifyErr, res.Errors, len(records))
			}
			distinct := map[uint64]bool{}
			var buf []byte
			for _, r := range records {
				srv.mu.Lock()
				want, ok := srv.keys[r.First]
				srv.mu.Unlock()
				if got := names.name(r.Key, &buf); !ok || got != want {
					t.Fatalf("the call that got ID %d is recorded with key %q; the server handed it out for %q", r.First, got, want)
				}
				distinct[r.Key] = true
			}
			switch {
			case dist == KeyFresh && (len(distinct) != len(records) || res.Keys != res.AllCalls):
				t.Errorf("fresh: %d distinct keys over %d calls, Keys %d, AllCalls %d", len(distinct), len(records), res.Keys, res.AllCalls)
			case dist != KeyFresh && (len(distinct) < 10 || res.Keys != 1000):
				t.Errorf("%s: %d distinct keys, Keys %d", dist, len(distinct), res.Keys)
			}
			if !strings.Contains(res.Summary(), "key_dist="+string(dist)) {
				t.Errorf("summary %q", res.Summary())
			}
		})
	}
}

// BenchmarkCallerBookkeeping is what a caller spends per call besides the
// call itself: drawing the key, naming it and recording the call. "old"
// is the loop before key distributions (a uint16 key cycling through the
// names, for comparison).
func BenchmarkCallerBookkeeping(b *testing.B) {
	const n = 100_000
	b.Run("old", func(b *testing.B) {
		names := make([]string, n)
		var w worker
		w.restart(0, 0)
		k := 0
		var sink string
		for i := range b.N {
			sink = names[k]
			if k++; k == n {
				k = 0
			}
			w.record(int64(i), int64(i))
			if w.n == 1<<20 {
				w = worker{}
			}
		}
		_ = sink
	})
	for _, dist := range []KeyDist{KeyCycle, KeyFresh, KeyZipf} {
		b.Run(string(dist), func(b *testing.B) {
			cfg := Config{Key: "bench", Keys: n, KeyDist: dist, Concurrency: 64}
			if dist == KeyFresh {
				cfg.Keys = 1
			}
			names := cfg.keyNames()
			seq := newKeySeq(cfg, 5)
			var w worker
			var buf []byte
			k := seq.next()
			w.restart(0, 0)
			var sink string
			for i := range b.N {
				sink = names.name(k, &buf)
				k = seq.next()
				w.record(int64(i), int64(i))
				if w.n == 1<<20 {
					w = worker{}
				}
			}
			_ = sink
		})
	}
}

// insecureSingle starts a single node in development mode (plain gRPC, no
// credentials) and returns its address: these tests are about the load
// generator and its verifier, and the no-op ceiling beside it is plain
// gRPC too; make bench measures the secured cluster.
func insecureSingle(t *testing.T) string {
	t.Helper()
	return testcluster.NewWithOptions(t, 1, testcluster.Options{Insecure: true}).Node("n1").GRPCAddr
}
