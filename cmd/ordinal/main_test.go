package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const (
	// buildTimeout bounds building the binary once for the whole run.
	buildTimeout = 3 * time.Minute
	// commandTimeout bounds one run of a short-lived command (next, demo,
	// version).
	commandTimeout = 20 * time.Second
	// startTimeout bounds how long a node may take to serve after it was
	// started: a Raft election plus replaying its log.
	startTimeout = 20 * time.Second
	// stopTimeout bounds how long a node may take to exit after a signal.
	stopTimeout = 15 * time.Second
)

// ordinalBin is the binary under test, built once by TestMain so that the
// tests exercise the real command line, exit codes and process lifecycle.
var ordinalBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ordinal-cmd-test-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "create build directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ordinalBin = filepath.Join(dir, "ordinal")
	if err := buildBinary(ordinalBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// buildBinary builds this package with the go command of the toolchain
// running the tests, so that the binary matches the code under test.
func buildBinary(out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", out, ".")
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("build ordinal: %w\n%s", err, output)
	}
	return nil
}

// testEnv returns the test process's environment without any ORDINAL_
// variable, so that a developer's settings cannot leak into a test, plus
// extra.
func testEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, cli.EnvPrefix) {
			env = append(env, kv)
		}
	}
	// Several nodes run at once: none may take the admin listener's
	// fixed default port. extra comes later and wins.
	env = append(env, cli.EnvPrefix+"METRICS_ADDR=127.0.0.1:0")
	return append(env, extra...)
}

// result is what a finished command printed and how it exited.
type result struct {
	stdout, stderr string
	code           int
}

// runOrdinal runs the binary with args to completion and returns its
// output and exit status; it fails the test if the command cannot run or
// outlives commandTimeout.
func runOrdinal(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ordinalBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = testEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) || ctx.Err() != nil {
		t.Fatalf("ordinal %s: %v (ctx: %v)\nstderr:\n%s", strings.Join(args, " "), err, ctx.Err(), stderr.String())
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// mustRun runs the binary and fails the test unless it exits 0.
func mustRun(t *testing.T, env []string, args ...string) string {
	t.Helper()
	r := runOrdinal(t, env, args...)
	if r.code != 0 {
		t.Fatalf("ordinal %s exited %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// serveProc is an `ordinal serve` process.
type serveProc struct {
	grpcAddr string
	workDir  string // the process's working directory, empty at start
	cmd      *exec.Cmd
	stderr   *testutil.SyncBuffer
	exited   chan struct{} // closed once the process has been waited for
}

// startServe starts `ordinal serve` with args and env and returns once it
// reports SERVING through gRPC health and has logged its ready line. The
// process is killed when the test ends if it still runs, and its log is
// printed if the test failed.
func startServe(t *testing.T, grpcAddr string, env []string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{
		grpcAddr: grpcAddr,
		workDir:  t.TempDir(),
		cmd:      exec.Command(ordinalBin, append([]string{"serve"}, args...)...),
		stderr:   &testutil.SyncBuffer{},
		exited:   make(chan struct{}),
	}
	// A working directory of its own keeps a node that ignored its data
	// directory setting from writing ./data into the source tree.
	p.cmd.Dir = p.workDir
	p.cmd.Env = testEnv(env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ordinal serve: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("ordinal serve %s log:\n%s", strings.Join(args, " "), p.stderr.String())
		}
	})
	p.waitServing(t)
	p.requireReadyLine(t)
	return p
}

// waitServing polls gRPC health until the node reports SERVING, failing
// the test if the process exits first or startTimeout passes.
func (p *serveProc) waitServing(t *testing.T) {
	t.Helper()
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("connect to %s: %v", p.grpcAddr, err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("ordinal serve exited with %v before serving", p.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ordinal serve at %s not SERVING after %v: last answer %v, %v", p.grpcAddr, startTimeout, resp.GetStatus(), err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}

// requireReadyLine waits for the line operators and scripts look for: the
// node logs "ordinal ready" with its gRPC address just after it starts
// reporting SERVING, so the line may trail the health check briefly.
func (p *serveProc) requireReadyLine(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(line, "ordinal ready") && strings.Contains(line, p.grpcAddr) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q and %s in the log of a serving node", "ordinal ready", p.grpcAddr)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}

// signal sends sig and waits for the process to exit, returning its exit
// status; it fails the test if the process outlives stopTimeout.
func (p *serveProc) signal(t *testing.T, sig syscall.Signal) *os.ProcessState {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("send %v to ordinal serve: %v", sig, err)
	}
	select {
	case <-p.exited:
		return p.cmd.ProcessState
	case <-time.After(stopTimeout):
		t.Fatalf("ordinal serve still running %v after %v", stopTimeout, sig)
		return nil
	}
}

// kill ends the process if it still runs.
func (p *serveProc) kill(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.signal(t, syscall.SIGKILL)
}
