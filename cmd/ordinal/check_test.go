package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc64"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// checkFixture runs a real node in this process and leaves its data
// directory as a node that ran for a while does: a snapshot, entries after
// it, and a raft.db whose last 16 KiB are pages in use, so that cutting 16
// or 32 KiB off removes pages the log needs.
func checkFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	n, err := cluster.New(cluster.Config{
		NodeID: "n1", DataDir: dir, RaftAddr: "127.0.0.1:0", Bootstrap: true,
		TrailingLogs: 32, SnapshotThreshold: 1 << 40,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	batch := func(prefix string, i int) {
		ops := make([]fsm.Op, 64)
		for k := range ops {
			ops[k] = fsm.Op{Kind: fsm.OpReserve, Key: fsm.Key{Store: "default", Name: fmt.Sprintf("%s-%04d-%02d", prefix, i, k)}, Want: 100, Need: 1}
		}
		if _, err := n.ReserveBatch(ctx, ops); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 40 {
		batch("a", i)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 32 || !boltTailInUse(t, filepath.Join(dir, "raft.db")); i++ {
		if i > 20000 {
			t.Fatal("raft.db never had its last 16 KiB in use")
		}
		batch("b", i)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// boltTailInUse reports whether the bbolt file at path uses pages in its
// last 16 KiB, reading its meta pages (bbolt's format: a 16-byte page
// header, then the meta fields; pgid at +40 and txid at +48) with plain
// reads, so it works while a node holds the file.
func boltTailInUse(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	pageSize := int(ne.Uint32(b[16+8:]))
	meta := func(off int) (pgid, txid uint64) { return ne.Uint64(b[off+16+40:]), ne.Uint64(b[off+16+48:]) }
	pgid, txid := meta(0)
	if pgid1, txid1 := meta(pageSize); txid1 > txid {
		pgid = pgid1
	}
	return len(b) >= 64<<10 && pgid*uint64(pageSize) > uint64(len(b))-16<<10
}

// flipCommandBit flips a bit in the data of a command entry in the middle
// of dir's log and returns its index.
func flipCommandBit(t *testing.T, dir string) uint64 {
	t.Helper()
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	first, _ := store.FirstIndex()
	last, _ := store.LastIndex()
	for i := (first + last) / 2; i <= last; i++ {
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type == raft.LogCommand {
			l.Data[len(l.Data)/3] ^= 0x02
			if err := store.StoreLog(&l); err != nil {
				t.Fatal(err)
			}
			return i
		}
	}
	t.Fatal("no command entry")
	return 0
}

func cutFile(t *testing.T, path string, n int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()-n); err != nil {
		t.Fatal(err)
	}
}

// scribble writes n random bytes (fixed seed) at off in the file at path.
func scribble(t *testing.T, path string, off int64, n int) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, uint64(off)))
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

// treePage returns want if bbolt uses that page of the file at path for its
// tree (a branch or leaf page), else the first page that it uses so.
func treePage(t *testing.T, path string, want int) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	page := -1
	err = db.View(func(tx *bbolt.Tx) error {
		// want first, then from the first page after the metas.
		for i := 1; i < 64; i++ {
			id := want
			if i > 1 {
				id = i
			}
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info != nil && (info.Type == "leaf" || info.Type == "branch") {
				page = id
				return nil
			}
		}
		return fmt.Errorf("no tree page near page %d", want)
	})
	if err != nil {
		t.Fatal(err)
	}
	if page != want {
		t.Logf("page %d is free; damaging page %d instead", want, page)
	}
	return page
}

// serveArgs are the flags of `ordinal serve` on dataDir with free ports.
func serveArgs(t *testing.T, dataDir string) []string {
	return []string{"--node-id", "n1", "--data-dir", dataDir, "--grpc-addr", testutil.FreeAddr(t), "--raft-addr", testutil.FreeAddr(t)}
}

// requireRefusal fails the test unless r is an exit with status 1 whose
// stderr has every one of wants and the remedy, and no crash.
func requireRefusal(t *testing.T, what string, r result, wants ...string) {
	t.Helper()
	if r.code != 1 {
		t.Fatalf("%s exited %d, want 1\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
	}
	for _, bad := range []string{"panic:", "SIGBUS", "fatal error", "goroutine "} {
		if strings.Contains(r.stderr, bad) {
			t.Fatalf("%s crashed (%q in stderr):\n%s", what, bad, r.stderr)
		}
	}
	wants = append(wants, "wipe its data directory", "--join")
	for _, want := range wants {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("%s: stderr does not contain %q:\n%s", what, want, r.stderr)
		}
	}
}

// TestCheckCommand runs `ordinal check` on a real data directory and on
// copies damaged the ways disks do, and `ordinal serve` on the same
// copies: both must exit 1 with a message naming the damaged file (and the
// entry) and what to do, never crash; an intact directory must pass, with
// a report of what was checked.
func TestCheckCommand(t *testing.T) {
	t.Parallel()
	base := checkFixture(t)

	r := runOrdinal(t, nil, "check", "--data-dir", base)
	if r.code != 0 {
		t.Fatalf("check of an intact directory exited %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"node id    n1 (node.json)", "raft.db", "entries, index ", "commands", "snapshot   ", "keys", "no damage found"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check report does not contain %q:\n%s", want, r.stdout)
		}
	}

	raftDB := func(dir string) string { return filepath.Join(dir, "raft.db") }
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string) []string // returns what the message must also name
	}{
		{"cut 16 KiB", func(t *testing.T, dir string) []string {
			cutFile(t, raftDB(dir), 16<<10)
			return []string{raftDB(dir), "the end of the file is missing"}
		}},
		{"cut 32 KiB", func(t *testing.T, dir string) []string {
			cutFile(t, raftDB(dir), 32<<10)
			return []string{raftDB(dir), "the end of the file is missing"}
		}},
		{"random bytes in page 3", func(t *testing.T, dir string) []string {
			// Page 3 may be free in a file that has seen many commits
			// (random bytes there harm nothing); then the first page
			// of the tree takes its place.
			scribble(t, raftDB(dir), int64(treePage(t, raftDB(dir), 3))*4096, 4096)
			return []string{raftDB(dir)}
		}},
		{"flipped bit in one entry", func(t *testing.T, dir string) []string {
			index := flipCommandBit(t, dir)
			return []string{fmt.Sprintf("the log entry at index %d (in %s)", index, raftDB(dir)), "checksum mismatch"}
		}},
		{"snapshot damaged before it was written", func(t *testing.T, dir string) []string {
			damageSnapshotWithCRC(t, dir)
			return []string{filepath.Join(dir, "snapshots")}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := testutil.CopyDir(t, base)
			wants := tt.damage(t, dir)
			requireRefusal(t, "ordinal check", runOrdinal(t, nil, "check", "--data-dir", dir), wants...)
			requireRefusal(t, "ordinal serve", runOrdinal(t, nil, append([]string{"serve"}, serveArgs(t, dir)...)...), wants...)
		})
	}
}

// damageSnapshotWithCRC flips a bit in the state of dir's snapshot and
// rewrites Raft's CRC-64 to match, as if the state was damaged in memory
// before it was written: only the state machine's own checksum (and
// format) can tell.
func damageSnapshotWithCRC(t *testing.T, dir string) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no snapshot in %s: %v", dir, err)
	}
	sort.Strings(names)
	state := names[len(names)-1]
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x08
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	metaPath := filepath.Join(filepath.Dir(state), "meta.json")
	mb, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
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

// TestCheckRefusesARunningNode checks that `ordinal check` never reads the
// directory of a running node, and says why.
func TestCheckRefusesARunningNode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	grpcAddr := testutil.FreeAddr(t)
	p := startServe(t, grpcAddr, nil, "--node-id", "n1", "--data-dir", dir, "--grpc-addr", grpcAddr, "--raft-addr", testutil.FreeAddr(t))
	start := time.Now()
	r := runOrdinal(t, nil, "check", "--data-dir", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "stop the node first") || !strings.Contains(r.stderr, filepath.Join(dir, "raft.db")) {
		t.Fatalf("check of a running node's directory exited %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("refusing took %v", took)
	}
	// The node is unharmed and stops cleanly.
	p.waitServing(t)
}

// TestCheckUsage covers the command line: a fresh directory passes, a
// missing one and stray arguments fail.
func TestCheckUsage(t *testing.T) {
	t.Parallel()
	fresh := t.TempDir()
	if r := runOrdinal(t, nil, "check", "--data-dir", fresh); r.code != 0 || !strings.Contains(r.stdout, "none yet") {
		t.Errorf("check of an empty directory: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runOrdinal(t, nil, "check", "--data-dir", filepath.Join(fresh, "missing")); r.code != 1 || !strings.Contains(r.stderr, "not a data directory") {
		t.Errorf("check of a missing directory: exit %d\n%s", r.code, r.stderr)
	}
	if r := runOrdinal(t, nil, "check", "--data-dir", fresh, "extra"); r.code != 2 {
		t.Errorf("check with a stray argument: exit %d, want 2\n%s", r.code, r.stderr)
	}
	if r := runOrdinal(t, []string{"ORDINAL_DATA_DIR=" + fresh}, "check"); r.code != 0 {
		t.Errorf("check with ORDINAL_DATA_DIR: exit %d\n%s", r.code, r.stderr)
	}
}
