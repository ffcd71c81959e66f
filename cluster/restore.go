package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/ordinal-dev/ordinal/backup"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/transport"
)

// Restoring a backup (see DESIGN.md, "Backup and restore"): Restore writes,
// without a running node, a data directory from which `serve` starts a new
// single-node cluster holding the backup's keys, each advanced past what
// the old cluster may have handed out after the backup.

// ErrDataDirNotEmpty is returned by Restore for a data directory that
// holds anything: a restore only ever creates a node, it never overwrites
// one.
var ErrDataDirNotEmpty = errors.New("cluster: the data directory is not empty")

// RestoreConfig configures Restore.
type RestoreConfig struct {
	// NodeID is the ID of the restored node, the only member of the new
	// cluster. Start it with the same ID.
	NodeID string

	// DataDir is where the node's data directory is created. It must not
	// exist or be empty.
	DataDir string

	// RaftAddr is the node's peer address as other nodes reach it: what
	// serve advertises (--advertise-raft, else --raft-addr). It is the
	// node's address in the new cluster's configuration.
	RaftAddr string

	// Plan says how far every key advances.
	Plan backup.Plan

	// Logger receives the logs of Raft's snapshot store. Nil means none.
	Logger hclog.Logger
}

// RestoreReport says what Restore did.
type RestoreReport struct {
	// ClusterID is the new cluster's ID.
	ClusterID string
	// Backup is the header of the backup restored.
	Backup backup.Header
	// Plan is the plan carried out, defaults filled in; Span is the time
	// the rates were multiplied by (0 for an exact advance).
	Plan backup.Plan
	Span time.Duration
	// Floor is the new cluster's floor of every key: keys not in the
	// backup start above it.
	Floor uint64
	// TimeFloor is the floor of every Snowflake worker's reserved time,
	// in Unix milliseconds (backup.SnowflakeTimeFloor): Plan.TimeMargin
	// past the restore's clock, or past the old cluster's end that
	// Plan.For gives.
	TimeFloor uint64
	// Stores lists, per store of the backup, how far its keys advanced,
	// in ascending order of store name.
	Stores []StoreAdvance
	// Keys is the number of keys restored; Exhausted how many of them
	// reached the largest ID and hand out no more.
	Keys, Exhausted int
}

// StoreAdvance is how far the keys of one store advanced.
type StoreAdvance struct {
	Store                      string
	Keys                       int
	MinAdvance, MaxAdvance     uint64
	MinRate, MaxRate           uint64 // IDs per second the advances are based on
	MinHighWater, MaxHighWater uint64 // the new marks
}

// Restore creates a data directory from which `ordinal serve` starts a new
// single-node cluster, with a new cluster ID, holding b's keys, each
// advanced as cfg.Plan says and at least to the new floor of every key
// (see backup.Advancer). Other nodes then join it.
//
// The directory is what a node bootstrapped alone would hold had its
// state machine reached the restored state at index 1: a Raft snapshot at
// index 1, term 1, whose configuration is this node alone as a voter; the
// node's identity (node.json); and raft.db as raft.BootstrapCluster writes
// it (current term 1, the same configuration as entry 1). raft.db is
// written under another name and renamed into place last, so that a
// directory with raft.db is complete: before the rename, a node refuses to
// start on it (snapshots without raft.db are damage, see check.go). A
// Restore that fails removes what it wrote. See DESIGN.md, "Backup and
// restore", for why this is the way to seed Raft.
func Restore(b *backup.Backup, cfg RestoreConfig) (_ *RestoreReport, err error) {
	if err := transport.ValidateNodeID(cfg.NodeID); err != nil {
		return nil, fmt.Errorf("cluster: restore: %w", err)
	}
	if err := validateAddr("raft address", cfg.RaftAddr); err != nil {
		return nil, fmt.Errorf("cluster: restore: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	adv, err := b.Advancer(cfg.Plan)
	if err != nil {
		return nil, err
	}
	created, err := prepareEmptyDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			created.undo()
		}
	}()

	state, report, err := restoredState(b, adv)
	if err != nil {
		return nil, err
	}
	if err := writeRestoreSnapshot(state, cfg); err != nil {
		return nil, err
	}
	if _, err := claimDataDir(cfg.DataDir, cfg.NodeID); err != nil {
		return nil, err
	}
	if err := writeRestoreLog(cfg); err != nil {
		return nil, err
	}
	return report, nil
}

// writeRestoreLog writes raft.db as raft.BootstrapCluster writes it for a
// cluster of this node alone (current term 1; entry 1, term 1, the
// configuration), under a temporary name, and renames it into place.
func writeRestoreLog(cfg RestoreConfig) error {
	final := filepath.Join(cfg.DataDir, raftDBFile)
	tmp := final + ".restoring"
	store, err := raftboltdb.New(raftboltdb.Options{Path: tmp, BoltOptions: &bbolt.Options{Timeout: boltOpenTimeout}})
	if err != nil {
		return fmt.Errorf("cluster: restore: create %s: %w", tmp, err)
	}
	addr := raft.ServerAddress(cfg.RaftAddr)
	_, trans := raft.NewInmemTransport(addr)
	defer trans.Close()
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(cfg.NodeID)
	conf.Logger = cfg.Logger.Named("raft")
	// The snapshot store only answers BootstrapCluster's "is there state
	// already?"; the real one holds the restored snapshot.
	err = raft.BootstrapCluster(conf, store, store, raft.NewInmemSnapshotStore(), trans, restoredConfiguration(cfg))
	if err == nil {
		// BootstrapCluster wrote the configuration as log entry 1, which
		// the restored snapshot (index 1) covers. Left in the log, it would
		// be what a node joining later replicates from index 1 instead of
		// installing the snapshot: it would never learn the restored state
		// (marks, floors, declarations), and its state machine would grant
		// from 0 what the others grant from the restored marks. With the
		// log empty, the snapshot is where every replica starts.
		err = store.DeleteRange(1, 1)
	}
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cluster: restore: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	return syncDir(cfg.DataDir)
}

// restoredConfiguration is the new cluster's: the restored node alone, a
// voter at its peer address.
func restoredConfiguration(cfg RestoreConfig) raft.Configuration {
	return raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(cfg.RaftAddr)}}}
}

// restoredState builds the new cluster's state machine: a new cluster ID,
// no node addresses (the node records its own once it leads), and every
// key of b at the mark adv gives it.
func restoredState(b *backup.Backup, adv *backup.Advancer) (*fsm.FSM, *RestoreReport, error) {
	report := &RestoreReport{ClusterID: newClusterID(), Backup: b.Header, Plan: adv.Plan(), Span: adv.Span(), Floor: adv.Floor(), TimeFloor: adv.TimeFloor()}
	f := fsm.New(nil)
	apply := func(ops []fsm.Op) error {
		cmd := fsm.Command{Ops: ops}
		// Index 1 is the snapshot's: the state machine records it.
		switch resp := f.Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: cmd.Encode()}).(type) {
		case error:
			return fmt.Errorf("cluster: restore: %w", resp)
		case *fsm.ApplyResponse:
			for _, r := range resp.Results {
				if r.Err != nil {
					return fmt.Errorf("cluster: restore: %w", r.Err)
				}
			}
		}
		return nil
	}
	first := []fsm.Op{
		{Kind: fsm.OpInit, ClusterID: report.ClusterID},
		{Kind: fsm.OpFloor, Key: backup.AllKeysFloor, Value: adv.Floor()},
		{Kind: fsm.OpFloor, Key: backup.SnowflakeTimeFloor, Value: adv.TimeFloor()},
	}
	// Snowflake stores stay Snowflake stores, declared before their keys'
	// floors are (a store holding keys cannot be declared). Worker IDs are
	// not carried over: the restored cluster's nodes are new members, and
	// the workers' reserved time, advanced below, is what keeps their IDs
	// apart from the old cluster's.
	for store, d := range b.State.SnowflakeStores() {
		first = append(first, fsm.Op{Kind: fsm.OpDeclareSnowflake, Key: fsm.Key{Store: store}, Layout: d.Layout, Value: uint64(d.WorkerBits)})
	}
	if err := apply(first); err != nil {
		return nil, nil, err
	}

	stores := map[string]*StoreAdvance{}
	ops := make([]fsm.Op, 0, 4096)
	var err error
	b.State.ForEachKey(func(k fsm.Key, hw uint64) bool {
		if k == backup.AllKeysFloor || k == backup.SnowflakeTimeFloor {
			return true
		}
		mark := adv.Mark(k, hw)
		report.note(stores, k, mark-hw, adv.Rate(k), mark)
		ops = append(ops, fsm.Op{Kind: fsm.OpFloor, Key: k, Value: mark})
		if len(ops) == cap(ops) {
			err = apply(ops)
			ops = ops[:0]
		}
		return err == nil
	})
	if err == nil && len(ops) > 0 {
		err = apply(ops)
	}
	if err != nil {
		return nil, nil, err
	}
	for _, s := range stores {
		report.Stores = append(report.Stores, *s)
	}
	slices.SortFunc(report.Stores, func(a, b StoreAdvance) int {
		switch {
		case a.Store < b.Store:
			return -1
		case a.Store > b.Store:
			return 1
		}
		return 0
	})
	return f, report, nil
}

// note adds one key to the report.
func (r *RestoreReport) note(stores map[string]*StoreAdvance, k fsm.Key, advance, rate, mark uint64) {
	r.Keys++
	if mark == fsm.MaxID {
		r.Exhausted++
	}
	s := stores[k.Store]
	if s == nil {
		s = &StoreAdvance{Store: k.Store, MinAdvance: advance, MinRate: rate, MinHighWater: mark}
		stores[k.Store] = s
	}
	s.Keys++
	s.MinAdvance, s.MaxAdvance = min(s.MinAdvance, advance), max(s.MaxAdvance, advance)
	s.MinRate, s.MaxRate = min(s.MinRate, rate), max(s.MaxRate, rate)
	s.MinHighWater, s.MaxHighWater = min(s.MinHighWater, mark), max(s.MaxHighWater, mark)
}

// writeRestoreSnapshot writes state as the only snapshot of the node's
// file snapshot store, at index 1 and term 1, with a configuration of the
// node alone as a voter, and reads it back to check it.
func writeRestoreSnapshot(state *fsm.FSM, cfg RestoreConfig) error {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, retainSnapshots, cfg.Logger.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("cluster: restore: open snapshot store: %w", err)
	}
	addr := raft.ServerAddress(cfg.RaftAddr)
	// The store only asks the transport to encode the configuration for
	// pre-v1 snapshot readers; nothing is sent.
	_, trans := raft.NewInmemTransport(addr)
	defer trans.Close()
	sink, err := snaps.Create(raft.SnapshotVersionMax, 1, 1, restoredConfiguration(cfg), 1, trans)
	if err != nil {
		return fmt.Errorf("cluster: restore: create snapshot: %w", err)
	}
	snap, err := state.Snapshot()
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: restore: %w", err)
	}
	defer snap.Release()
	if err := snap.Persist(sink); err != nil { // Persist closes or cancels the sink
		return fmt.Errorf("cluster: restore: write snapshot: %w", err)
	}

	// Read it back as Raft will when the node starts.
	list, err := snaps.List()
	if err != nil || len(list) != 1 {
		return fmt.Errorf("cluster: restore: the snapshot written is not listed (%d snapshots): %v", len(list), err)
	}
	meta, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("cluster: restore: read the snapshot back: %w", err)
	}
	defer rc.Close()
	check := fsm.New(nil)
	if err := check.Restore(io.NopCloser(rc)); err != nil {
		return fmt.Errorf("cluster: restore: read the snapshot back: %w", err)
	}
	if check.Len() != state.Len() || check.ClusterID() != state.ClusterID() || meta.Index != 1 ||
		len(meta.Configuration.Servers) != 1 || meta.Configuration.Servers[0].Address != addr {
		return errors.New("cluster: restore: the snapshot read back differs from the one written")
	}
	return nil
}

// createdDir records what prepareEmptyDir created, to undo it.
type createdDir struct {
	dir     string
	created bool // the directory itself did not exist
}

// prepareEmptyDir makes sure dir exists and is empty.
func prepareEmptyDir(dir string) (*createdDir, error) {
	if dir == "" {
		return nil, errors.New("cluster: restore: no data directory given")
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("cluster: restore: create data directory: %w", err)
		}
		return &createdDir{dir: dir, created: true}, nil
	case err != nil:
		return nil, fmt.Errorf("cluster: restore: %w", err)
	case len(entries) > 0:
		return nil, fmt.Errorf("%w: %s holds %d entries (%s first); a restore creates a new node: give a new or empty directory",
			ErrDataDirNotEmpty, dir, len(entries), entries[0].Name())
	}
	return &createdDir{dir: dir}, nil
}

// undo removes what was written into the directory, and the directory if
// it was created.
func (c *createdDir) undo() {
	if c.created {
		_ = os.RemoveAll(c.dir)
		return
	}
	entries, _ := os.ReadDir(c.dir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(c.dir, e.Name()))
	}
}

// syncDir makes the directory's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cluster: restore: sync %s: %w", dir, err)
	}
	return nil
}

// raiseToAllKeysFloor commits, before cmd, floors that raise every key
// cmd reserves or floors whose high-water mark is below the floor a
// restore set for it (floorOf: backup.AllKeysFloor for counters,
// backup.SnowflakeTimeFloor for Snowflake workers' time) to that floor. Keys created after the backup a cluster was restored from existed
// in the old cluster but not in the backup; this keeps them from handing
// out the old cluster's IDs again. apply calls it for every command, so
// no reservation escapes it; it costs a lookup per op, and an entry of its
// own only the first time a key below the floor is used.
//
// The leader decides from its own state, which may lag the log: a floor
// committed needlessly changes nothing (a floor never lowers a mark), and
// a mark it sees at or above the floor stays so, since marks never fall.
// The floors commit as an entry of their own before cmd's, so cmd and its
// results are left as the caller made them.
func (n *Node) raiseToAllKeysFloor(ctx context.Context, cmd fsm.Command) error {
	allKeys, time := n.allKeysFloor(), n.fsm.HighWater(backup.SnowflakeTimeFloor)
	if allKeys == 0 && time == 0 {
		return nil
	}
	var (
		ops    []fsm.Op
		raised = map[fsm.Key]bool{}
	)
	for _, op := range cmd.Ops {
		if op.Kind != fsm.OpReserve && op.Kind != fsm.OpFloor || raised[op.Key] {
			continue
		}
		floor := restoreFloorOf(op.Key, allKeys, time)
		if floor == 0 || n.fsm.HighWater(op.Key) >= floor {
			continue
		}
		raised[op.Key] = true
		ops = append(ops, fsm.Op{Kind: fsm.OpFloor, Key: op.Key, Value: floor})
	}
	if len(ops) == 0 {
		return nil
	}
	f := n.raft.Apply(fsm.Command{Ops: ops}.Encode(), n.cfg.ApplyTimeout)
	if err := n.await(ctx, f); err != nil {
		return err
	}
	if err, ok := f.Response().(error); ok {
		return err
	}
	return nil
}

// allKeysFloor returns the cluster's floor of every key: 0 unless the
// cluster was restored from a backup.
func (n *Node) allKeysFloor() uint64 {
	return n.fsm.HighWater(backup.AllKeysFloor)
}

// floorOf returns the floor a restore set for key: the floor of every
// counter (AllKeysFloor), or for a Snowflake worker's reserved time the
// floor of every worker's time (SnowflakeTimeFloor, in milliseconds: a
// counter's floor there would push the worker's time hours ahead). The
// floor keys themselves have none. 0 unless the cluster was restored.
func (n *Node) floorOf(key fsm.Key) uint64 {
	return restoreFloorOf(key, n.allKeysFloor(), n.fsm.HighWater(backup.SnowflakeTimeFloor))
}

// restoreFloorOf is floorOf given the two floors a restore sets.
func restoreFloorOf(key fsm.Key, allKeys, time uint64) uint64 {
	switch {
	case key == backup.AllKeysFloor || key == backup.SnowflakeTimeFloor:
		return 0
	case key.Store == fsm.SnowflakeTimeStore:
		return time
	}
	return allKeys
}
