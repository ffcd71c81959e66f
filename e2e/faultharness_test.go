package e2e

// The harness of the network-fault scenarios (partition_test.go,
// torture_test.go): in-process clusters whose nodes talk through a
// faultnet.Net, a recorded load of STRONG and WEAK calls sent directly to
// every node, seeds, torture mode and artifacts.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/faultnet"
	"github.com/ordinal-dev/ordinal/internal/history"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
)

var tortureFlag = flag.Bool("torture", false,
	"run the network-fault scenarios long, with random fault schedules, over several seeds (same as ORDINAL_TORTURE=1)")

// tortureMode reports whether the scenarios run long: ORDINAL_TORTURE=1 or
// -torture.
func tortureMode() bool {
	v := os.Getenv("ORDINAL_TORTURE")
	return *tortureFlag || (v != "" && v != "0" && v != "false")
}

// tortureDuration is how long one seed of a scenario runs in torture mode:
// ORDINAL_TORTURE_DURATION (a Go duration), default 30s.
func tortureDuration(t *testing.T) time.Duration {
	if v := os.Getenv("ORDINAL_TORTURE_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("ORDINAL_TORTURE_DURATION: %v", err)
		}
		return d
	}
	return 30 * time.Second
}

// tortureSeeds is how many seeds each scenario runs in torture mode:
// ORDINAL_TORTURE_SEEDS, default 3.
func tortureSeeds(t *testing.T) int {
	if v := os.Getenv("ORDINAL_TORTURE_SEEDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("ORDINAL_TORTURE_SEEDS=%q: want a positive number", v)
		}
		return n
	}
	return 3
}

// forEachSeed runs body with one seed, or in torture mode with several,
// each in a subtest. ORDINAL_SEED replays one seed.
func forEachSeed(t *testing.T, body func(t *testing.T, seed int64)) {
	if v := os.Getenv("ORDINAL_SEED"); v != "" {
		seed, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("ORDINAL_SEED=%q: %v", v, err)
		}
		body(t, seed)
		return
	}
	if !tortureMode() {
		body(t, time.Now().UnixNano()%1_000_000_007)
		return
	}
	for range tortureSeeds(t) {
		seed := time.Now().UnixNano() % 1_000_000_007
		if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { body(t, seed) }) {
			return // one failing seed is enough to look at
		}
	}
}

// faultRun is one seed of a scenario: a cluster behind a faultnet, the
// test's own random choices, and the load.
type faultRun struct {
	t    *testing.T
	seed int64
	rng  *rand.Rand // the test's choices; the Net has its own
	net  *faultnet.Net
	c    *testcluster.Cluster
	load *netLoad
	end  time.Time // torture: when to stop starting cycles
}

// runOptions tune newFaultRun.
type runOptions struct {
	nodes     int
	configure func(nodeID string, cfg *daemon.Config)
	keys      []string // default "orders" and "users"
	// rareKeys are used by about one call in 500, so their pools sit idle
	// long enough to be evicted (with a short Alloc.IdleTimeout).
	rareKeys []string
}

func newFaultRun(t *testing.T, seed int64, opts runOptions) *faultRun {
	t.Helper()
	t.Logf("seed %d (replay: ORDINAL_SEED=%d go test -race -run '^%s$' ./e2e/)", seed, seed, topName(t))
	fnet := faultnet.New(seed)
	r := &faultRun{
		t:    t,
		seed: seed,
		rng:  rand.New(rand.NewPCG(uint64(seed), 0x6f7264696e616c)),
		net:  fnet,
	}
	var logMu sync.Mutex
	done := false
	t.Cleanup(func() { logMu.Lock(); done = true; logMu.Unlock() })
	fnet.SetLogf(func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		if !done {
			t.Logf("%6.2fs "+format, append([]any{r.elapsed().Seconds()}, args...)...)
		}
	})
	start := time.Now()
	r.c = testcluster.NewWithOptions(t, opts.nodes, testcluster.Options{Net: fnet, Configure: opts.configure})
	t.Logf("%d nodes ready in %v", opts.nodes, time.Since(start).Round(time.Millisecond))
	if len(opts.keys) == 0 {
		opts.keys = []string{"orders", "users"}
	}
	r.load = startNetLoad(t, r, opts.keys, opts.rareKeys)
	if tortureMode() {
		r.end = time.Now().Add(tortureDuration(t))
	}
	return r
}

// topName is the name of the top-level test, for the replay hint.
func topName(t *testing.T) string {
	name, _, _ := strings.Cut(t.Name(), "/")
	return name
}

func (r *faultRun) elapsed() time.Duration {
	if r.load == nil {
		return 0
	}
	return r.load.now()
}

// more reports whether to start another cycle: once normally, until the
// torture duration ends in torture mode.
func (r *faultRun) more(cycle int) bool {
	if r.end.IsZero() {
		return cycle == 0
	}
	return time.Now().Before(r.end)
}

// between returns a random duration in [lo, hi).
func (r *faultRun) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.rng.Int64N(int64(hi-lo)))
}

// logf logs with the time since the load started.
func (r *faultRun) logf(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("%6.2fs "+format, append([]any{r.elapsed().Seconds()}, args...)...)
}

// leaderExcept waits until a running node other than those in except
// leads, and returns it.
func (r *faultRun) leaderExcept(timeout time.Duration, what string, except ...string) *testcluster.Node {
	r.t.Helper()
	var leader *testcluster.Node
	testcluster.WaitFor(r.t, timeout, what, func() bool {
		for _, nd := range r.c.Nodes() {
			if nd.Running() && !slices.Contains(except, nd.ID) && nd.Daemon().Node().IsLeader() {
				leader = nd
				return true
			}
		}
		return false
	})
	return leader
}

// ids returns the IDs of nodes.
func ids(nodes []*testcluster.Node) []string {
	out := make([]string, len(nodes))
	for i, nd := range nodes {
		out[i] = nd.ID
	}
	return out
}

// running returns the IDs of the running nodes.
func (r *faultRun) running() []string {
	var out []string
	for _, nd := range r.c.Nodes() {
		if nd.Running() {
			out = append(out, nd.ID)
		}
	}
	return out
}

// Calls that take longer than netCallTimeout are abandoned by the client
// and recorded as indeterminate. STRONG calls to a node that cannot reach a
// quorum fail after most of it.
const netCallTimeout = time.Second

// netLoad runs, per node, strongClients sequential STRONG callers and
// weakClients WEAK callers, each connected directly to its node (not
// through the faultnet), recording every call.
type netLoad struct {
	t     *testing.T
	run   *faultRun
	start time.Time // taken just before the recorder's own start
	rec   *history.Recorder
	keys  []string
	rare  []string

	wg      sync.WaitGroup
	mu      sync.Mutex
	clients int
	nodes   map[string]*loadNode
}

const (
	strongClients = 2
	weakClients   = 1
)

type loadNode struct {
	id     string
	conn   *grpc.ClientConn
	stop   chan struct{}
	paused atomic.Bool
	// inflight counts the callers that are about to start a call or
	// are in one; a caller counts itself before it looks at paused, so
	// that once paused is set and inflight reads 0 no call can start.
	inflight atomic.Int64
	stats    [2]modeStats // [weak, strong]
}

type modeStats struct {
	ok, unavailable, deadline, other atomic.Int64
}

func mode(strong bool) int {
	if strong {
		return 1
	}
	return 0
}

func modeName(strong bool) string {
	if strong {
		return "STRONG"
	}
	return "WEAK"
}

// clientBackoff reconnects to a restarted node quickly.
var clientBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
	MinConnectTimeout: time.Second,
})

func startNetLoad(t *testing.T, r *faultRun, keys, rare []string) *netLoad {
	l := &netLoad{t: t, run: r, start: time.Now(), keys: keys, rare: rare, nodes: map[string]*loadNode{}}
	l.rec = history.NewRecorder()
	for _, nd := range r.c.Nodes() {
		if nd.Running() {
			l.addNode(nd)
		}
	}
	return l
}

// now is the time since the recorder started, never earlier than the
// recorder's own clock: an op with Call > now() was sent after now().
func (l *netLoad) now() time.Duration { return time.Since(l.start) }

// addNode starts callers for nd.
func (l *netLoad) addNode(nd *testcluster.Node) {
	l.t.Helper()
	// An application's client: a certificate of the client CA, role ids.
	conn, err := grpc.NewClient(nd.GRPCAddr, append(nd.DialOptions("app"), clientBackoff)...)
	if err != nil {
		l.t.Fatal(err)
	}
	ln := &loadNode{id: nd.ID, conn: conn, stop: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nodes[nd.ID] != nil {
		l.t.Fatalf("load already runs on %s", nd.ID)
	}
	l.nodes[nd.ID] = ln
	for i := 0; i < strongClients+weakClients; i++ {
		l.wg.Add(1)
		go l.client(l.clients, ln, i < strongClients, rand.New(rand.NewPCG(uint64(l.run.seed), uint64(l.clients))))
		l.clients++
	}
}

// removeNode stops the callers of node id and waits for them.
func (l *netLoad) removeNode(id string) {
	l.mu.Lock()
	ln := l.nodes[id]
	delete(l.nodes, id)
	l.mu.Unlock()
	if ln != nil {
		close(ln.stop)
	}
}

// pause stops the callers of node id from starting calls until resume,
// and waits until none is in a call any more (calls are bounded by
// netCallTimeout): every reservation a call waited for has then landed or
// failed.
func (l *netLoad) pause(id string) {
	l.t.Helper()
	ln := l.node(id)
	ln.paused.Store(true)
	testcluster.WaitFor(l.t, 10*netCallTimeout, "the calls in flight to "+id+" to end", func() bool { return ln.inflight.Load() == 0 })
}

func (l *netLoad) resume(id string) { l.node(id).paused.Store(false) }

func (l *netLoad) node(id string) *loadNode {
	l.mu.Lock()
	defer l.mu.Unlock()
	ln := l.nodes[id]
	if ln == nil {
		l.t.Fatalf("no load on %s", id)
	}
	return ln
}

func (l *netLoad) client(client int, ln *loadNode, strong bool, rng *rand.Rand) {
	defer l.wg.Done()
	seq := ordinalv1.NewSequencerServiceClient(ln.conn)
	opts := &ordinalv1.SequencerOptions{}
	if strong {
		opts.Increment = ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG
	}
	st := &ln.stats[mode(strong)]
	for {
		select {
		case <-ln.stop:
			return
		default:
		}
		ln.inflight.Add(1)
		if ln.paused.Load() {
			ln.inflight.Add(-1)
			time.Sleep(5 * time.Millisecond)
			continue
		}
		key := l.keys[rng.IntN(len(l.keys))]
		if len(l.rare) > 0 && rng.IntN(500) == 0 {
			key = l.rare[rng.IntN(len(l.rare))]
		}
		count := int64(1)
		if rng.IntN(8) == 0 {
			count = 1 + rng.Int64N(16) // a block now and then
		}
		op := l.rec.Do(history.Op{Client: client, Node: ln.id, Key: key, Strong: strong}, func() (int64, int64, error) {
			ctx, cancel := context.WithTimeout(context.Background(), netCallTimeout)
			defer cancel()
			resp, err := seq.GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{Key: key, Options: opts, Count: count})
			return resp.GetFirstId(), resp.GetCount(), err
		})
		ln.inflight.Add(-1)
		switch status.Code(op.Err) {
		case codes.OK:
			st.ok.Add(1)
			continue
		case codes.Unavailable:
			st.unavailable.Add(1)
		case codes.DeadlineExceeded:
			st.deadline.Add(1)
		default:
			st.other.Add(1)
		}
		time.Sleep(20 * time.Millisecond) // a refusing node answers at once: do not spin
	}
}

// sum adds up one counter of one mode over nodes.
func (l *netLoad) sum(nodes []string, strong bool, counter func(*modeStats) *atomic.Int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, id := range nodes {
		if ln := l.nodes[id]; ln != nil {
			n += counter(&ln.stats[mode(strong)]).Load()
		}
	}
	return n
}

func okCount(s *modeStats) *atomic.Int64          { return &s.ok }
func unavailableCount(s *modeStats) *atomic.Int64 { return &s.unavailable }

// waitFor waits until counter, summed over nodes, grew by n, or fails the
// test after timeout.
func (l *netLoad) waitFor(nodes []string, strong bool, counter func(*modeStats) *atomic.Int64, n int64, timeout time.Duration, what string) {
	l.t.Helper()
	start := time.Now()
	target := l.sum(nodes, strong, counter) + n
	testcluster.WaitFor(l.t, timeout, what, func() bool { return l.sum(nodes, strong, counter) >= target })
	l.run.logf("%s (%v)", what, time.Since(start).Round(time.Millisecond))
}

// progress waits until n more calls of the mode succeeded on each of nodes.
func (l *netLoad) progress(nodes []string, strong bool, n int64, timeout time.Duration, what string) {
	l.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for _, id := range nodes {
		target := l.sum([]string{id}, strong, okCount) + n
		for l.sum([]string{id}, strong, okCount) < target {
			if time.Now().After(deadline) {
				l.t.Fatalf("no progress %s: %s calls on %s stalled for %v (seed %d)", what, modeName(strong), id, timeout, l.run.seed)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	l.run.logf("%d %s calls succeeded on each of %v %s (%v)", n, modeName(strong), nodes, what, time.Since(start).Round(time.Millisecond))
}

// finish stops the callers and checks the history: no ID twice, WEAK IDs
// increasing per node, STRONG linearizable, and no call outliving its
// deadline. On failure the porcupine visualisation and the history are
// saved to $ORDINAL_ARTIFACTS (else a temporary directory).
func (l *netLoad) finish() []history.Op {
	l.t.Helper()
	l.mu.Lock()
	for _, ln := range l.nodes {
		close(ln.stop)
	}
	l.mu.Unlock()
	l.wg.Wait()
	l.mu.Lock()
	for _, ln := range l.nodes {
		ln.conn.Close()
	}
	l.nodes = map[string]*loadNode{}
	l.mu.Unlock()

	ops := l.rec.Ops()
	dir := artifactsDir(l.t)
	base := filepath.Join(dir, fmt.Sprintf("%s-seed%d", sanitize(l.t.Name()), l.run.seed))
	start := time.Now()
	err := checkByKey(ops, base)
	for _, op := range ops {
		if d := time.Duration(op.Return - op.Call); d > netCallTimeout+2*time.Second {
			err = errors.Join(err, fmt.Errorf("a %s call to %s took %v, past its %v deadline", modeName(op.Strong), op.Node, d, netCallTimeout))
			break
		}
	}
	l.run.logf("checked %d calls in %v: %s", len(ops), time.Since(start).Round(time.Millisecond), summary(ops))
	l.run.logf("faultnet: %+v", l.run.net.Stats())
	logDeadlines(l.run, ops)
	if err != nil {
		saveHistory(l.t, base+".json", ops)
		l.t.Fatalf("seed %d: %v\nartifacts in %s (set ORDINAL_ARTIFACTS to keep them)", l.run.seed, err, dir)
	}
	return ops
}

// checkByKey runs history.CheckAll on each key's calls on its own. Every
// guarantee is per key, and CheckStrong's exact real-time check compares
// calls across keys (so two keys' independent counters look
// non-linearizable to it).
func checkByKey(ops []history.Op, base string) error {
	byKey := map[string][]history.Op{}
	for _, op := range ops {
		byKey[op.Key] = append(byKey[op.Key], op)
	}
	var errs []error
	for key, kops := range byKey {
		errs = append(errs, history.CheckAll(kops, base+"-"+sanitize(key)+".html"))
	}
	return errors.Join(errs...)
}

func artifactsDir(t *testing.T) string {
	if dir := os.Getenv("ORDINAL_ARTIFACTS"); dir != "" {
		return dir
	}
	return t.TempDir()
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.=-]+`)

func sanitize(name string) string { return unsafeChars.ReplaceAllString(name, "_") }

// saveHistory writes ops as JSON lines, errors as strings, for a closer
// look at a failure.
func saveHistory(t *testing.T, path string, ops []history.Op) {
	type jsonOp struct {
		history.Op
		Err string `json:",omitempty"`
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Log(err)
		return
	}
	f, err := os.Create(path)
	if err != nil {
		t.Log(err)
		return
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, op := range ops {
		j := jsonOp{Op: op}
		if op.Err != nil {
			j.Err = op.Err.Error()
		}
		j.Op.Err = nil
		if err := enc.Encode(j); err != nil {
			t.Log(err)
			return
		}
	}
	t.Logf("history saved to %s", path)
}

// summary counts outcomes per node and mode.
func summary(ops []history.Op) string {
	type k struct {
		node   string
		strong bool
	}
	counts := map[k]map[codes.Code]int{}
	for _, op := range ops {
		kk := k{op.Node, op.Strong}
		if counts[kk] == nil {
			counts[kk] = map[codes.Code]int{}
		}
		counts[kk][status.Code(op.Err)]++
	}
	keys := make([]k, 0, len(counts))
	for kk := range counts {
		keys = append(keys, kk)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].node != keys[j].node {
			return keys[i].node < keys[j].node
		}
		return keys[i].strong && !keys[j].strong
	})
	var b strings.Builder
	for _, kk := range keys {
		fmt.Fprintf(&b, " %s/%s:", kk.node, modeName(kk.strong))
		var codesSeen []codes.Code
		for c := range counts[kk] {
			codesSeen = append(codesSeen, c)
		}
		slices.Sort(codesSeen)
		for _, c := range codesSeen {
			fmt.Fprintf(&b, " %s=%d", c, counts[kk][c])
		}
	}
	return strings.TrimSpace(b.String())
}

// logDeadlines logs a few calls that failed with DeadlineExceeded: the
// README promises Unavailable before the deadline when no leader or quorum
// answers, so these are worth a look.
func logDeadlines(r *faultRun, ops []history.Op) {
	n := 0
	for _, op := range ops {
		if status.Code(op.Err) != codes.DeadlineExceeded {
			continue
		}
		if n++; n <= 3 {
			r.logf("DeadlineExceeded: %s call to %s sent at %v, answered after %v: %v", modeName(op.Strong), op.Node,
				time.Duration(op.Call).Round(time.Millisecond), time.Duration(op.Return-op.Call).Round(time.Millisecond), op.Err)
		}
	}
	if n > 3 {
		r.logf("... %d calls failed with DeadlineExceeded in all", n)
	}
}

// window is a span of the recorder's time.
type window struct{ from, to time.Duration }

// within returns the ops sent to node in mode that were called after w
// began and returned before it ended.
func within(ops []history.Op, node string, strong bool, w window) []history.Op {
	var out []history.Op
	for _, op := range ops {
		if op.Node == node && op.Strong == strong && op.Call > int64(w.from) && op.Return < int64(w.to) {
			out = append(out, op)
		}
	}
	return out
}

func isUnavailable(err error) bool { return status.Code(err) == codes.Unavailable }

// mustAllFail fails the test if any of ops succeeded or failed with another
// code than Unavailable or DeadlineExceeded, and if ops is empty.
func mustAllFail(t *testing.T, ops []history.Op, what string) {
	t.Helper()
	if len(ops) == 0 {
		t.Errorf("%s: no call to check", what)
	}
	bad := 0
	for _, op := range ops {
		switch status.Code(op.Err) {
		case codes.Unavailable, codes.DeadlineExceeded:
			continue
		case codes.OK:
			t.Errorf("%s: a call sent at %v returned ids %d..%d", what, time.Duration(op.Call), op.First, op.First+op.Count-1)
		default:
			t.Errorf("%s: a call sent at %v failed with %v, want Unavailable or DeadlineExceeded", what, time.Duration(op.Call), op.Err)
		}
		if bad++; bad > 5 {
			break
		}
	}
}
