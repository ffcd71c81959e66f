package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// withCRC returns body followed by its CRC-32C trailer, so tests can craft
// snapshots whose checksum is right and whose content is wrong.
func withCRC(body []byte) []byte {
	sum := crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli))
	return binary.BigEndian.AppendUint32(append([]byte(nil), body...), sum)
}

// snapBody builds a snapshot body (everything before the CRC) field by
// field.
type snapBody []byte

func header() snapBody { return snapBody(snapshotMagic + "\x01") }

func (b snapBody) u(v uint64) snapBody    { return binary.AppendUvarint(b, v) }
func (b snapBody) s(v string) snapBody    { return appendString(b, v) }
func (b snapBody) raw(v ...byte) snapBody { return append(b, v...) }

// populated returns an FSM with every kind of state, built through Raft
// entries 1..3.
func populated(t testing.TB) *FSM {
	f := New(nil)
	applyLog(t, f, 1, Command{Ops: []Op{
		{Kind: OpInit, ClusterID: "cluster-1"},
		{Kind: OpSetNode, NodeID: "n2", Addr: "10.0.0.2:7000"},
		{Kind: OpSetNode, NodeID: "n1", Addr: "10.0.0.1:7000"},
	}})
	applyLog(t, f, 2, Command{Ops: []Op{
		reserve("default", "orders", 1, 100),
		reserve("default", "users", 1, 5),
		reserve("", "empty-store", 1, 1),
		reserve("other", "", 3, 3),
		floor("other", "\x00binary\xff", MaxID),
		floor("other", strings.Repeat("k", MaxKeyLen), 1<<40),
		floor(strings.Repeat("s", MaxStoreLen), "k", 77),
		// Names sharing their first 16 bytes, and names that differ only
		// by trailing zero bytes, exercise sortKeys' tie-breaking.
		floor("sorted", "0123456789abcdef-b", 1),
		floor("sorted", "0123456789abcdef-a", 2),
		floor("sorted", "0123456789abcdef", 3),
		floor("sorted", "a\x00", 4),
		floor("sorted", "a", 5),
		floor("sorted", "a\x00\x00", 6),
	}})
	applyLog(t, f, 3, Command{Ops: []Op{reserve("default", "orders", 1, 1)}})
	return f
}

func TestSnapshotRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		src  func(testing.TB) *FSM
	}{
		{"empty", func(testing.TB) *FSM { return New(nil) }},
		{"populated", populated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.src(t)
			b := snapshotBytes(t, src)

			dst := New(nil)
			applyLog(t, dst, 99, Command{Ops: []Op{reserve("stale", "k", 1, 1), {Kind: OpSetNode, NodeID: "stale", Addr: "x"}}})
			if err := restoreBytes(dst, b); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if want, got := dumpOf(src), dumpOf(dst); !equalDump(want, got) {
				t.Errorf("restored state differs:\nwant %+v\ngot  %+v", want, got)
			}
			if again := snapshotBytes(t, dst); !bytes.Equal(again, b) {
				t.Errorf("snapshot of the restored FSM differs from the original snapshot")
			}
		})
	}
}

func TestSnapshotLayout(t *testing.T) {
	f := New(nil)
	applyLog(t, f, 5, Command{Ops: []Op{
		{Kind: OpInit, ClusterID: "c"},
		{Kind: OpSetNode, NodeID: "n", Addr: "a"},
		reserve("s", "b", 2, 2),
		reserve("s", "a", 1, 1),
	}})
	want := withCRC(header().u(5).s("c").u(1).s("n").s("a").u(1).s("s").u(2).s("a").u(1).s("b").u(2))
	if got := snapshotBytes(t, f); !bytes.Equal(got, want) {
		t.Errorf("snapshot = %q\nwant       %q", got, want)
	}
}

// TestSnapshotIsPointInTime checks that entries applied after Snapshot
// returns do not leak into the persisted data.
func TestSnapshotIsPointInTime(t *testing.T) {
	f := populated(t)
	want := dumpOf(f)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	applyLog(t, f, 4, Command{Ops: []Op{reserve("default", "orders", 1, 1000), reserve("new", "k", 1, 1), {Kind: OpRemoveNode, NodeID: "n1"}}})
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dst := New(nil)
	if err := restoreBytes(dst, sink.buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if got := dumpOf(dst); !equalDump(want, got) {
		t.Errorf("persisted state is not the state at Snapshot time:\nwant %+v\ngot  %+v", want, got)
	}
}

// TestRestoreSmallReads feeds the snapshot through awkward readers to cover
// buffer refills at every boundary.
func TestRestoreSmallReads(t *testing.T) {
	src := populated(t)
	b := snapshotBytes(t, src)
	readers := map[string]func(io.Reader) io.Reader{
		"one byte":       iotest.OneByteReader,
		"half":           iotest.HalfReader,
		"data with EOF":  iotest.DataErrReader,
		"one byte + EOF": func(r io.Reader) io.Reader { return iotest.DataErrReader(iotest.OneByteReader(r)) },
	}
	for name, wrap := range readers {
		t.Run(name, func(t *testing.T) {
			dst := New(nil)
			if err := dst.Restore(io.NopCloser(wrap(bytes.NewReader(b)))); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if !equalDump(dumpOf(src), dumpOf(dst)) {
				t.Errorf("restored state differs")
			}
		})
	}
}

func TestRestoreRejectsCorruption(t *testing.T) {
	src := populated(t)
	good := snapshotBytes(t, src)
	valid := header().u(1).s("").u(0).u(0)
	tests := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"empty", nil, "truncated reading magic"},
		{"bad magic", withCRC(append(snapBody("ORDX\x01"), valid[5:]...)), "bad magic"},
		{"bad version 0", withCRC(append(snapBody("ORDS\x00"), valid[5:]...)), "unsupported snapshot version 0"},
		{"bad version 3", withCRC(append(snapBody("ORDS\x03"), valid[5:]...)), "unsupported snapshot version 3"},
		{"checksum mismatch", append(append([]byte(nil), valid...), 0, 0, 0, 0), "checksum mismatch"},
		{"missing checksum", []byte(valid), "truncated reading checksum"},
		{"trailing data", append(withCRC(valid), 0), "trailing data after checksum"},
		{"truncated applied index", []byte(header().raw(0x80)), "applied index"},
		{"non-shortest varint", withCRC(header().raw(0x81, 0x00).s("").u(0).u(0)), "not in shortest form"},
		{"oversize cluster id", withCRC(header().u(1).s(strings.Repeat("c", MaxNodeFieldLen+1)).u(0).u(0)), "cluster id is 1025 bytes"},
		{"empty node id", withCRC(header().u(1).s("").u(1).s("").s("a").u(0)), "empty id or address"},
		{"empty node address", withCRC(header().u(1).s("").u(1).s("n").s("").u(0)), "empty id or address"},
		{"nodes out of order", withCRC(header().u(1).s("").u(2).s("n2").s("a").s("n1").s("a").u(0)), `node id "n1" is not after "n2"`},
		{"duplicate node", withCRC(header().u(1).s("").u(2).s("n").s("a").s("n").s("b").u(0)), `node id "n" is not after "n"`},
		{"node count too high", []byte(header().u(1).s("").u(5).s("n").s("a").u(0)), "truncated"},
		{"store with no keys", withCRC(header().u(1).s("").u(0).u(1).s("s").u(0)), `store "s" has no keys`},
		{"oversize store name", withCRC(header().u(1).s("").u(0).u(1).s(strings.Repeat("s", MaxStoreLen+1)).u(1).s("k").u(1)), "store name is 257 bytes"},
		{"stores out of order", withCRC(header().u(1).s("").u(0).u(2).s("b").u(1).s("k").u(1).s("a").u(1).s("k").u(1)), `store "a" is not after "b"`},
		{"duplicate store", withCRC(header().u(1).s("").u(0).u(2).s("a").u(1).s("k").u(1).s("a").u(1).s("j").u(1)), `store "a" is not after "a"`},
		{"keys out of order", withCRC(header().u(1).s("").u(0).u(1).s("s").u(2).s("b").u(1).s("a").u(1)), `key "a" in store "s" is not after "b"`},
		{"duplicate key", withCRC(header().u(1).s("").u(0).u(1).s("s").u(2).s("k").u(1).s("k").u(2)), `key "k" in store "s" is not after "k"`},
		{"zero high-water", withCRC(header().u(1).s("").u(0).u(1).s("s").u(1).s("k").u(0)), "high-water mark 0 outside"},
		{"high-water above MaxID", withCRC(header().u(1).s("").u(0).u(1).s("s").u(1).s("k").u(MaxID + 1)), "high-water mark 9223372036854775808 outside"},
		{"oversize key", withCRC(header().u(1).s("").u(0).u(1).s("s").u(1).s(strings.Repeat("k", MaxKeyLen+1)).u(1)), "key is 1025 bytes"},
		{"key count too high", []byte(header().u(1).s("").u(0).u(1).s("s").u(3).s("k").u(1)), "truncated"},
		{"huge key count", []byte(header().u(1).s("").u(0).u(1).s("s").u(1 << 62).s("k").u(1)), "truncated"},
		{"truncated good snapshot", good[:len(good)/2], "truncated"},
	}
	if err := restoreBytes(New(nil), withCRC(valid)); err != nil {
		t.Fatalf("the base of the crafted cases does not restore: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRestoreFails(t, src, tt.data, tt.reason)
		})
	}
}

// TestRestoreRejectsEveryFlipAndTruncation damages a real snapshot at every
// byte and checks that each damaged copy is refused.
func TestRestoreRejectsEveryFlipAndTruncation(t *testing.T) {
	src := populated(t)
	good := snapshotBytes(t, src)
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0xff
		checkRestoreFails(t, src, bad, "")
	}
	for n := range len(good) {
		checkRestoreFails(t, src, good[:n], "")
	}
}

// checkRestoreFails restores data over a copy of src's state and checks
// that it fails with ErrMalformed (and reason, if not empty) and that the
// previous state survives.
func checkRestoreFails(t *testing.T, src *FSM, data []byte, reason string) {
	t.Helper()
	f := New(nil)
	if err := restoreBytes(f, snapshotBytes(t, src)); err != nil {
		t.Fatalf("setup Restore: %v", err)
	}
	before := dumpOf(f)
	err := restoreBytes(f, data)
	if err == nil {
		t.Fatalf("Restore of bad data (%d bytes) succeeded", len(data))
	}
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("Restore error %v does not wrap ErrMalformed", err)
	}
	if !strings.Contains(err.Error(), reason) {
		t.Errorf("Restore error %q does not contain %q", err, reason)
	}
	if !equalDump(before, dumpOf(f)) {
		t.Errorf("failed Restore changed the state")
	}
}

// TestRestoreDamagedCountsCostLittle offers snapshots whose counts claim
// far more entries than the stream holds, with a correct checksum over the
// body so that Restore parses it all. Each must be refused with
// ErrMalformed, and must not allocate room for what the count claims:
// Restore took key counts at their word (up to maxPresize) before the
// checksum was reached, about 0.9 GB of maps per damaged snapshot.
func TestRestoreDamagedCountsCostLittle(t *testing.T) {
	const budget = 16 << 20 // bytes one Restore may allocate
	v2 := func() snapBody { return snapBody(snapshotMagic + "\x02").u(1).s("") }
	keysHeld := func(n int) snapBody {
		b := header().u(1).s("").u(0).u(1).s("s").u(1 << 30)
		for i := range n {
			b = b.s(keyName(i)).u(1)
		}
		return b
	}
	tests := []struct {
		name   string
		body   snapBody
		budget uint64
	}{
		{"node count", header().u(1).s("").u(1 << 30).s("n").s("a"), budget},
		{"store count", header().u(1).s("").u(0).u(1 << 30).s("s").u(1).s("k").u(1), budget},
		{"key count maxPresize", header().u(1).s("").u(0).u(1).s("s").u(maxPresize).s("k").u(1), budget},
		{"key count just below shardAt", header().u(1).s("").u(0).u(1).s("s").u(shardAt - 1).s("k").u(1), budget},
		{"key count 1<<30", header().u(1).s("").u(0).u(1).s("s").u(1 << 30).s("k").u(1), budget},
		{"key count 1<<62", header().u(1).s("").u(0).u(1).s("s").u(1 << 62), budget},
		{"key count of the second store", header().u(1).s("").u(0).u(2).s("a").u(1).s("k").u(1).s("b").u(1 << 40).s("k").u(1), budget},
		{"snowflake store count", v2().u(0).u(0).u(1 << 30).s("sf").s("L").u(2), budget},
		{"worker count", v2().u(0).u(0).u(1).s("sf").s("L").u(2).u(1 << 30).u(0).s("n").s("i").u(0), budget},
		// The room grows with the keys actually read: a store starts as
		// one map with room for restoreRoom keys, and when they are
		// read and more are claimed, it becomes keyShards maps with room
		// for shardAt keys in all.
		{"key count 1<<30, restoreRoom keys held", keysHeld(restoreRoom), budget},
		// Past that, a damaged count costs room for at most
		// restoreGrowth times the keys read (here still room for shardAt
		// keys) plus the fill batches of keyShards maps (48 MiB), as a
		// store that really holds shardAt keys does.
		{"key count 1<<30, 20000 keys held", keysHeld(20000), 64 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := withCRC(tt.body)
			f := New(nil)
			applyLog(t, f, 1, Command{Ops: []Op{reserve("old", "k", 1, 1)}})
			before := dumpOf(f)
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			err := restoreBytes(f, data)
			runtime.ReadMemStats(&m1)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Restore error = %v, want ErrMalformed", err)
			}
			if !equalDump(before, dumpOf(f)) {
				t.Errorf("failed Restore changed the state")
			}
			alloc := m1.TotalAlloc - m0.TotalAlloc
			t.Logf("%d-byte snapshot: %d bytes allocated", len(data), alloc)
			if alloc > tt.budget {
				t.Errorf("Restore of a %d-byte snapshot allocated %.1f MiB, budget %d MiB", len(data), float64(alloc)/(1<<20), tt.budget>>20)
			}
		})
	}
}

// TestRestoreGrowsRoomInStages restores stores of sizes around the points
// where Restore grows the room in a store's maps (restoreRoom, and
// restoreGrowth-fold from there) and where a store becomes sharded, and
// checks that every key arrives with its mark, that the store has the
// shape newKeyMap gives that many keys, that the listing index matches
// and that the state snapshots to the same bytes.
func TestRestoreGrowsRoomInStages(t *testing.T) {
	sizes := []int{
		1, restoreRoom - 1, restoreRoom, restoreRoom + 1,
		shardAt - 1, shardAt, shardAt + 1,
		restoreRoom * restoreGrowth * 3, // sharded, then grown again
	}
	for _, n := range sizes {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			body := header().u(7).s("").u(0).u(2).s("big").u(uint64(n))
			for i := range n {
				body = body.s(keyName(i)).u(uint64(i) + 1)
			}
			body = body.s("small").u(1).s("k").u(5)
			data := withCRC(body)
			f := New(nil)
			if err := restoreBytes(f, data); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if f.Len() != n+1 {
				t.Fatalf("Len = %d, want %d", f.Len(), n+1)
			}
			d := dumpOf(f)
			for i := range n {
				if got := d.Stores["big"][keyName(i)]; got != uint64(i)+1 {
					t.Fatalf("%s has mark %d, want %d", keyName(i), got, i+1)
				}
			}
			wantShards := 1
			if n >= shardAt {
				wantShards = keyShards
			}
			if got := len(f.stores["big"].shards); got != wantShards {
				t.Errorf("store of %d keys restored as %d maps, want %d", n, got, wantShards)
			}
			checkIndex(t, f)
			if again := snapshotBytes(t, f); !bytes.Equal(again, data) {
				t.Errorf("snapshot of the restored state differs from the one restored")
			}
		})
	}
}

func TestRestoreReadError(t *testing.T) {
	src := populated(t)
	good := snapshotBytes(t, src)
	errBoom := errors.New("boom")
	tests := []struct {
		name string
		r    io.Reader
		want error
	}{
		{"error mid-stream", io.MultiReader(bytes.NewReader(good[:20]), iotest.ErrReader(errBoom)), errBoom},
		{"no progress", zeroReader{}, io.ErrNoProgress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(nil)
			applyLog(t, f, 1, Command{Ops: []Op{reserve("s", "k", 1, 1)}})
			before := dumpOf(f)
			err := f.Restore(io.NopCloser(tt.r))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Restore error = %v, want %v", err, tt.want)
			}
			if errors.Is(err, ErrMalformed) {
				t.Errorf("read failure %v reported as ErrMalformed", err)
			}
			if !equalDump(before, dumpOf(f)) {
				t.Errorf("failed Restore changed the state")
			}
		})
	}
}

// zeroReader returns (0, nil) forever, which io.Reader discourages but
// does not forbid.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestPersistWriteErrorCancelsSink(t *testing.T) {
	f := New(nil)
	fillKeys(t, f, "s", 20000) // Large enough to flush mid-body.
	size := len(snapshotBytes(t, f))
	for _, failAfter := range []int{1, snapshotBufSize + 1, size - 1} {
		snap, err := f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		sink := &memSink{failAfter: failAfter}
		err = snap.Persist(sink)
		if !errors.Is(err, errSinkFull) {
			t.Errorf("failAfter %d: Persist error = %v, want %v", failAfter, err, errSinkFull)
		}
		if !sink.cancelled {
			t.Errorf("failAfter %d: sink not cancelled", failAfter)
		}
		if sink.closed {
			t.Errorf("failAfter %d: sink closed after a write error", failAfter)
		}
		snap.Release()
	}
}

// TestSnapshotLargeRoundTrip round-trips 200k keys and checks every value.
func TestSnapshotLargeRoundTrip(t *testing.T) {
	const n = 200_000
	src := New(nil)
	fillKeys(t, src, "default", n)
	applyLog(t, src, src.AppliedIndex()+1, Command{Ops: []Op{floor("second", "k", 5)}})
	b := snapshotBytes(t, src)

	dst := New(nil)
	if err := restoreBytes(dst, b); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := dst.Len(); got != n+1 {
		t.Fatalf("Len = %d, want %d", got, n+1)
	}
	for i := range n {
		k := Key{Store: "default", Name: keyName(i)}
		if got, want := dst.HighWater(k), uint64(i)+1; got != want {
			t.Fatalf("HighWater(%s) = %d, want %d", k.Name, got, want)
		}
	}
	if got := dst.HighWater(Key{Store: "second", Name: "k"}); got != 5 {
		t.Errorf("HighWater(second/k) = %d, want 5", got)
	}
	if got, want := dst.AppliedIndex(), src.AppliedIndex(); got != want {
		t.Errorf("AppliedIndex = %d, want %d", got, want)
	}
}

// discardSink is a raft.SnapshotSink that throws data away, so benchmarks
// measure the FSM rather than a buffer.
type discardSink struct{ n int }

func (s *discardSink) Write(p []byte) (int, error) { s.n += len(p); return len(p), nil }
func (s *discardSink) Close() error                { return nil }
func (s *discardSink) Cancel() error               { return nil }
func (s *discardSink) ID() string                  { return "discard" }

func BenchmarkSnapshot1M(b *testing.B) {
	f := New(nil)
	fillKeys(b, f, "default", 1_000_000)
	for b.Loop() {
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		if err := snap.Persist(&discardSink{}); err != nil {
			b.Fatal(err)
		}
		snap.Release()
	}
}

func BenchmarkRestore1M(b *testing.B) {
	f := New(nil)
	fillKeys(b, f, "default", 1_000_000)
	data := snapshotBytes(b, f)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := restoreBytes(New(nil), data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSortKeys(t *testing.T) {
	tests := []struct {
		name string
		keys []string
	}{
		{"empty", nil},
		{"short", []string{"b", "a", "c", ""}},
		{"trailing zeros", []string{"a\x00\x00", "a", "a\x00", "", "\x00", "a\x00\x01"}},
		{"shared 16-byte prefix", []string{"0123456789abcdef-b", "0123456789abcdef", "0123456789abcdef-a", "0123456789abcdef\x00", "0123456789abcdee\xff"}},
		{"high bytes", []string{"\xff", "\x7f", "\x80", "\xff\xff", "z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := make([]keyEntry, len(tt.keys))
			for i, k := range tt.keys {
				entries[i] = keyEntry{name: k}
			}
			sortKeys(entries)
			want := slices.Sorted(slices.Values(tt.keys))
			for i := range want {
				if entries[i].name != want[i] {
					t.Fatalf("sortKeys order %q, want %q", names(entries), want)
				}
			}
		})
	}
}

func names(entries []keyEntry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.name
	}
	return out
}
