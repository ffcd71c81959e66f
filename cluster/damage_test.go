package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/server"
	"github.com/ordinal-dev/ordinal/auth"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// damageOneEntry flips a bit in the data of a command entry in the middle
// of the log in dir's raft.db, through raft-boltdb as a stray write to
// that entry would, and returns the entry's index.
func damageOneEntry(t *testing.T, dir string) uint64 {
	t.Helper()
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	first, err := store.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := store.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	for i := (first + last) / 2; i <= last; i++ {
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		l.Data[len(l.Data)/2] ^= 0x01
		if err := store.StoreLog(&l); err != nil {
			t.Fatal(err)
		}
		return i
	}
	t.Fatalf("no command entry in %d..%d", (first+last)/2, last)
	return 0
}

// startDaemon starts nd of an insecure test cluster by hand, with the
// configuration the cluster gives it, so that a test can see a start fail.
func startDaemon(t *testing.T, nd *testcluster.Node, logs *testutil.SyncBuffer) (*daemon.Daemon, error) {
	t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Name: nd.ID, Output: logs, Level: hclog.Info})
	return daemon.Start(daemon.Config{
		Cluster: cluster.Config{
			NodeID:   nd.ID,
			DataDir:  nd.Dir,
			RaftAddr: nd.RaftAddr,
			Logger:   logger,
		},
		GRPCAddr: nd.GRPCAddr,
		Alloc:    alloc.Config{WeakRangeTTL: testcluster.TestWeakRangeTTL},
		Security: daemon.Security{Auth: auth.Config{Open: true}},
		Logger:   logger,
	})
}

// requireDamageMessage fails the test unless err wraps cluster.ErrDamaged
// and its message has every one of wants and says what to do.
func requireDamageMessage(t *testing.T, err error, wants ...string) {
	t.Helper()
	if !errors.Is(err, cluster.ErrDamaged) {
		t.Fatalf("got %v, want an error wrapping cluster.ErrDamaged", err)
	}
	wants = append(wants, "stop this node, wipe its data directory", "start it again with --join", "re-admits it as a new member")
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not contain %q", err, want)
		}
	}
}

// takeEverywhere takes a STRONG and a WEAK ID through every running node.
func takeEverywhere(t *testing.T, c *testcluster.Cluster, got *ids) {
	t.Helper()
	for _, nd := range c.Nodes() {
		if nd.Running() {
			got.strong(t, nd, "k")
			got.weak(t, nd, "k")
		}
	}
}

// TestFollowerWithDamagedEntryRefusesToStart writes a damaged entry into a
// stopped follower's log: the follower must refuse to start, naming the
// entry, raft.db and what to do, while the others keep handing out IDs;
// done as the message says, it is re-admitted and serves again, and no ID
// is ever handed out twice.
func TestFollowerWithDamagedEntryRefusesToStart(t *testing.T) {
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{Insecure: true})
	got := newIDs()
	takeEverywhere(t, c, got)
	follower := c.Followers(c.Leader())[0]
	follower.Stop()
	index := damageOneEntry(t, follower.Dir)

	var logs testutil.SyncBuffer
	d, err := startDaemon(t, follower, &logs)
	if err == nil {
		d.Close()
		t.Fatal("a follower with a damaged log entry started")
	}
	requireDamageMessage(t, err, fmt.Sprintf("the log entry at index %d", index), filepath.Join(follower.Dir, "raft.db"), "checksum mismatch")

	takeEverywhere(t, c, got)

	follower.Wipe()
	follower.StartJoining()
	c.WaitVoters(3)
	takeEverywhere(t, c, got)
}

// TestFollowerStopsOnSnapshotItCannotRestore makes a follower that was down
// catch up from a snapshot its state machine cannot restore (the leader's
// snapshot was damaged before it was written, so Raft's CRC-64 matches and
// only the state machine's checksum can tell): the follower must stop at
// run time (Daemon.Err delivers why, it answers calls Unavailable, its
// health is NOT_SERVING) while the others keep handing out IDs.
func TestFollowerStopsOnSnapshotItCannotRestore(t *testing.T) {
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{
		Insecure: true,
		Configure: func(_ string, cfg *daemon.Config) {
			cfg.Cluster.TrailingLogs = 4
			cfg.Cluster.SnapshotThreshold = 1 << 40
		},
	})
	got := newIDs()
	takeEverywhere(t, c, got)
	leader := c.Leader()
	follower := c.Followers(leader)[0]
	// A floor the follower applies before it stops: once its state machine
	// stopped, it must still read it as applied (AppliedHighWater), while
	// HighWater refuses.
	const floor = 1 << 40
	if _, err := leader.Sequencer().SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: "floored", Floor: floor}); err != nil {
		t.Fatal(err)
	}
	floored := fsm.Key{Store: server.DefaultStore, Name: "floored"}
	testutil.WaitFor(t, 10*time.Second, "the follower applied the floor", func() bool {
		return follower.Daemon().Node().AppliedHighWater(floored) >= floor
	})
	// In its own snapshot, so that it restores it on its restart (a
	// restarted node applies log entries only once a leader says they
	// are committed: here, never).
	if err := follower.Daemon().Node().Snapshot(); err != nil {
		t.Fatal(err)
	}
	follower.Stop()
	// Entries the follower misses, then a snapshot that compacts them away,
	// so that it can only catch up from the snapshot.
	for i := range 20 {
		// A new key each time: its first ID needs a reservation, an entry.
		if _, err := leader.Sequencer().GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: fmt.Sprintf("missed-%d", i), Options: strongOpts}); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.Daemon().Node().Snapshot(); err != nil {
		t.Fatal(err)
	}
	damageNewestSnapshot(t, leader.Dir)

	var logs testutil.SyncBuffer
	d, err := startDaemon(t, follower, &logs)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var failure error
	select {
	case failure = <-d.Err():
	case <-time.After(testcluster.StartTimeout):
		t.Fatalf("the follower did not stop; its log:\n%s", logs.String())
	}
	requireDamageMessage(t, failure, "a snapshot could not be restored", filepath.Join(follower.Dir, "snapshots"))
	if _, err := d.Node().HighWater(context.Background(), floored); !errors.Is(err, cluster.ErrShutdown) {
		t.Errorf("HighWater on the stopped follower: %v, want ErrShutdown", err)
	}
	if hw := d.Node().AppliedHighWater(floored); hw < floor {
		t.Errorf("AppliedHighWater on the stopped follower: %d, want the floor it applied before, %d", hw, floor)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.WaitReady(wctx); !errors.Is(err, cluster.ErrDamaged) {
		t.Errorf("WaitReady of the stopped follower: %v", err)
	}
	if !strings.Contains(logs.String(), "stopping: this node's data is damaged") {
		t.Errorf("the follower's log does not say it stops:\n%s", logs.String())
	}

	conn, err := grpc.NewClient(follower.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = ordinalv1.NewSequencerServiceClient(conn).GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "k"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a call to the stopped follower: %v, want Unavailable", err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(callCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health of the stopped follower: %v, %v; want NOT_SERVING", h.GetStatus(), err)
	}

	for _, nd := range c.Nodes() {
		if nd != follower && nd.Running() {
			got.strong(t, nd, "k")
			got.weak(t, nd, "k")
		}
	}
}

// damageNewestSnapshot flips a bit in the state of the newest snapshot in
// dir and rewrites Raft's CRC-64 in its meta.json to match, as if the
// bytes had been damaged in memory before they were written.
func damageNewestSnapshot(t *testing.T, dir string) {
	t.Helper()
	root := filepath.Join(dir, "snapshots")
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		t.Fatal("no snapshot")
	}
	// Names are term-index-time; the test took one snapshot per term.
	sort.Strings(names)
	snap := filepath.Join(root, names[len(names)-1])
	state, err := os.ReadFile(filepath.Join(snap, "state.bin"))
	if err != nil {
		t.Fatal(err)
	}
	state[len(state)-6] ^= 0x20 // in the last key, so the checksum is what fails
	if err := os.WriteFile(filepath.Join(snap, "state.bin"), state, 0o600); err != nil {
		t.Fatal(err)
	}
	metaPath := filepath.Join(snap, "meta.json")
	b, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	h.Write(state)
	meta["CRC"] = h.Sum(nil)
	if b, err = json.Marshal(meta); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(metaPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
