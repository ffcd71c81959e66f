// Package proccluster runs ordinal nodes as real processes of the ordinal
// binary, so tests can do to them what happens in production: kill -9,
// SIGSTOP and SIGCONT, restart on the same data directory.
//
// The nodes run secured, with the flags the README gives operators:
// peer mutual TLS, client TLS with client certificates required, and the
// client certificate "admin" holding the admin role, which the cluster's
// own connections use.
package proccluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/testpki"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// AdminName is the client certificate name with the admin role.
const AdminName = testpki.AdminName

// WeakRangeTTL is the nodes' --weak-range-ttl: SetFloor waits about
// this long at most.
const WeakRangeTTL = time.Second

// ReadyTimeout bounds how long a node may take to serve after it starts.
const ReadyTimeout = 30 * time.Second

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/ordinal once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ordinal-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "ordinal")
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		cmd := exec.Command(goBin, "build", "-o", binPath, "github.com/ordinal-dev/ordinal/cmd/ordinal")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build ordinal: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// ServeFlags returns the flags `ordinal serve --help` of Binary lists,
// for tests that check a deployment's files name only real flags.
func ServeFlags(t testing.TB) map[string]bool {
	t.Helper()
	out, err := exec.Command(Binary(t), "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("ordinal serve --help: %v\n%s", err, out)
	}
	flags := map[string]bool{}
	for _, sub := range regexp.MustCompile(`(?m)^\s*--?([a-z][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags[sub[1]] = true
	}
	// A check of the parsing: flags serve has always had.
	for _, name := range []string{"node-id", "join", "data-dir", "peer-cert-file"} {
		if !flags[name] {
			t.Fatalf("ordinal serve --help does not list --%s, or ServeFlags no longer reads its format:\n%s", name, out)
		}
	}
	return flags
}

// Node is one ordinal process.
type Node struct {
	ID       string
	Dir      string
	GRPCAddr string
	RaftAddr string
	// MetricsAddr is the node's admin HTTP listener (/metrics, /readyz).
	MetricsAddr string
	Args        []string // extra serve flags

	c    *Cluster
	cmd  *exec.Cmd
	log  *testutil.SyncBuffer
	done chan struct{}
	conn *grpc.ClientConn
}

// Cluster is a set of node processes.
type Cluster struct {
	t     testing.TB
	bin   string
	root  string
	pki   *testpki.PKI
	args  func(nodeID string) []string
	Nodes []*Node
}

// Start launches n nodes that form one cluster with --bootstrap-expect and
// waits until each serves. A node whose port another process took between
// FreeAddr and its start exits with "address already in use"; Start then
// starts the whole cluster again on new ports (the nodes' join list names
// them all), up to startAttempts times.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, nil)
}

// StartWith is Start with extra serve flags for each node: args, when not
// nil, returns those of the node with the given ID (n1, n2, ...); they
// stay for every restart.
func StartWith(t testing.TB, n int, args func(nodeID string) []string) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: Binary(t), root: t.TempDir(), args: args}
	c.pki = testpki.New(t, filepath.Join(c.root, "pki"))
	t.Cleanup(c.Close)
	for attempt := 1; ; attempt++ {
		err := c.start(n, attempt)
		if err == nil {
			return c
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatal(err)
		}
		t.Logf("proccluster: %v; starting the cluster again on new ports", err)
		c.discard()
	}
}

// freeAddr picks the nodes' addresses; a test replaces it to hand out a
// taken port.
var freeAddr = testutil.FreeAddr

// startAttempts bounds how often Start tries new ports.
const startAttempts = 3

// errAddrInUse is returned by waitReady for a node that exited because one
// of its ports was taken.
var errAddrInUse = errors.New("a port was taken by another process")

// start launches n fresh nodes, in data directories of their own for this
// attempt, and waits until each serves.
func (c *Cluster) start(n, attempt int) error {
	c.Nodes = nil
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		c.Nodes = append(c.Nodes, &Node{ID: id, Dir: filepath.Join(c.root, fmt.Sprintf("try%d", attempt), id),
			GRPCAddr: freeAddr(c.t), RaftAddr: freeAddr(c.t), MetricsAddr: freeAddr(c.t), c: c})
	}
	var join []string
	for _, nd := range c.Nodes {
		join = append(join, nd.RaftAddr)
	}
	for _, nd := range c.Nodes {
		if n > 1 {
			nd.Args = []string{"--bootstrap-expect", fmt.Sprint(n), "--join", strings.Join(join, ",")}
		}
		if c.args != nil {
			nd.Args = append(nd.Args, c.args(nd.ID)...)
		}
		nd.Start()
	}
	for _, nd := range c.Nodes {
		if err := nd.waitReady(); err != nil {
			return err
		}
	}
	return nil
}

// discard kills the nodes of a failed start and closes their connections.
func (c *Cluster) discard() {
	for _, nd := range c.Nodes {
		nd.Kill()
		if nd.conn != nil {
			nd.conn.Close()
		}
	}
	c.Nodes = nil
}

// Start launches the node's process without waiting for it to serve.
func (nd *Node) Start() {
	t := nd.c.t
	t.Helper()
	args := append([]string{"serve", "--node-id", nd.ID, "--data-dir", nd.Dir,
		"--grpc-addr", nd.GRPCAddr, "--raft-addr", nd.RaftAddr, "--metrics-addr", nd.MetricsAddr, "--log-level", "info",
		"--weak-range-ttl", WeakRangeTTL.String()}, nd.c.pki.ServeArgs(nd.ID)...)
	args = append(args, nd.Args...)
	nd.log = &testutil.SyncBuffer{}
	nd.cmd = exec.Command(nd.c.bin, args...)
	nd.cmd.Stdout, nd.cmd.Stderr = nd.log, nd.log
	if err := nd.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", nd.ID, err)
	}
	nd.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(nd.cmd, nd.done)
	if nd.conn == nil {
		// One connection for the node's lifetime, so callers may keep
		// using it across restarts; it reconnects quickly.
		conn, err := grpc.NewClient(nd.GRPCAddr, nd.c.pki.DialOption(AdminName), fastReconnect)
		if err != nil {
			t.Fatal(err)
		}
		nd.conn = conn
	}
}

// PKI returns the cluster's certificates.
func (c *Cluster) PKI() *testpki.PKI { return c.pki }

var fastReconnect = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 200 * time.Millisecond},
	MinConnectTimeout: time.Second,
})

// WaitReady waits until the node's health service reports SERVING.
func (nd *Node) WaitReady() {
	nd.c.t.Helper()
	if err := nd.waitReady(); err != nil {
		nd.c.t.Fatal(err)
	}
}

// waitReady waits until the node's health service reports SERVING, and
// fails with errAddrInUse as soon as the process exits because a port of
// its was taken.
func (nd *Node) waitReady() error {
	deadline := time.Now().Add(ReadyTimeout)
	h := healthpb.NewHealthClient(nd.conn)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if !nd.Running() && strings.Contains(nd.Log(), "address already in use") {
			return fmt.Errorf("%s exited: %w:\n%s", nd.ID, errAddrInUse, nd.Log())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not serving after %v (last: %v); log:\n%s", nd.ID, ReadyTimeout, err, nd.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (nd *Node) Kill() { nd.signalAndWait(syscall.SIGKILL) }

// Stop sends SIGTERM and waits for the process to end.
func (nd *Node) Stop() { nd.signalAndWait(syscall.SIGTERM) }

// Pause freezes the process with SIGSTOP, as a long GC pause or a VM
// migration would.
func (nd *Node) Pause() { nd.signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (nd *Node) Resume() { nd.signal(syscall.SIGCONT) }

// Restart kills nothing: it starts a stopped node and waits until it serves.
func (nd *Node) Restart() {
	nd.c.t.Helper()
	nd.Start()
	nd.WaitReady()
}

func (nd *Node) signal(sig syscall.Signal) {
	if nd.cmd == nil || nd.cmd.Process == nil {
		return
	}
	if err := nd.cmd.Process.Signal(sig); err != nil {
		nd.c.t.Logf("signal %v to %s: %v", sig, nd.ID, err)
	}
}

func (nd *Node) signalAndWait(sig syscall.Signal) {
	nd.c.t.Helper()
	if !nd.Running() {
		return
	}
	nd.signal(syscall.SIGCONT) // a paused process cannot handle SIGTERM
	nd.signal(sig)
	select {
	case <-nd.done:
	case <-time.After(15 * time.Second):
		nd.c.t.Fatalf("%s did not exit after %v", nd.ID, sig)
	}
}

// Running reports whether the process is alive.
func (nd *Node) Running() bool {
	if nd.done == nil {
		return false
	}
	select {
	case <-nd.done:
		return false
	default:
		return true
	}
}

// ExitCode returns the exit code of an ended process.
func (nd *Node) ExitCode() int { return nd.cmd.ProcessState.ExitCode() }

// Log returns what the process printed.
func (nd *Node) Log() string { return nd.log.String() }

// Sequencer returns a client of the node's SequencerService.
func (nd *Node) Sequencer() ordinalv1.SequencerServiceClient {
	return ordinalv1.NewSequencerServiceClient(nd.conn)
}

// Cluster returns a client of the node's ClusterService.
func (nd *Node) Cluster() ordinalv1.ClusterServiceClient {
	return ordinalv1.NewClusterServiceClient(nd.conn)
}

// LeadsByItsOwnView reports whether the node itself believes it leads: the
// leader it names is itself.
func (nd *Node) LeadsByItsOwnView(ctx context.Context) bool {
	resp, err := nd.Cluster().Leader(ctx, &ordinalv1.LeaderRequest{})
	return err == nil && resp.GetNodeId() == nd.ID
}

// Leader polls the running nodes until one of them says it leads (its own
// view, not hearsay) and returns it; exclude lists nodes to ignore, such
// as a paused former leader.
func (c *Cluster) Leader(exclude ...*Node) *Node {
	c.t.Helper()
	deadline := time.Now().Add(ReadyTimeout)
	for time.Now().Before(deadline) {
		for _, nd := range c.Nodes {
			if !nd.Running() || contains(exclude, nd) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			leads := nd.LeadsByItsOwnView(ctx)
			cancel()
			if leads {
				return nd
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no leader elected")
	return nil
}

func contains(list []*Node, nd *Node) bool {
	for _, x := range list {
		if x == nd {
			return true
		}
	}
	return false
}

// Close kills every node, dumping logs when the test failed.
func (c *Cluster) Close() {
	for _, nd := range c.Nodes {
		nd.Kill()
		if nd.conn != nil {
			nd.conn.Close()
		}
		if c.t.Failed() && nd.log != nil {
			c.t.Logf("---- log of %s ----\n%s", nd.ID, nd.Log())
		}
	}
}
