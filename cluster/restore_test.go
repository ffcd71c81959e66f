package cluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/backup"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testpki"
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// restoredNode is a node of the cluster a restore started, run through
// the daemon as serve runs it.
type restoredNode struct {
	id   string
	d    *daemon.Daemon
	conn *grpc.ClientConn
}

// startRestored starts node id on dir with peer address raftAddr, secured
// with pki's certificates, joining join (none: it resumes what dir holds)
// and waits until it serves.
func startRestored(t *testing.T, pki *testpki.PKI, id, dir, raftAddr string, join []string) *restoredNode {
	t.Helper()
	grpcAddr := testutil.FreeAddr(t)
	cfg := daemon.Config{
		Cluster:  cluster.Config{NodeID: id, DataDir: dir, RaftAddr: raftAddr, Join: join},
		GRPCAddr: grpcAddr,
		Alloc:    alloc.Config{WeakRangeTTL: testcluster.TestWeakRangeTTL},
	}
	testcluster.Secure(t, pki, id, &cfg)
	d, err := daemon.Start(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testcluster.StartTimeout)
	defer cancel()
	if err := d.WaitReady(ctx); err != nil {
		t.Fatalf("%s not ready: %v", id, err)
	}
	conn, err := grpc.NewClient(grpcAddr, pki.DialOption(testcluster.AdminName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &restoredNode{id: id, d: d, conn: conn}
}

// TestRestoreNeverReissues is the acceptance test of restores: a backup of
// a three-node cluster, IDs handed out after it (STRONG and WEAK, on every
// node, a key created after it among them), then a restore into a new
// cluster of two nodes: every ID the new cluster hands out, in either mode
// and through either node, is above every ID of the same key handed out
// before, and a key the old cluster never had starts above the floor of
// every key.
func TestRestoreNeverReissues(t *testing.T) {
	c := testcluster.New(t, 3)
	keys := []fsm.Key{{Store: "default", Name: "a"}, {Store: "default", Name: "b"}, {Store: "orders", Name: "a"}, {Store: "orders", Name: "c"}}
	before := newHighs()
	hammer(t, nodeConns(c.Nodes()), keys, time.Second, before)

	b, _ := mustBackup(t, c.Followers(c.Leader())[0].Conn())
	for _, k := range keys {
		if hw := b.State.HighWater(k); hw < uint64(before.get(k)) {
			t.Fatalf("%v: %d in the backup, %d handed out before", k, hw, before.get(k))
		}
	}

	// The old cluster goes on for a measured while, and a key is created.
	late := fsm.Key{Store: "orders", Name: "created-after-the-backup"}
	start := time.Now()
	calls := hammer(t, nodeConns(c.Nodes()), append(keys, late), 1500*time.Millisecond, before)
	ranFor := time.Since(start)
	if before.get(late) == 0 {
		t.Fatal("no ID of the late key was handed out")
	}
	t.Logf("after the backup: %d calls in %v; highest IDs %v", calls, ranFor, before.m)

	dir := filepath.Join(t.TempDir(), "restored")
	raftAddr := testutil.FreeAddr(t)
	report, err := cluster.Restore(b, cluster.RestoreConfig{NodeID: "r1", DataDir: dir, RaftAddr: raftAddr})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if report.Keys != len(keys) || len(report.Stores) != 2 || report.Floor == 0 || report.ClusterID == b.ClusterID {
		t.Fatalf("report %+v", report)
	}
	t.Logf("restored: floor %d, stores %+v, span %v", report.Floor, report.Stores, report.Span)
	// What restore wrote passes the check a node runs when it opens its
	// data directory, snapshots read in full.
	if rep, err := cluster.CheckDataDir(dir, cluster.CheckOptions{VerifySnapshots: true}); err != nil {
		t.Fatalf("check the restored directory: %v", err)
	} else if rep.NodeID != "r1" || len(rep.Snapshots) != 1 || rep.Snapshots[0].Keys != len(keys)+2 {
		t.Fatalf("check report %+v", rep)
	}

	r1 := startRestored(t, c.PKI(), "r1", dir, raftAddr, nil)
	r2 := startRestored(t, c.PKI(), "r2", filepath.Join(t.TempDir(), "r2"), testutil.FreeAddr(t), []string{raftAddr})
	if id := r1.d.Node().FSM().ClusterID(); id != report.ClusterID || id == b.ClusterID {
		t.Fatalf("the restored cluster's ID is %q; the report says %q, the old cluster's is %q", id, report.ClusterID, b.ClusterID)
	}
	// r2 starts from the restored snapshot, not from an empty state: it
	// holds the restored marks, so it grants what r1 grants should it lead.
	testcluster.WaitFor(t, testcluster.StartTimeout, "r2 holding the restored state", func() bool {
		f := r2.d.Node().FSM()
		return f.ClusterID() == report.ClusterID && f.HighWater(backup.AllKeysFloor) == report.Floor && f.HighWater(keys[0]) >= report.Floor
	})
	testcluster.WaitFor(t, testcluster.StartTimeout, "r2 a voter of the new cluster", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		m, err := ordinalv1.NewClusterServiceClient(r2.conn).Members(ctx, &ordinalv1.MembersRequest{})
		return err == nil && len(m.Members) == 2 && m.Members[0].Voter && m.Members[1].Voter
	})

	never := fsm.Key{Store: "fresh", Name: "never-seen"}
	after := newLows()
	for _, nd := range []*restoredNode{r1, r2} {
		for _, k := range append(keys, late, never) {
			for _, mode := range []ordinalv1.SequencerOptions_AutoIncrement{ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG, ordinalv1.SequencerOptions_AUTO_INCREMENT_WEAK} {
				for range 3 {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := ordinalv1.NewSequencerServiceClient(nd.conn).GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: k.Store, Key: k.Name,
						Options: &ordinalv1.SequencerOptions{Increment: mode}})
					cancel()
					if err != nil {
						t.Fatalf("%s %v %v: %v", nd.id, mode, k, err)
					}
					after.note(k, resp.NextId)
				}
			}
		}
	}
	for _, k := range append(keys, late) {
		if lo, hi := after.get(k), before.get(k); lo <= hi {
			t.Errorf("%v: the restored cluster handed out %d; the old one had handed out up to %d", k, lo, hi)
		}
	}
	if lo := after.get(never); lo <= int64(report.Floor) {
		t.Errorf("a key never seen started at %d, not above the floor of every key %d", lo, report.Floor)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hw, err := ordinalv1.NewSequencerServiceClient(r2.conn).GetHighWater(ctx, &ordinalv1.GetHighWaterRequest{StoreName: "fresh", Key: "unused"})
	if err != nil || hw.HighWater != int64(report.Floor) {
		t.Errorf("GetHighWater of an unused key: %v, %v; want the floor %d", hw, err, report.Floor)
	}
}

// lows records the lowest ID handed out per key.
type lows struct{ highs }

func newLows() *lows { return &lows{highs{m: map[fsm.Key]int64{}}} }

func (l *lows) note(k fsm.Key, id int64) {
	l.mu.Lock()
	if cur, ok := l.m[k]; !ok || id < cur {
		l.m[k] = id
	}
	l.mu.Unlock()
}

// A restore only ever creates a node: it refuses a data directory that
// holds anything, and a bad node ID, address or plan, leaving nothing
// behind.
func TestRestoreRefuses(t *testing.T) {
	c := testcluster.New(t, 1)
	b, _ := mustBackup(t, c.Node("n1").Conn())
	good := cluster.RestoreConfig{NodeID: "r1", DataDir: filepath.Join(t.TempDir(), "d"), RaftAddr: "127.0.0.1:7001"}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "raft.db"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*cluster.RestoreConfig)
		want   error
	}{
		{"non-empty directory", func(c *cluster.RestoreConfig) { c.DataDir = full }, cluster.ErrDataDirNotEmpty},
		{"bad node ID", func(c *cluster.RestoreConfig) { c.NodeID = "a b" }, nil},
		{"no raft address", func(c *cluster.RestoreConfig) { c.RaftAddr = "" }, cluster.ErrInvalidRequest},
		{"raft address without a port", func(c *cluster.RestoreConfig) { c.RaftAddr = "host" }, cluster.ErrInvalidRequest},
		{"no data directory", func(c *cluster.RestoreConfig) { c.DataDir = "" }, nil},
		{"two modes", func(c *cluster.RestoreConfig) { c.Plan = backup.Plan{Advance: 1, For: time.Second} }, backup.ErrInvalidPlan},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mutate(&cfg)
			_, err := cluster.Restore(b, cfg)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Restore: %v, want %v", err, tc.want)
			}
			if cfg.DataDir == full {
				if data, _ := os.ReadFile(filepath.Join(full, "raft.db")); string(data) != "old" {
					t.Fatal("the non-empty directory was changed")
				}
			} else if _, err := os.Stat(good.DataDir); !os.IsNotExist(err) {
				t.Fatalf("a refused restore left %s behind: %v", good.DataDir, err)
			}
		})
	}
	// The good configuration works, once.
	if _, err := cluster.Restore(b, good); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Restore(b, good); !errors.Is(err, cluster.ErrDataDirNotEmpty) {
		t.Fatalf("a second restore into the same directory: %v", err)
	}
}

// TestRestoreKeepsSnowflakeStores backs up a node serving a Snowflake
// store, hands out more IDs after the backup, and restores: the restored
// cluster serves the store as a Snowflake store with no flag saying so,
// above every ID handed out before, and its workers' reserved time sits
// just past the restore's clock instead of hours ahead.
func TestRestoreKeepsSnowflakeStores(t *testing.T) {
	c := testcluster.NewWithOptions(t, 1, testcluster.Options{Configure: func(_ string, cfg *daemon.Config) {
		cfg.Snowflake = daemon.Snowflake{Stores: map[string]snowflake.Layout{"sf": snowflake.Milliseconds}, Lease: time.Second, MaxDrift: 5 * time.Second}
	}})
	nd := c.Node("n1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var last int64
	take := func(conn grpc.ClientConnInterface, n int) {
		t.Helper()
		for range n {
			resp, err := ordinalv1.NewSequencerServiceClient(conn).GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: "sf", Key: "k"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.NextId <= last {
				t.Fatalf("%d after %d", resp.NextId, last)
			}
			last = resp.NextId
		}
	}
	take(nd.Conn(), 200)
	b, _ := mustBackup(t, nd.Conn())
	if _, ok := b.State.SnowflakeStores()["sf"]; !ok {
		t.Fatalf("the backup lacks the declaration: %v", b.State.SnowflakeStores())
	}
	take(nd.Conn(), 200) // after the backup: the restore must stay above these

	dir := filepath.Join(t.TempDir(), "restored")
	raftAddr := testutil.FreeAddr(t)
	margin := 2 * time.Second
	restoredAt := time.Now()
	if _, err := cluster.Restore(b, cluster.RestoreConfig{NodeID: "r1", DataDir: dir, RaftAddr: raftAddr, Plan: backup.Plan{TimeMargin: margin}}); err != nil {
		t.Fatal(err)
	}
	nd.Stop()
	r1 := startRestored(t, c.PKI(), "r1", dir, raftAddr, nil)
	if _, ok := r1.d.Node().SnowflakeStores()["sf"]; !ok {
		t.Fatal("the restored cluster does not declare sf")
	}
	var maxTime uint64
	r1.d.Node().FSM().ForEachKey(func(k fsm.Key, hw uint64) bool {
		if k.Store == fsm.SnowflakeTimeStore {
			maxTime = max(maxTime, hw)
		}
		return true
	})
	if lo, hi := uint64(restoredAt.Add(margin).UnixMilli()), uint64(time.Now().Add(margin).UnixMilli()); maxTime < lo || maxTime > hi {
		t.Fatalf("restored reserved time %d, want within [%d, %d]: the restore's clock plus the margin", maxTime, lo, hi)
	}
	// The restored node stamps after the old cluster's last time, within
	// its default drift bound once the margin has passed.
	testcluster.WaitFor(t, 20*time.Second, "the restored node serving sf", func() bool {
		_, err := ordinalv1.NewSequencerServiceClient(r1.conn).GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: "sf", Key: "warm-up"})
		return err == nil
	})
	take(r1.conn, 100)

	// A second node joins the restored cluster: its worker (1) has no time
	// in the backup, and still stamps no earlier than the restore's floor
	// of every worker's time.
	r2 := startRestored(t, c.PKI(), "r2", filepath.Join(t.TempDir(), "r2"), testutil.FreeAddr(t), []string{raftAddr})
	var id int64
	testcluster.WaitFor(t, 20*time.Second, "r2 serving sf", func() bool {
		resp, err := ordinalv1.NewSequencerServiceClient(r2.conn).GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: "sf", Key: "k"})
		id = resp.GetNextId()
		if err != nil {
			t.Logf("r2: %v; r2 applied declarations %v, index %d, keys %d, cluster %q; r1 index %d", err, r2.d.Node().SnowflakeStores(),
				r2.d.Node().FSM().AppliedIndex(), r2.d.Node().FSM().Len(), r2.d.Node().FSM().ClusterID(), r1.d.Node().FSM().AppliedIndex())
		}
		return err == nil
	})
	p, _ := snowflake.Milliseconds.Decode(uint64(id))
	floor := r1.d.Node().FSM().HighWater(backup.SnowflakeTimeFloor)
	if p.Worker == 0 || uint64(p.Time.UnixMilli()) < floor || floor < uint64(restoredAt.Add(margin).UnixMilli()) {
		t.Fatalf("r2 stamped %+v; the restore's time floor is %d (restored at %s + %s)", p, floor, restoredAt, margin)
	}
	if id <= last {
		t.Fatalf("r2 handed out %d, not above the old cluster's %d", id, last)
	}
}
