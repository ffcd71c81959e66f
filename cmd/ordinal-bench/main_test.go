package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/internal/cli"
)

const (
	// buildTimeout bounds building the binary once for the whole run.
	buildTimeout = 3 * time.Minute
	// commandTimeout bounds one run of a command.
	commandTimeout = 20 * time.Second
	// startTimeout bounds how long serve-noop may take to listen.
	startTimeout = 20 * time.Second
)

// benchBin is the binary under test, built once by TestMain so that the
// tests exercise the real command line and exit codes.
var benchBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ordinal-bench-cmd-test-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "create build directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	benchBin = filepath.Join(dir, "ordinal-bench")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	// The go command of the toolchain running the tests, so that the
	// binary matches the code under test.
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.CommandContext(ctx, goCmd, "build", "-o", benchBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build ordinal-bench: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// testEnv returns the test process's environment without any ORDINAL_
// variable, so that a developer's settings cannot leak into a test.
func testEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, cli.EnvPrefix) {
			env = append(env, kv)
		}
	}
	return env
}

// result is what a finished command printed and how it exited.
type result struct {
	stdout, stderr string
	code           int
}

// runBenchBin runs the binary with args to completion and returns its
// output and exit status; it fails the test if the command cannot run or
// outlives commandTimeout.
func runBenchBin(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, benchBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = testEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) || ctx.Err() != nil {
		t.Fatalf("ordinal-bench %s: %v (ctx: %v)\nstderr:\n%s", strings.Join(args, " "), err, ctx.Err(), stderr.String())
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// mustRun runs the binary and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := runBenchBin(t, args...)
	if r.code != 0 {
		t.Fatalf("ordinal-bench %s exited %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// The commands, their help, and the usage errors of the command line
// itself.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args     []string
		wantCode int
		want     []string // parts of stderr
	}{
		{[]string{"--help"}, 0, []string{"ordinal-bench run", "ordinal-bench serve-noop", "ordinal-bench failover", "ordinal-bench compare", "ORDINAL_<FLAG>"}},
		{[]string{"help"}, 0, []string{"ordinal-bench run"}},
		{[]string{"help", "run"}, 0, []string{"Usage: ordinal-bench run", "ORDINAL_TARGETS"}},
		{[]string{"run", "--help"}, 0, []string{"Usage: ordinal-bench run", "--warmup", "ORDINAL_WARMUP",
			"-multi-address", "ORDINAL_MULTI_ADDRESS", "-weak-prefetch", "ORDINAL_WEAK_PREFETCH"}},
		{[]string{"serve-noop", "--help"}, 0, []string{"Usage: ordinal-bench serve-noop", "ORDINAL_ADDR"}},
		{[]string{"failover", "--help"}, 0, []string{"Usage: ordinal-bench failover", "ORDINAL_KILL_PID"}},
		{[]string{"compare", "--help"}, 0, []string{"Usage: ordinal-bench compare", "ORDINAL_CLUSTER",
			"-cluster-nometrics", "ORDINAL_CLUSTER_NOMETRICS", "strong-leader-64-nometrics",
			"strong-multi-64 / strong-leader-64 >= 0.9", "weak-prefetch-64"}},
		{nil, 2, []string{"ordinal-bench: no command given"}},
		{[]string{"bench"}, 2, []string{`ordinal-bench: unknown command "bench"`}},
		// Run's flags without the command run it.
		{[]string{"--mode", "fast"}, 2, []string{`ordinal-bench: run: unknown mode "fast"`}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runBenchBin(t, tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, tt.wantCode, r.stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
				}
			}
			if tt.wantCode == 0 && strings.Count(r.stderr, "Usage:") != 1 {
				t.Errorf("usage printed %d times, want once:\n%s", strings.Count(r.stderr, "Usage:"), r.stderr)
			}
		})
	}
}

// Every command that calls ordinal nodes takes the connection flags and
// checks them before it connects to anything.
func TestCommandsTakeConnFlags(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, cli.EnvPrefix) {
			t.Setenv(name, "") // restores the value when the test ends
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The certificate file is not read: a certificate without its key is
	// refused first.
	cert := filepath.Join(t.TempDir(), "cert.pem")
	for _, tt := range []struct {
		cmd  string
		args []string
	}{
		{"run", []string{"run"}},
		{"run", []string{}},
		{"failover", []string{"failover", "--kill-pid", "1", "--targets", "127.0.0.1:1"}},
		{"compare", []string{"compare", "--cluster", "127.0.0.1:1,127.0.0.1:2", "--noop", "127.0.0.1:3"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			err := run(append(tt.args, "--tls-cert-file", cert))
			want := tt.cmd + ": --tls-cert-file needs --tls-key-file"
			if err == nil || cli.ExitCode(err) != 2 || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("ordinal-bench %s --tls-cert-file FILE: %v; want a usage error %q", strings.Join(tt.args, " "), err, want)
			}
		})
	}
	if err := run([]string{"run", "--backend", "etcd", "--tls"}); err == nil || cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--backend etcd does not use them") {
		t.Errorf("run --backend etcd --tls: %v; want a usage error", err)
	}
}
