package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/history"
	"github.com/ordinal-dev/ordinal/internal/metricstest"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"github.com/ordinal-dev/ordinal/metrics"
)

// metered is a secured test cluster whose nodes export metrics.
type metered struct {
	*testcluster.Cluster
	secure client.Option // the admin's client certificate

	mu sync.Mutex
	ms map[string]*metrics.Metrics
}

func newMetered(t *testing.T, n int, configure func(cfg *daemon.Config)) *metered {
	t.Helper()
	m := &metered{ms: map[string]*metrics.Metrics{}}
	m.Cluster = testcluster.NewWithOptions(t, n, testcluster.Options{Configure: func(id string, cfg *daemon.Config) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.ms[id] == nil {
			m.ms[id] = metrics.New()
		}
		cfg.Metrics = m.ms[id]
		if configure != nil {
			configure(cfg)
		}
	}})
	m.secure = client.WithTLS(m.ClientTLS(testcluster.AdminName))
	return m
}

// addrs returns every node's client address, comma-separated, as New
// takes them.
func addrs(c *testcluster.Cluster) string {
	var out []string
	for _, nd := range c.Nodes() {
		out = append(out, nd.GRPCAddr)
	}
	return strings.Join(out, ",")
}

// sample sums the samples of family name on node id whose labels
// include want.
func (m *metered) sample(t *testing.T, id, name string, want map[string]string) float64 {
	t.Helper()
	m.mu.Lock()
	mm := m.ms[id]
	m.mu.Unlock()
	g, err := mm.Gatherer()
	if err != nil {
		t.Fatal(err)
	}
	return metricstest.Sum(t, g, name, want)
}

// forwarded counts the client calls every node forwarded to a leader.
func (m *metered) forwarded(t *testing.T) float64 {
	t.Helper()
	var sum float64
	for _, nd := range m.Nodes() {
		sum += m.sample(t, nd.ID, "ordinal_forwarded_total", map[string]string{"kind": "call"})
	}
	return sum
}

// A Client given every node sends STRONG calls, floors and high-water
// reads to the leader itself, so no follower forwards anything; WEAK calls
// take turns among the nodes.
func TestMultiAddressStrongGoesToTheLeader(t *testing.T) {
	m := newMetered(t, 3, nil)
	c := newClient(t, addrs(m.Cluster), m.secure)
	ctx := testContext(t)

	// The Client learns who leads from the nodes' health service, which
	// it starts watching with its first call.
	testutil.WaitFor(t, 10*time.Second, "a STRONG call sent straight to the leader", func() bool {
		before := m.forwarded(t)
		if _, err := c.NextID(ctx, "k", client.Strong); err != nil {
			t.Fatalf("NextID: %v", err)
		}
		return m.forwarded(t) == before
	})
	before := m.forwarded(t)
	requireStrictlyIncreasing(t, nextIDs(ctx, t, c.Store(""), "k", client.Strong, 100))
	if _, err := c.NextIDs(ctx, "k", client.Strong, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetFloor(ctx, "k", 1_000_000); err != nil {
		t.Fatal(err)
	}
	if hw, err := c.HighWater(ctx, "k"); err != nil || hw < 1_000_000 {
		t.Fatalf("HighWater = %d, %v; want at least the floor", hw, err)
	}
	if got := m.forwarded(t); got != before {
		t.Fatalf("followers forwarded %v calls of a client that knows the leader, want 0", got-before)
	}

	const weak = 30
	nextIDs(ctx, t, c.Store(""), "w", client.Weak, weak)
	var total float64
	for _, nd := range m.Nodes() {
		n := m.sample(t, nd.ID, "ordinal_ids_issued_total", map[string]string{"mode": "weak"})
		if n == 0 {
			t.Errorf("node %s served no WEAK call: WEAK calls should take turns among the nodes", nd.ID)
		}
		total += n
	}
	if total != weak {
		t.Errorf("the nodes issued %v WEAK IDs, want %d", total, weak)
	}
}

// The leader stops while callers take IDs through a Client that knows
// every node, with no deadline of their own: every call succeeds within
// the default retry window, STRONG stays linearizable and no ID repeats.
func TestMultiAddressFailover(t *testing.T) {
	c := testcluster.New(t, 3)
	cl := newClient(t, addrs(c), client.WithTLS(c.ClientTLS(testcluster.AdminName)))
	const key, strongCallers, weakCallers = "failover", 4, 2

	rec := history.NewRecorder()
	var (
		calls, afterStop atomic.Int64
		stopped, finish  atomic.Bool
		wg               sync.WaitGroup
		errMu            sync.Mutex
		errs             []error
	)
	for i := range strongCallers + weakCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mode := client.Strong
			if i >= strongCallers {
				mode = client.Weak
			}
			for !finish.Load() {
				start := time.Now()
				op := rec.Do(history.Op{Client: i, Node: "any", Key: key, Strong: mode == client.Strong}, func() (int64, int64, error) {
					id, err := cl.NextID(context.Background(), key, mode)
					return id, 1, err
				})
				if op.Err != nil {
					errMu.Lock()
					errs = append(errs, fmt.Errorf("%v call after %v: %w", mode, time.Since(start), op.Err))
					errMu.Unlock()
					return
				}
				calls.Add(1)
				if stopped.Load() {
					afterStop.Add(1)
				}
			}
		}()
	}
	failed := func() bool {
		errMu.Lock()
		defer errMu.Unlock()
		return len(errs) > 0
	}
	testutil.WaitFor(t, 20*time.Second, "100 calls", func() bool { return calls.Load() >= 100 || failed() })
	leader := c.Leader()
	leader.Stop()
	stopped.Store(true)
	// Enough calls after the stop to span the election and the calls
	// after it.
	testutil.WaitFor(t, 30*time.Second, "300 calls after the leader stopped", func() bool { return afterStop.Load() >= 300 || failed() })
	newLeader := c.Leader()
	finish.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("callers did not finish")
	}
	for _, err := range errs {
		t.Error(err)
	}
	ops := rec.Ops()
	if err := history.CheckUnique(ops); err != nil {
		t.Fatal(err)
	}
	if err := history.CheckStrong(ops, 5*time.Second, ""); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d calls, %d after %s stopped; %s leads now", calls.Load(), afterStop.Load(), leader.ID, newLeader.ID)
}

// Nodes down when the Client starts, and an address where nothing ever
// listened, are skipped: calls succeed on the nodes that are up.
func TestMultiAddressNodeDownAtStart(t *testing.T) {
	c := testcluster.New(t, 3)
	down := c.Followers(c.Leader())[0]
	down.Stop()
	list := []string{unusedAddr(t), down.GRPCAddr}
	for _, nd := range c.Nodes() {
		if nd != down {
			list = append(list, nd.GRPCAddr)
		}
	}
	cl := newClient(t, strings.Join(list, ","), client.WithTLS(c.ClientTLS(testcluster.AdminName)))
	for _, mode := range modes {
		for i := range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := cl.NextID(ctx, "down-at-start", mode)
			cancel()
			if err != nil {
				t.Fatalf("%v call %d with the first two nodes of %s down: %v", mode, i, list, err)
			}
		}
	}
}

// With no node up, a call fails with Unavailable once the retry window
// passes, and the error names ordinal and every address tried.
func TestMultiAddressAllDown(t *testing.T) {
	list := []string{unusedAddr(t), unusedAddr(t), unusedAddr(t)}
	const window = 300 * time.Millisecond
	cl := newClient(t, strings.Join(list, ","), client.WithRetryWindow(window))
	for _, mode := range modes {
		start := time.Now()
		_, err := cl.NextID(context.Background(), "k", mode)
		elapsed := time.Since(start)
		if code := status.Code(err); code != codes.Unavailable {
			t.Fatalf("%v call with every node down: code %v (%v), want Unavailable", mode, code, err)
		}
		msg := status.Convert(err).Message()
		if !strings.HasPrefix(msg, "ordinal: ") {
			t.Errorf("error %q does not start with ordinal: ", msg)
		}
		for _, a := range list {
			if !strings.Contains(msg, a) {
				t.Errorf("error %q does not name the address %s", msg, a)
			}
		}
		if elapsed > window+time.Second {
			t.Errorf("the call took %v with a retry window of %v", elapsed, window)
		}
	}
	// The caller's deadline bounds the retries too, whatever the window.
	long := newClient(t, strings.Join(list, ","), client.WithRetryWindow(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := long.NextID(ctx, "k", client.Strong)
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("code %v (%v), want Unavailable or DeadlineExceeded", code, err)
	}
	if elapsed := time.Since(start); elapsed > time.Second+300*time.Millisecond {
		t.Fatalf("the call took %v past its 300ms deadline", elapsed)
	}
}

// A DNS name that resolves to several addresses counts as several nodes,
// each verified by TLS under the name. Without a DNS server the test gives
// "localhost" three loopback addresses through a lookup function of its
// own; at each, a TCP relay forwards to one node.
func TestMultiAddressDNSName(t *testing.T) {
	c := testcluster.New(t, 3)
	nodes := c.Nodes()
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	port, relays := relaysOnOnePort(t, ips, []string{nodes[0].GRPCAddr, nodes[1].GRPCAddr, nodes[2].GRPCAddr})
	var lookups atomic.Int64
	lookup := func(_ context.Context, host string) ([]string, error) {
		lookups.Add(1)
		if host != "localhost" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return ips, nil
	}
	cl := newClient(t, "localhost:"+port, client.WithTLS(c.ClientTLS(testcluster.AdminName)), client.WithLookup(lookup))
	ctx := testContext(t)
	requireStrictlyIncreasing(t, nextIDs(ctx, t, cl.Store(""), "dns", client.Strong, 20))
	nextIDs(ctx, t, cl.Store(""), "dns", client.Weak, 20)
	testutil.WaitFor(t, 10*time.Second, "connections to every address of the name", func() bool {
		for _, r := range relays {
			if r.Load() == 0 {
				return false
			}
		}
		return true
	})
	if lookups.Load() == 0 {
		t.Fatal("the name was never looked up")
	}
}

// relaysOnOnePort starts a TCP relay on each of ips, all on one port, to
// the matching target, and returns the port and each relay's count of
// accepted connections.
func relaysOnOnePort(t *testing.T, ips, targets []string) (string, []*atomic.Int64) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Skipf("cannot listen on %s: %v", ips[0], err)
		}
		port := strconv.Itoa(first.Addr().(*net.TCPAddr).Port)
		lis := []net.Listener{first}
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				break
			}
			lis = append(lis, l)
		}
		if len(lis) < len(ips) {
			for _, l := range lis {
				l.Close()
			}
			continue // the port is taken on another address: try another
		}
		counts := make([]*atomic.Int64, len(lis))
		for i, l := range lis {
			counts[i] = relay(t, l, targets[i])
		}
		return port, counts
	}
	t.Fatal("no port free on every address")
	return "", nil
}

// relay accepts connections on l and relays each to target, until the
// test ends.
func relay(t *testing.T, l net.Listener, target string) *atomic.Int64 {
	var accepted atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return &accepted
}

func TestNewInvalidAddress(t *testing.T) {
	for _, addr := range []string{"", "a:1,,b:2", "no-port", "a:1,b", "dns:///a:1,b:2", "a:"} {
		c, err := client.New(addr)
		if !errors.Is(err, client.ErrInvalidAddress) || !errors.Is(err, client.ErrInvalidOption) {
			if c != nil {
				_ = c.Close()
			}
			t.Errorf("New(%q): %v, want ErrInvalidAddress", addr, err)
		}
		if _, err := client.NewConn(addr); !errors.Is(err, client.ErrInvalidAddress) {
			t.Errorf("NewConn(%q): %v, want ErrInvalidAddress", addr, err)
		}
	}
}
