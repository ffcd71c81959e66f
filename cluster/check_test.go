package cluster

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// Shape of the data directory buildDataDir makes.
const (
	fixtureBatchKeys    = 64 // new keys per Raft entry
	fixtureBatchesFirst = 40 // entries before the snapshot
	fixtureTrailingLogs = 32 // entries the snapshot leaves in the log
)

// buildDataDir runs a real node and leaves its data directory as a node
// that ran for a while does: a snapshot, a log compacted up to it, entries
// after it, and a raft.db whose last pages are in use (so that cutting 16
// or 32 KiB off the end removes pages the log needs, as it does on a
// well-filled file). Every entry reserves fixtureBatchKeys new keys.
func buildDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.TrailingLogs = fixtureTrailingLogs
	cfg.SnapshotThreshold = 1 << 40 // snapshots only when the test asks
	n := startNode(t, cfg)
	defer n.Close()
	batch := func(prefix string, i int) {
		t.Helper()
		ops := make([]fsm.Op, fixtureBatchKeys)
		for k := range ops {
			ops[k] = fsm.Op{Kind: fsm.OpReserve, Key: fsm.Key{Store: "default", Name: fmt.Sprintf("%s-%04d-%02d", prefix, i, k)}, Want: 100, Need: 1}
		}
		if _, err := n.ReserveBatch(ctx(t), ops); err != nil {
			t.Fatal(err)
		}
	}
	for i := range fixtureBatchesFirst {
		batch("a", i)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < fixtureTrailingLogs || !tailInUse(t, filepath.Join(dir, raftDBFile)); i++ {
		if i > 20000 {
			t.Fatal("raft.db never had its last 16 KiB in use")
		}
		batch("b", i)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if !tailInUse(t, filepath.Join(dir, raftDBFile)) {
		t.Fatal("closing the node changed raft.db's layout")
	}
	return dir
}

// tailInUse reports whether the last 16 KiB of the bbolt file at path hold
// pages its last transaction uses. It reads the meta pages with plain
// reads, so it works while a node holds the file.
func tailInUse(t *testing.T, path string) bool {
	t.Helper()
	m, size := lastMeta(t, path)
	return size >= 64<<10 && m.pgid*uint64(m.pageSize) > uint64(size)-16<<10
}

// lastMeta returns the meta page bbolt uses in the file at path, and the
// file's size.
func lastMeta(t *testing.T, path string) (boltMeta, int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m0, err0 := parseBoltMeta(b)
	if err0 != nil {
		t.Fatalf("meta page 0: %v", err0)
	}
	m1, err1 := parseBoltMeta(b[m0.pageSize:])
	if err1 == nil && m1.txid > m0.txid {
		return m1, int64(len(b))
	}
	return m0, int64(len(b))
}

// logRange returns the first and last index of the log in raft.db.
func logRange(t *testing.T, dir string) (first, last uint64) {
	t.Helper()
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, raftDBFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if first, err = store.FirstIndex(); err != nil {
		t.Fatal(err)
	}
	if last, err = store.LastIndex(); err != nil {
		t.Fatal(err)
	}
	return first, last
}

// middleCommand returns the index of a command entry in the middle of the
// log (after the snapshot, since buildDataDir's log starts there).
func middleCommand(t *testing.T, dir string) uint64 {
	t.Helper()
	first, last := logRange(t, dir)
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, raftDBFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for i := (first + last) / 2; i <= last; i++ {
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	t.Fatal("no command entry in the second half of the log")
	return 0
}

// flipEntryBit flips one bit in the data of the log entry at index, the
// way a bad disk sector or a stray write would, and stores it back through
// raft-boltdb, so that only the entry's payload is damaged.
func flipEntryBit(t *testing.T, dir string, index uint64) {
	t.Helper()
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, raftDBFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var l raft.Log
	if err := store.GetLog(index, &l); err != nil {
		t.Fatal(err)
	}
	l.Data[len(l.Data)/2] ^= 0x10
	if err := store.StoreLog(&l); err != nil {
		t.Fatal(err)
	}
}

// inUsePage returns want if bbolt uses that page of the file at path for
// the tree (a branch or leaf page), else the first page after the meta
// pages that it uses so: random bytes in a free page harm nothing.
func inUsePage(t *testing.T, path string, want int) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	page := -1
	err = db.View(func(tx *bbolt.Tx) error {
		for _, id := range []int{want, 2, 3, 4, 5, 6, 7, 8, 9, 10} {
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info != nil && (info.Type == "leaf" || info.Type == "branch") {
				page = id
				return nil
			}
		}
		return errors.New("no leaf or branch page among the first ten")
	})
	if err != nil {
		t.Fatal(err)
	}
	if page != want {
		t.Logf("page %d is free; damaging page %d instead", want, page)
	}
	return page
}

// pageOfType returns the first page of the file at path that bbolt uses
// as typ ("branch", "leaf").
func pageOfType(t *testing.T, path, typ string) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	page := -1
	_ = db.View(func(tx *bbolt.Tx) error {
		for id := 2; ; id++ {
			info, err := tx.Page(id)
			if err != nil || info == nil {
				return nil
			}
			if info.Type == typ {
				page = id
				return nil
			}
		}
	})
	if page < 0 {
		t.Fatalf("raft.db has no %s page", typ)
	}
	return page
}

// flipByte XORs the byte at off in the file at path with mask.
func flipByte(t *testing.T, path string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// freePage returns a free page of the file at path, or -1.
func freePage(t *testing.T, path string) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	page := -1
	_ = db.View(func(tx *bbolt.Tx) error {
		for id := 2; ; id++ {
			info, err := tx.Page(id)
			if err != nil || info == nil {
				return nil
			}
			if info.Type == "free" {
				page = id
				return nil
			}
		}
	})
	return page
}

// overwrite writes random bytes (from a fixed seed) over n bytes of the
// file at path, starting at off.
func overwrite(t *testing.T, path string, off int64, n int) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(off), 11))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func truncateBy(t *testing.T, path string, n int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()-n); err != nil {
		t.Fatal(err)
	}
}

// newestSnapshot returns the directory of the newest snapshot in dir.
func newestSnapshot(t *testing.T, dir string) string {
	t.Helper()
	rep, err := CheckDataDir(dir, CheckOptions{})
	if err != nil || len(rep.Snapshots) == 0 {
		t.Fatalf("no snapshot in %s: %v", dir, err)
	}
	return filepath.Join(dir, snapshotsDir, rep.Snapshots[0].ID)
}

// damageSnapshotState flips a bit in the newest snapshot's state. With
// rewriteCRC it also rewrites the CRC-64 in meta.json to match, as if the
// state had been damaged before it was written (in memory): Raft's own
// check then passes and only the state machine's checksum can tell.
func damageSnapshotState(t *testing.T, dir string, rewriteCRC bool) {
	t.Helper()
	snap := newestSnapshot(t, dir)
	state := filepath.Join(snap, snapshotStateFile)
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x04
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if !rewriteCRC {
		return
	}
	metaPath := filepath.Join(snap, snapshotMetaFile)
	var meta map[string]any
	mb, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &meta); err != nil {
		t.Fatal(err)
	}
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	h.Write(b)
	meta["CRC"] = h.Sum(nil)
	if mb, err = json.Marshal(meta); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(metaPath, mb, 0o600); err != nil {
		t.Fatal(err)
	}
}

// setStable writes value under key in raft.db's stable store.
func setStable(t *testing.T, dir, key string, value []byte) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, raftDBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(boltConfBucket).Put([]byte(key), value)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// requireDamage fails the test unless err is a DamageError about a file
// whose path ends in file (and at log index index, when not 0) whose
// message contains reason and the remedy.
func requireDamage(t *testing.T, err error, dir, file string, index uint64, reason string) *DamageError {
	t.Helper()
	var de *DamageError
	if !errors.As(err, &de) || !errors.Is(err, ErrDamaged) {
		t.Fatalf("got %v, want a DamageError", err)
	}
	if !strings.HasSuffix(de.File, file) || de.DataDir != dir {
		t.Errorf("damage in %s of %s, want %s of %s", de.File, de.DataDir, file, dir)
	}
	if de.Index != index {
		t.Errorf("damage at index %d, want %d", de.Index, index)
	}
	msg := err.Error()
	t.Logf("%v", msg)
	for _, want := range []string{reason, "stop this node, wipe its data directory " + dir, "--join", "re-admits it as a new member"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not contain %q", msg, want)
		}
	}
	return de
}

// TestCheckDataDirDetectsDamage damages copies of a real data directory in
// the ways disks and operators do, and checks that CheckDataDir names each
// one, in this process: none may crash the test binary (a SIGBUS, an
// invalid-freelist panic or a bbolt assertion would), and none may pass
// as intact. Damage that harms nothing (a free page, one meta page) must
// pass.
func TestCheckDataDirDetectsDamage(t *testing.T) {
	base := buildDataDir(t)
	index := middleCommand(t, base)
	first, _ := logRange(t, base)
	if first <= 1 {
		t.Fatalf("the log starts at %d: the fixture should have compacted it", first)
	}
	db := func(dir string) string { return filepath.Join(dir, raftDBFile) }
	m, _ := lastMeta(t, db(base))
	pageSize := int64(m.pageSize)
	// Random bytes in page 3 are damage if bbolt uses page 3, and harmless
	// if it is free, as it may be in a file that has seen many commits.
	page3File := raftDBFile
	if inUsePage(t, db(base), 3) != 3 {
		page3File = ""
	}

	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		file   string // "" for no damage
		index  uint64
		reason string
		check  func(t *testing.T, err error)
	}{
		{name: "intact", damage: func(*testing.T, string) {}},
		{name: "cut 16 KiB", damage: func(t *testing.T, dir string) { truncateBy(t, db(dir), 16<<10) },
			file: raftDBFile, reason: "the end of the file is missing"},
		{name: "cut 32 KiB", damage: func(t *testing.T, dir string) { truncateBy(t, db(dir), 32<<10) },
			file: raftDBFile, reason: "the end of the file is missing"},
		{name: "cut to one page", damage: func(t *testing.T, dir string) {
			if err := os.Truncate(db(dir), pageSize); err != nil {
				t.Fatal(err)
			}
		}, file: raftDBFile, reason: "shorter than its two"},
		{name: "random bytes in page 3", damage: func(t *testing.T, dir string) {
			overwrite(t, db(dir), 3*pageSize, int(pageSize))
		}, file: page3File, reason: "is damaged"},
		{name: "random bytes in a page in use", damage: func(t *testing.T, dir string) {
			overwrite(t, db(dir), int64(inUsePage(t, db(dir), 2))*pageSize, int(pageSize))
		}, file: raftDBFile, reason: "is damaged"},
		{name: "flipped bit in a branch page's key offset", damage: func(t *testing.T, dir string) {
			// A cursor never reads a branch page's keys, but bbolt's
			// consistency check does, on a goroutine of its own: a bad
			// offset there must be caught before it runs.
			p := pageOfType(t, db(dir), "branch")
			flipByte(t, db(dir), int64(p)*pageSize+16+3, 0x40) // element 0's pos, high byte
		}, file: raftDBFile, reason: "lies outside the page"},
		{name: "random bytes in the freelist page", damage: func(t *testing.T, dir string) {
			overwrite(t, db(dir), int64(m.freelist)*pageSize, 64)
		}, file: raftDBFile, reason: "freelist"},
		{name: "flipped bit in one entry", damage: func(t *testing.T, dir string) { flipEntryBit(t, dir, index) },
			file: raftDBFile, index: index, reason: "checksum mismatch",
			check: func(t *testing.T, err error) {
				if !errors.Is(err, fsm.ErrChecksum) {
					t.Errorf("%v does not wrap fsm.ErrChecksum", err)
				}
			}},
		{name: "entry missing", damage: func(t *testing.T, dir string) {
			store, err := raftboltdb.New(raftboltdb.Options{Path: db(dir)})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			if err := store.DeleteRange(index, index); err != nil {
				t.Fatal(err)
			}
		}, file: raftDBFile, reason: fmt.Sprintf("jumps from index %d to %d", index-1, index+1)},
		{name: "both meta pages", damage: func(t *testing.T, dir string) {
			overwrite(t, db(dir), 16+8, 16)
			overwrite(t, db(dir), pageSize+16+8, 16)
		}, file: raftDBFile, reason: "neither meta page is valid"},
		{name: "one meta page", damage: func(t *testing.T, dir string) { overwrite(t, db(dir), 16+24, 8) },
			check: func(t *testing.T, err error) {}},
		{name: "random bytes in a free page", damage: func(t *testing.T, dir string) {
			p := freePage(t, db(dir))
			if p < 0 {
				t.Skip("raft.db has no free page")
			}
			overwrite(t, db(dir), int64(p)*pageSize, int(pageSize))
		}},
		{name: "term cut short", damage: func(t *testing.T, dir string) { setStable(t, dir, "CurrentTerm", []byte{0, 0, 0, 2}) },
			file: raftDBFile, reason: "CurrentTerm is 4 bytes, not 8"},
		{name: "raft.db emptied", damage: func(t *testing.T, dir string) {
			if err := os.Truncate(db(dir), 0); err != nil {
				t.Fatal(err)
			}
		}, file: raftDBFile, reason: "it is empty or missing, but the directory holds snapshots"},
		{name: "snapshots deleted", damage: func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, snapshotsDir)); err != nil {
				t.Fatal(err)
			}
		}, file: raftDBFile, reason: fmt.Sprintf("entries 1 to %d are missing", first-1)},
		{name: "snapshot state damaged", damage: func(t *testing.T, dir string) { damageSnapshotState(t, dir, false) },
			file: snapshotStateFile, reason: "CRC-64 mismatch"},
		{name: "snapshot state missing", damage: func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(newestSnapshot(t, dir), snapshotStateFile)); err != nil {
				t.Fatal(err)
			}
		}, file: snapshotStateFile, reason: "it is missing"},
		{name: "snapshot meta.json damaged", damage: func(t *testing.T, dir string) {
			overwrite(t, filepath.Join(newestSnapshot(t, dir), snapshotMetaFile), 10, 8)
		}, file: snapshotMetaFile, reason: "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testutil.CopyDir(t, base)
			tt.damage(t, dir)
			rep, err := CheckDataDir(dir, CheckOptions{VerifySnapshots: true})
			if tt.file == "" {
				if err != nil {
					t.Fatalf("CheckDataDir: %v", err)
				}
				if rep.Entries == 0 || rep.LastIndex-rep.FirstIndex+1 != rep.Entries || rep.NodeID != "n1" || len(rep.Snapshots) != 1 {
					t.Errorf("report %+v", rep)
				}
			} else {
				requireDamage(t, err, dir, tt.file, tt.index, tt.reason)
			}
			if tt.check != nil {
				tt.check(t, err)
			}
		})
	}

	// What a node does with the same damage: New refuses the directory.
	t.Run("New refuses", func(t *testing.T) {
		dir := testutil.CopyDir(t, base)
		flipEntryBit(t, dir, index)
		n, err := New(testConfig(t, dir))
		if err == nil {
			n.Close()
			t.Fatal("New opened a data directory with a damaged entry")
		}
		requireDamage(t, err, dir, raftDBFile, index, "checksum mismatch")
	})
}

// TestWalkSurvivesWhatThePreCheckCatches runs the bbolt walk alone, without
// the plain-read checks of the meta and freelist pages that would catch
// these files first: reading them through bbolt's memory map faults
// (SIGBUS past the end of a cut file) or trips bbolt's assertions, and the
// walk must turn that into an error instead of crashing the process.
func TestWalkSurvivesWhatThePreCheckCatches(t *testing.T) {
	base := buildDataDir(t)
	m, _ := lastMeta(t, filepath.Join(base, raftDBFile))
	pageSize := int64(m.pageSize)
	tests := []struct {
		name   string
		damage func(path string)
	}{
		{"cut 16 KiB", func(path string) { truncateBy(t, path, 16<<10) }},
		{"cut 32 KiB", func(path string) { truncateBy(t, path, 32<<10) }},
		{"cut to half", func(path string) {
			if err := os.Truncate(path, int64(m.pgid)*pageSize/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"random bytes in a tree page", func(path string) { overwrite(t, path, int64(inUsePage(t, path, 3))*pageSize, int(pageSize)) }},
		{"random bytes in the freelist", func(path string) { overwrite(t, path, int64(m.freelist)*pageSize, int(pageSize)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testutil.CopyDir(t, base)
			rep := &CheckReport{DataDir: dir, LogFile: filepath.Join(dir, raftDBFile)}
			tt.damage(rep.LogFile)
			err := walkBolt(rep, CheckOptions{LockTimeout: time.Second})
			requireDamage(t, err, dir, raftDBFile, 0, "is damaged")
		})
	}
}

// TestReadSafelyTurnsFaultsIntoErrors reads a memory-mapped file past its
// end, which raises SIGBUS, inside readSafely: the test binary must live
// and get an error.
func TestReadSafelyTurnsFaultsIntoErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mapped")
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := mmapFile(f, 64<<10)
	if err != nil {
		t.Skipf("cannot map a file here: %v", err)
	}
	defer munmapFile(data)
	if err := os.Truncate(path, 4<<10); err != nil {
		t.Fatal(err)
	}
	err = readSafely(func() error {
		touch(data[32<<10 : 33<<10])
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "reading it failed") {
		t.Fatalf("readSafely = %v, want the fault as an error", err)
	}
	t.Logf("%v", err)
	// A panic is an error too, and the goroutine's fault mode is restored.
	if err := readSafely(func() error { panic("assertion failed: test") }); err == nil {
		t.Fatal("readSafely let a panic through as success")
	}
	if debug.SetPanicOnFault(false) {
		t.Error("readSafely left panic-on-fault on")
	}
}

// TestCheckDataDirReport checks what CheckDataDir reports about an intact
// directory: it must match what the node wrote.
func TestCheckDataDirReport(t *testing.T) {
	dir := buildDataDir(t)
	first, last := logRange(t, dir)
	rep, err := CheckDataDir(dir, CheckOptions{VerifySnapshots: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.FirstIndex != first || rep.LastIndex != last || rep.Entries != last-first+1 {
		t.Errorf("log %d..%d (%d entries), want %d..%d", rep.FirstIndex, rep.LastIndex, rep.Entries, first, last)
	}
	if rep.Commands == 0 || rep.Commands > rep.Entries || rep.CurrentTerm == 0 {
		t.Errorf("%d commands of %d entries, term %d", rep.Commands, rep.Entries, rep.CurrentTerm)
	}
	if len(rep.Snapshots) != 1 {
		t.Fatalf("%d snapshots, want 1", len(rep.Snapshots))
	}
	s := rep.Snapshots[0]
	if !s.CRCChecked || !s.Parsed || s.Keys != fixtureBatchesFirst*fixtureBatchKeys || s.AppliedIndex > s.Index || s.Index+1 < first {
		t.Errorf("snapshot %+v: want %d keys, verified, and reaching the log at %d", s, fixtureBatchesFirst*fixtureBatchKeys, first)
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("warnings on an intact directory: %v", rep.Warnings)
	}

	// Without VerifySnapshots the newest snapshot's CRC is still checked.
	rep, err = CheckDataDir(dir, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Snapshots[0]; !s.CRCChecked || s.Parsed {
		t.Errorf("quick check of the snapshot: %+v", s)
	}

	// A directory no node has used yet passes and reports nothing.
	empty := t.TempDir()
	rep, err = CheckDataDir(empty, CheckOptions{})
	if err != nil || rep.LogFileSize != 0 || rep.Entries != 0 || rep.NodeID != "" {
		t.Errorf("empty directory: %+v, %v", rep, err)
	}
	if _, err := CheckDataDir(filepath.Join(empty, "missing"), CheckOptions{}); err == nil || errors.Is(err, ErrDamaged) {
		t.Errorf("missing directory: %v, want an error that is not damage", err)
	}
}

// TestCheckDecodesEntriesAsRaftBoltDB checks that the check reads every log
// entry as Raft will: decodeLog must give what raft-boltdb's GetLog gives.
func TestCheckDecodesEntriesAsRaftBoltDB(t *testing.T) {
	dir := buildDataDir(t)
	path := filepath.Join(dir, raftDBFile)
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bbolt.Tx) error {
		dec := newLogDecoder()
		c := tx.Bucket(boltLogsBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var got, want raft.Log
			if err := decodeLog(dec, v, &got); err != nil {
				return err
			}
			if err := store.GetLog(got.Index, &want); err != nil {
				return err
			}
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("entry %d: decodeLog gives %+v, GetLog %+v", got.Index, got, want)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no entries compared")
	}
}

// TestCheckDataDirRefusesRunningNode checks that the check never reads a
// directory a running node holds, and says so within its lock timeout.
func TestCheckDataDirRefusesRunningNode(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, testConfig(t, dir))
	defer n.Close()
	start := time.Now()
	_, err := CheckDataDir(dir, CheckOptions{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrDataDirInUse) || errors.Is(err, ErrDamaged) {
		t.Fatalf("CheckDataDir on a running node: %v, want ErrDataDirInUse", err)
	}
	if !strings.Contains(err.Error(), "is another ordinal using this data directory?") {
		t.Errorf("message %q does not say why", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("refusing took %v", took)
	}
}

// extractV1Node copies testdata/v1-node, a data directory written by
// ordinal before commands had checksums, to a temporary directory.
func extractV1Node(t *testing.T) string {
	t.Helper()
	dir := testutil.CopyDir(t, filepath.Join("testdata", "v1-node"))
	gz, err := os.Open(filepath.Join(dir, raftDBFile+".gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer gz.Close()
	r, err := gzip.NewReader(gz)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, raftDBFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, extra := range []string{raftDBFile + ".gz", "README.md"} {
		if err := os.Remove(filepath.Join(dir, extra)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestV1DataDirStillStarts checks that a node whose log and snapshot were
// written in format version 1 passes the check, starts, replays to the
// state it had, and hands out IDs above it.
func TestV1DataDirStillStarts(t *testing.T) {
	dir := extractV1Node(t)
	rep, err := CheckDataDir(dir, CheckOptions{VerifySnapshots: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.NodeID != "n1" || rep.Entries != 26 || len(rep.Snapshots) != 1 || rep.Snapshots[0].Index != 15 {
		t.Errorf("report %+v", rep)
	}
	n := startNode(t, testConfig(t, dir))
	defer n.Close()
	want := map[fsm.Key]uint64{
		{Store: "default", Name: "orders"}: 1500,
		{Store: "default", Name: "users"}:  9000,
		{Store: "other", Name: "ключ"}:     35,
	}
	// The node is ready once it applied every earlier entry.
	for k, hw := range want {
		if got, err := n.HighWater(ctx(t), k); err != nil || got != hw {
			t.Errorf("high-water mark of %v = %d, %v; want %d", k, got, err, hw)
		}
	}
	r, _, err := n.Reserve(ctx(t), fsm.Key{Store: "default", Name: "orders"}, 10, 1)
	if err != nil || r.First != 1501 {
		t.Errorf("reservation after the upgrade: %+v, %v; want one from 1501", r, err)
	}
}

// withoutStartupCheck lets New open a damaged directory, so that a test
// can see what the node does when damage reaches it at run time.
func withoutStartupCheck(t *testing.T) {
	saved := checkOnOpen
	checkOnOpen = func(*Node) error { return nil }
	t.Cleanup(func() { checkOnOpen = saved })
}

// TestNodeStopsOnDamagedEntry runs a real node over a log with a damaged
// entry after its snapshot, with the start-up check out of the way: Raft
// replays the entry, the state machine refuses it, and the node must stop
// (Raft shut down, not ready, not healthy, no high-water mark, no
// snapshot) and say which entry and what to do.
func TestNodeStopsOnDamagedEntry(t *testing.T) {
	dir := buildDataDir(t)
	index := middleCommand(t, dir)
	flipEntryBit(t, dir, index)
	snapsBefore, err := os.ReadDir(filepath.Join(dir, snapshotsDir))
	if err != nil {
		t.Fatal(err)
	}
	withoutStartupCheck(t)

	var logs testutil.SyncBuffer
	cfg := testConfig(t, dir)
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = n.WaitReady(wctx)
	requireDamage(t, err, dir, raftDBFile, index, "checksum mismatch")
	select {
	case <-n.Failed():
	default:
		t.Fatal("Failed is not closed")
	}
	if !errors.Is(n.Err(), fsm.ErrChecksum) {
		t.Errorf("Err() = %v", n.Err())
	}
	waitFor(t, "raft to shut down", func() bool { return n.raft.State() == raft.Shutdown })
	if n.Healthy() || n.IsLeader() {
		t.Error("a stopped node reports itself healthy or leading")
	}
	if _, err := n.HighWater(ctx(t), fsm.Key{Store: "default", Name: "a-0000-00"}); !errors.Is(err, ErrDamaged) {
		t.Errorf("HighWater on a stopped node: %v, want ErrDamaged", err)
	}
	if _, err := n.ConfirmableTerm(); err == nil {
		t.Error("a stopped node confirms its term")
	}
	if _, _, err := n.Reserve(ctx(t), fsm.Key{Store: "default", Name: "x"}, 1, 1); err == nil {
		t.Error("a stopped node reserved IDs")
	}
	if err := n.Snapshot(); err == nil {
		t.Error("a stopped node took a snapshot")
	}
	snapsAfter, err := os.ReadDir(filepath.Join(dir, snapshotsDir))
	if err != nil || len(snapsAfter) != len(snapsBefore) {
		t.Errorf("snapshots changed: %d before, %d after (%v)", len(snapsBefore), len(snapsAfter), err)
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("the log entry at index %d", index)) {
		t.Errorf("the log does not name the entry:\n%s", logs.String())
	}
}

// TestNodeStopsOnUnrestorableSnapshot damages the newest snapshot's state
// with a matching CRC-64 (as if it was damaged in memory before it was
// written): the start-up check's CRC passes, Raft restores it, the state
// machine's own checksum fails, and the node must refuse to start and
// name the snapshots; Raft must not fall back to replaying a log that
// lacks the entries the snapshot covered. A full check finds it too.
func TestNodeStopsOnUnrestorableSnapshot(t *testing.T) {
	dir := buildDataDir(t)
	damageSnapshotState(t, dir, true)
	if _, err := CheckDataDir(dir, CheckOptions{}); err != nil {
		t.Fatalf("the quick check should pass (the CRC-64 matches): %v", err)
	}
	// The state machine reads the snapshot as a stream: the flipped bit
	// may break its structure before the checksum at its end is reached.
	_, err := CheckDataDir(dir, CheckOptions{VerifySnapshots: true})
	requireDamage(t, err, dir, snapshotStateFile, 0, "malformed command or snapshot")

	n, err := New(testConfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	err = n.Start(ctx(t))
	requireDamage(t, err, dir, snapshotsDir, 0, "a snapshot could not be restored")
	if !errors.Is(err, fsm.ErrMalformed) {
		t.Errorf("%v does not wrap fsm.ErrMalformed", err)
	}
	if werr := n.WaitReady(ctx(t)); !errors.Is(werr, ErrDamaged) {
		t.Errorf("WaitReady after a failed start: %v", werr)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
}

// BenchmarkCheckDataDir measures the start-up check on a log of 10240
// entries (Raft's TrailingLogs default, what a busy node keeps), one
// reservation each.
func BenchmarkCheckDataDir(b *testing.B) {
	dir := b.TempDir()
	writeLog(b, dir, 10240)
	b.ResetTimer()
	for b.Loop() {
		if _, err := CheckDataDir(dir, CheckOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// writeLog writes a raft.db of n reservation entries (and a stable store)
// straight through raft-boltdb, as Raft would have.
func writeLog(tb testing.TB, dir string, n int) {
	tb.Helper()
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, raftDBFile), NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer store.Close()
	if err := store.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		tb.Fatal(err)
	}
	logs := make([]*raft.Log, 0, 256)
	for i := 1; i <= n; i++ {
		cmd := fsm.Command{Ops: []fsm.Op{{Kind: fsm.OpReserve, Key: fsm.Key{Store: "default", Name: fmt.Sprintf("key-%06d", i%1000)}, Want: 4096, Need: 1}}}
		logs = append(logs, &raft.Log{Index: uint64(i), Term: 3, Type: raft.LogCommand, Data: cmd.Encode(), AppendedAt: time.Unix(1700000000, 0)})
		if len(logs) == cap(logs) || i == n {
			if err := store.StoreLogs(logs); err != nil {
				tb.Fatal(err)
			}
			logs = logs[:0]
		}
	}
}

// TestCheckDataDirCost measures the check on 10240 entries and fails if
// it would slow a start noticeably: budget 1 s (10 s under the race
// detector); it takes a few tens of milliseconds.
func TestCheckDataDirCost(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 10240)
	budget := time.Second
	if raceEnabled {
		budget *= 10
	}
	start := time.Now()
	rep, err := CheckDataDir(dir, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	st, _ := os.Stat(filepath.Join(dir, raftDBFile))
	t.Logf("checked %d entries in a %d-byte raft.db in %v", rep.Entries, st.Size(), took)
	if rep.Entries != 10240 || rep.Commands != 10240 {
		t.Errorf("report %+v", rep)
	}
	if took > budget {
		t.Errorf("the check took %v, budget %v", took, budget)
	}
}
