package bench

import (
	"bytes"
	"context"
	"errors"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"net"
	"os"
	"strings"
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
	ordinalv1.UnimplementedSequencerServer
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

func serveFaulty(t *testing.T, s ordinalv1.SequencerServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	ordinalv1.RegisterSequencerServer(g, s)
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
		{Config{Mode: ModeStrong, Keys: 70000, Targets: []string{"x"}}, "keys"},
	}
	for _, tt := range tests {
		_, err := Run(context.Background(), tt.cfg)
		var u *UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(%+v) = %v, want a UsageError containing %q", tt.cfg, err, tt.want)
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
// failures.
func TestWorkerRecords(t *testing.T) {
	const nkeys, count, target = 3, 5, 2
	var w worker
	var want []Record
	now, key := int64(100), 1
	w.restart(now, key)
	for i := range 5000 {
		start := now
		now += int64(1 + i%7)
		callKey := key
		if key++; key == nkeys {
			key = 0
		}
		if i%997 == 500 { // a failure, then a pause before the next call
			w.fail(status.Error(codes.Unavailable, "down"))
			now += 1000
			w.restart(now, key)
			continue
		}
		first := int64(10 * (i + 1))
		w.record(now, first)
		want = append(want, Record{Start: start, End: now, First: first, Count: count, Target: target, Key: uint16(callKey)})
	}
	if w.n != len(want) || w.errors[codes.Unavailable] != 5 {
		t.Fatalf("worker counted %d calls and errors %v; want %d calls, 5 Unavailable", w.n, w.errors, len(want))
	}
	got := w.appendTo([]Record{{First: -1}}, count, target, nkeys)
	if len(got) != len(want)+1 || got[0].First != -1 {
		t.Fatalf("appendTo returned %d records; want the 1 given plus %d", len(got), len(want))
	}
	for i, r := range got[1:] {
		if r != want[i] {
			t.Fatalf("record %d is %+v; want %+v", i, r, want[i])
		}
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
