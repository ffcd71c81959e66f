package main

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// startNoopProc runs `ordinal-bench serve-noop` on a free port and returns
// its address once it says it listens.
func startNoopProc(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, benchBin, "serve-noop", "--addr", "127.0.0.1:0")
	cmd.Env = testEnv()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		const prefix = "no-op sequencer listening on "
		if !strings.HasPrefix(s, prefix) {
			t.Fatalf("serve-noop printed %q, want %q...", s, prefix)
		}
		return strings.TrimSpace(strings.TrimPrefix(s, prefix))
	case <-time.After(startTimeout):
		t.Fatal("serve-noop did not say where it listens")
		return ""
	}
}

func TestBenchAgainstNoop(t *testing.T) {
	t.Parallel()
	addr := startNoopProc(t)
	for _, mode := range []string{"strong", "weak", "batch", "stream"} {
		out := mustRun(t, "run", "--mode", mode, "--targets", addr, "--duration", "500ms", "--warmup", "100ms",
			"--concurrency", "4", "--label", "t-"+mode)
		var result string
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "RESULT ") {
				result = line
			}
		}
		for _, want := range []string{"label=t-" + mode, "mode=" + mode, "targets=" + addr, "conc=4", "errors=0", "verified=ok", "ids_per_s=", "p999_us="} {
			if !strings.Contains(result, want) {
				t.Errorf("mode %s: RESULT line %q lacks %q\noutput:\n%s", mode, result, want, out)
			}
		}
	}
}

// --multi-address and --weak-prefetch reach the run, its report and its
// RESULT line; the no-op server serves GetNextIds, so a prefetching client
// takes its blocks from it.
func TestBenchMultiAddressAndPrefetch(t *testing.T) {
	t.Parallel()
	addr := startNoopProc(t)
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--mode", "strong", "--multi-address"},
			[]string{"callers sharing one client over " + addr, "real-time order (STRONG)", "multi_address=true weak_prefetch=0"}},
		{[]string{"--mode", "weak", "--multi-address", "--weak-prefetch", "1000"},
			[]string{"with WithWeakPrefetch(1000)", "(of 1 call in 64, timed on its own)", "each caller's IDs increasing", "multi_address=true weak_prefetch=1000"}},
		{[]string{"--mode", "weak", "--weak-prefetch", "500", "--count", "3"},
			[]string{"callers over " + addr + " with WithWeakPrefetch(500)", "count=3", "multi_address=false weak_prefetch=500"}},
	} {
		out := mustRun(t, append([]string{"run", "--targets", addr, "--duration", "300ms", "--warmup", "100ms", "--concurrency", "4"}, tt.args...)...)
		for _, want := range append(tt.want, "verified=ok", "errors=0") {
			if !strings.Contains(out, want) {
				t.Errorf("ordinal-bench run %s: output lacks %q:\n%s", strings.Join(tt.args, " "), want, out)
			}
		}
	}
}

func TestBenchKeyDists(t *testing.T) {
	t.Parallel()
	addr := startNoopProc(t)
	for _, args := range [][]string{{"--key-dist", "fresh"}, {"--key-dist", "zipf", "--keys", "1000", "--seed", "3"}, {"--keys", "100000"}} {
		out := mustRun(t, append([]string{"run", "--targets", addr, "--duration", "300ms", "--warmup", "100ms", "--concurrency", "4"}, args...)...)
		dist := "cycle"
		if args[0] == "--key-dist" {
			dist = args[1]
		}
		if !strings.Contains(out, "key_dist="+dist) || !strings.Contains(out, "verified=ok") {
			t.Errorf("ordinal-bench run %s: output lacks key_dist=%s or verified=ok:\n%s", strings.Join(args, " "), dist, out)
		}
	}
}

func TestBenchErrors(t *testing.T) {
	t.Parallel()
	unused := testutil.FreeAddr(t)
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"run", "--mode", "fast"}, 2, `run: unknown mode "fast"`},
		{[]string{"run", "--backend", "etcd", "--mode", "stream"}, 2, "run: backend etcd takes one ID per call"},
		{[]string{"run", "--concurrency", "0"}, 2, "must be positive"},
		{[]string{"run", "--key-dist", "uniform"}, 2, `run: unknown key distribution "uniform"`},
		{[]string{"run", "--key-dist", "fresh", "--keys", "10"}, 2, "leave keys out"},
		{[]string{"run", "--weak-prefetch", "1000"}, 2, "run: weak prefetch serves WEAK IDs of ordinal nodes: use mode weak"},
		{[]string{"run", "--mode", "weak", "--weak-prefetch", "1"}, 2, "the block size must be between 2 and 1000000"},
		{[]string{"run", "--mode", "weak", "--weak-prefetch", "1000", "--keys", "10"}, 2, "for one key"},
		{[]string{"run", "--backend", "etcd", "--multi-address"}, 2, "run: multi-address makes one ordinal client over all targets"},
		{[]string{"run", "extra"}, 2, `run: unexpected argument "extra"`},
		{[]string{"failover"}, 2, "--kill-pid and --targets are required"},
		{[]string{"compare", "--noop", unused}, 2, "--cluster"},
		{[]string{"run", "--targets", unused, "--duration", "200ms", "--warmup", "0"}, 1, "bench: no call succeeded: Unavailable="},
	}
	for _, tt := range tests {
		r := runBenchBin(t, tt.args...)
		if r.code != tt.wantCode || !strings.HasPrefix(r.stderr, "ordinal-bench: ") || !strings.Contains(r.stderr, tt.want) ||
			strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("ordinal-bench %s: exit %d, stderr %q; want exit %d and one line containing %q",
				strings.Join(tt.args, " "), r.code, r.stderr, tt.wantCode, tt.want)
		}
	}
	r := runBenchBin(t, "run", "--help")
	if r.code != 0 || !strings.Contains(r.stderr, "Usage: ordinal-bench run") || !strings.Contains(r.stderr, "ORDINAL_TARGETS") {
		t.Errorf("run --help: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
