package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// serveOne starts a single-node cluster with extra serve flags and
// returns its gRPC address.
func serveOne(t *testing.T, env []string, extra ...string) string {
	t.Helper()
	grpcAddr := testutil.FreeAddr(t)
	args := append([]string{"--node-id", "n1", "--data-dir", t.TempDir(), "--grpc-addr", grpcAddr, "--raft-addr", testutil.FreeAddr(t)}, extra...)
	startServe(t, grpcAddr, env, args...)
	return grpcAddr
}

// keyRow is one row of ordinal keys list.
type keyRow struct{ store, key, hw string }

// parseKeys splits the output of ordinal keys list on white space, as a
// script would, unquoting quoted names, and returns the rows and the last
// line.
func parseKeys(t *testing.T, out string) ([]keyRow, string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 2 || strings.Join(strings.Fields(lines[0]), " ") != "STORE KEY HIGH-WATER" {
		t.Fatalf("output lacks the header and last line:\n%s", out)
	}
	var rows []keyRow
	for _, line := range lines[1 : len(lines)-1] {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("row %q does not split into 3 columns", line)
		}
		for i := range 2 {
			if strings.HasPrefix(f[i], `"`) {
				u, err := strconv.Unquote(f[i])
				if err != nil {
					t.Fatalf("row %q: %v", line, err)
				}
				f[i] = u
			}
		}
		rows = append(rows, keyRow{f[0], f[1], f[2]})
	}
	return rows, lines[len(lines)-1]
}

func TestKeysList(t *testing.T) {
	t.Parallel()
	addr := serveOne(t, nil)
	c, err := client.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var want []keyRow
	for _, k := range []keyRow{{"default", "orders", ""}, {"default", "order items", ""}, {"default", "users", ""},
		{"eu", "orders", ""}, {"eu", "o\"dd", ""}, {"a store", "x", ""}} {
		if _, err := c.Store(k.store).NextID(ctx, k.key, client.Weak); err != nil {
			t.Fatal(err)
		}
		hw, err := c.Store(k.store).HighWater(ctx, k.key)
		if err != nil {
			t.Fatal(err)
		}
		k.hw = strconv.FormatInt(hw, 10)
		want = append(want, k)
	}
	slices.SortFunc(want, func(a, b keyRow) int {
		if a.store != b.store {
			return strings.Compare(a.store, b.store)
		}
		return strings.Compare(a.key, b.key)
	})
	filter := func(store, prefix string) []keyRow {
		var out []keyRow
		for _, k := range want {
			if (store == "" || k.store == store) && strings.HasPrefix(k.key, prefix) {
				out = append(out, k)
			}
		}
		return out
	}
	tests := []struct {
		name string
		args []string
		want []keyRow
	}{
		{"every key", nil, want},
		{"every page", []string{"--page-size", "1", "--all"}, want},
		{"one store", []string{"--store", "eu", "--all"}, filter("eu", "")},
		{"prefix", []string{"--prefix", "order", "--all"}, filter("", "order")},
		{"store and prefix", []string{"--store", "default", "--prefix", "order "}, filter("default", "order ")},
		{"nothing", []string{"--prefix", "zzz"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, last := parseKeys(t, mustRun(t, nil, append([]string{"keys", "list", "--addr", addr}, tt.args...)...))
			if !slices.Equal(rows, tt.want) {
				t.Errorf("rows %q, want %q", rows, tt.want)
			}
			if wantLast := fmt.Sprintf("listed %d of the %d keys the node holds", len(tt.want), len(want)); last != wantLast {
				t.Errorf("last line %q, want %q", last, wantLast)
			}
		})
	}

	// Page by page with the token the last line gives.
	var rows []keyRow
	args := []string{"keys", "list", "--addr", addr, "--page-size", "2"}
	for page := 0; ; page++ {
		got, last := parseKeys(t, mustRun(t, nil, args...))
		rows = append(rows, got...)
		_, tok, more := strings.Cut(last, "more follow: --page-token ")
		if !more {
			break
		}
		if page > len(want) {
			t.Fatal("the listing does not end")
		}
		args = []string{"keys", "list", "--addr", addr, "--page-size", "2", "--page-token", tok}
	}
	if !slices.Equal(rows, want) {
		t.Errorf("pages listed %q, want %q", rows, want)
	}

	for _, bad := range [][]string{
		{"keys"}, {"keys", "lsit"}, {"keys", "list", "extra"},
		{"keys", "list", "--page-size", "0"}, {"keys", "list", "--page-size", "10001"},
		{"keys", "list", "--all", "--page-token", "x"},
	} {
		if r := runOrdinal(t, nil, append(bad, "--addr", addr)...); r.code != 2 {
			t.Errorf("ordinal %s exited %d, want 2 (usage)\n%s", strings.Join(bad, " "), r.code, r.stderr)
		}
	}
	r := runOrdinal(t, nil, "keys", "list", "--addr", addr, "--page-token", "garbage")
	if r.code != 1 || !strings.Contains(r.stderr, "InvalidArgument") || !strings.Contains(r.stderr, "page token") {
		t.Errorf("a bad token: exit %d, %s", r.code, r.stderr)
	}
}

func TestMaxKeysFlag(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"flag", "env"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			var addr string
			if how == "flag" {
				addr = serveOne(t, nil, "--max-keys", "2")
			} else {
				addr = serveOne(t, []string{"ORDINAL_MAX_KEYS=2"})
			}
			mustRun(t, nil, "next", "--addr", addr, "a")
			mustRun(t, nil, "next", "--addr", addr, "--store", "other", "b")
			r := runOrdinal(t, nil, "next", "--addr", addr, "c")
			if r.code != 1 || !strings.Contains(r.stderr, "ResourceExhausted") || !strings.Contains(r.stderr, "--max-keys") {
				t.Errorf("third key: exit %d, stderr %s; want ResourceExhausted naming --max-keys", r.code, r.stderr)
			}
			mustRun(t, nil, "next", "--addr", addr, "--mode", "strong", "a")
		})
	}
	for _, bad := range [][]string{
		{"serve", "--max-keys", "-1"},
		{"serve", "--backend", "etcd", "--etcd-endpoints", "127.0.0.1:1", "--max-keys", "5"},
	} {
		if r := runOrdinal(t, nil, bad...); r.code != 2 || !strings.Contains(r.stderr, "--max-keys") {
			t.Errorf("ordinal %s: exit %d, %s; want 2 naming --max-keys", strings.Join(bad, " "), r.code, r.stderr)
		}
	}
}

// Restart budget and sizes of TestRestartWithManyKeys.
const (
	restartBudget      = 10 * time.Second
	defaultRestartKeys = 20_000
	restartBatch       = 4096 // ops per ReserveBatch: cluster's largest group
)

// TestRestartWithManyKeys measures how long `ordinal serve` takes, from
// process start to serving (gRPC health SERVING; then it checks that
// every key is there and a key's next ID is above its mark), on a data
// directory whose snapshot holds ORDINAL_RESTART_KEYS keys (make bench:
// 10000000; make test runs the same steps on 20,000). The directory is
// made the way a busy leader makes one, only faster: a node of this build
// commits the keys through its Raft log as reservations, 4096 per entry
// (the largest group a leader commits), takes a snapshot and stops. The
// binary is ORDINAL_RESTART_BIN when set (make bench passes bin/ordinal),
// else the one TestMain built. It logs one RESTART line for make bench.
func TestRestartWithManyKeys(t *testing.T) {
	n := defaultRestartKeys
	if s := os.Getenv("ORDINAL_RESTART_KEYS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("ORDINAL_RESTART_KEYS=%q: want a number of keys", s)
		}
	}
	dir, raftAddr := t.TempDir(), testutil.FreeAddr(t)
	start := time.Now()
	makeDataDir(t, dir, raftAddr, n)
	made := time.Since(start)
	snapBytes, raftBytes := dirSize(t, filepath.Join(dir, "snapshots")), dirSize(t, filepath.Join(dir, "raft.db"))

	grpcAddr := testutil.FreeAddr(t)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The node runs with the cluster at its key limit, as an operator's
	// would after raising --max-keys to what it holds.
	bin := ordinalBin
	if b := os.Getenv("ORDINAL_RESTART_BIN"); b != "" {
		bin = b
	}
	cmd := exec.Command(bin, "serve", "--node-id", "n1", "--data-dir", dir, "--grpc-addr", grpcAddr, "--raft-addr", raftAddr,
		"--max-keys", strconv.Itoa(n), "--log-level", "info")
	cmd.Dir, cmd.Env = t.TempDir(), testEnv()
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	start = time.Now()
	startWall := start.Round(0)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("ordinal serve log:\n%s", stderr.String())
		}
	})
	waitServingWithin(t, conn, exited, time.Minute)
	serving := time.Since(start)
	rss, hwm := procMemory(t, cmd.Process.Pid)

	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	keys, err := ordinalv1.NewClusterServiceClient(conn).Keys(ctx, &ordinalv1.KeysRequest{Prefix: restartKeyName(n - 1)})
	if err != nil || keys.GetTotal() != uint64(n) || len(keys.GetKeys()) != 1 || keys.GetKeys()[0].GetHighWater() != restartMark {
		t.Fatalf("after the restart: Keys %v, %v; want %d keys, the last at %d", keys, err, n, restartMark)
	}
	id, err := ordinalv1.NewSequencerServiceClient(conn).GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: restartKeyName(n / 2)})
	if err != nil || id.GetNextId() <= restartMark {
		t.Fatalf("next ID of an existing key after the restart: %v, %v; want above %d", id, err, restartMark)
	}
	if serving > restartBudget {
		t.Errorf("ordinal serve with %d keys took %v from start to serving, budget %v", n, serving, restartBudget)
	}
	phases := restartPhases(stderr.String(), startWall)
	t.Logf("RESTART keys=%d serving_s=%.3f rss_mb=%.0f hwm_mb=%.0f snapshot_mb=%.1f raftdb_mb=%.1f make_dir_s=%.1f %s",
		n, serving.Seconds(), rss/1e6, hwm/1e6, float64(snapBytes)/1e6, float64(raftBytes)/1e6, made.Seconds(), phases)
}

// waitServingWithin polls the node's health every 5 ms until it is
// SERVING, and fails the test if the process exits first or limit passes.
func waitServingWithin(t *testing.T, conn *grpc.ClientConn, exited <-chan struct{}, limit time.Duration) {
	t.Helper()
	start := time.Now()
	health := healthpb.NewHealthClient(conn)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case <-exited:
			t.Fatal("ordinal serve exited before serving")
		default:
		}
		if time.Since(start) > limit {
			t.Fatalf("ordinal serve not SERVING after %v: %v, %v", limit, resp.GetStatus(), err)
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
	}
}

// restartPhases says, from the log of a node that started, when (in
// seconds from process start) it had checked its data directory, started
// and finished restoring its snapshot, won its election and was ready:
// where a restart's time goes.
func restartPhases(log string, start time.Time) string {
	phases := []struct{ name, msg string }{
		{"checked_s", "checked the data directory"},
		{"restore_from_s", "starting restore from snapshot"},
		{"restored_s", "restored snapshot"},
		{"elected_s", "election won"},
		{"ready_s", "ordinal ready"},
	}
	var out []string
	for _, p := range phases {
		for _, line := range strings.Split(log, "\n") {
			ts, _, ok := strings.Cut(line, " ")
			if !ok || !strings.Contains(line, p.msg) {
				continue
			}
			if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
				out = append(out, fmt.Sprintf("%s=%.3f", p.name, at.Sub(start).Seconds()))
				break
			}
		}
	}
	return strings.Join(out, " ")
}

// restartMark is every key's high-water mark in the restart test.
const restartMark = 100

func restartKeyName(i int) string { return fmt.Sprintf("key-%08d", i) }

// makeDataDir commits n keys through the Raft log of a single-node
// cluster in dir, snapshots it and stops it.
func makeDataDir(t *testing.T, dir, raftAddr string, n int) {
	t.Helper()
	// TrailingLogs 16: the snapshot compacts the entries that created
	// the keys away, as on a node whose keys were made over time. (Kept,
	// they are hundreds of megabytes that the check on open reads.)
	node, err := cluster.New(cluster.Config{NodeID: "n1", DataDir: dir, RaftAddr: raftAddr, Bootstrap: true, TrailingLogs: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// A few batches in flight, so that the next entry is ready while one
	// commits.
	var (
		wg   sync.WaitGroup
		once sync.Once
		fail error
		next = make(chan int)
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for from := range next {
				ops := make([]fsm.Op, 0, restartBatch)
				for i := from; i < min(from+restartBatch, n); i++ {
					ops = append(ops, fsm.Op{Kind: fsm.OpReserve, Key: fsm.Key{Store: "default", Name: restartKeyName(i)}, Want: restartMark, Need: 1})
				}
				res, err := node.ReserveBatch(ctx, ops)
				if err == nil && res[0].Last != restartMark {
					err = fmt.Errorf("reserved %+v, want 1..%d", res[0], restartMark)
				}
				if err != nil {
					once.Do(func() { fail = err })
				}
			}
		}()
	}
	for from := 0; from < n; from += restartBatch {
		next <- from
	}
	close(next)
	wg.Wait()
	if fail != nil {
		t.Fatalf("commit keys: %v", fail)
	}
	if got := node.FSM().Len(); got != n {
		t.Fatalf("the node holds %d keys, want %d", got, n)
	}
	if err := node.Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
}

// dirSize returns the bytes of the files under path.
func dirSize(t *testing.T, path string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(path, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			total += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// procMemory returns the resident set size of process pid and its peak,
// in bytes, from /proc (0, 0 where there is none).
func procMemory(t *testing.T, pid int) (rss, hwm float64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) != 3 || fields[2] != "kB" {
			continue
		}
		v, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			hwm = v * 1024
		}
	}
	return rss, hwm
}
