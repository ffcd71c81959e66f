package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
)

// encodeV1 encodes c in format version 1, as ordinal did before commands
// carried a checksum. Only tests write version 1 now.
func encodeV1(c Command) []byte {
	return c.appendBody([]byte{commandVersionV1})
}

// sealV2 turns a command body (op count and ops, well-formed or not) into
// a version 2 command with a correct checksum, so that tests and fuzzing
// reach the parser behind the checksum.
func sealV2(body []byte) []byte {
	b := append([]byte{commandVersion}, body...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// v1Fixtures are the files in testdata that ordinal's version 1 encoder
// wrote (see testdata/README.md), with the commands they encode.
var v1Fixtures = []struct {
	file string
	cmd  Command
}{
	{"command-v1-empty.bin", Command{}},
	{"command-v1-reserve.bin", Command{Ops: []Op{{Kind: OpReserve, Key: Key{Store: "default", Name: "orders"}, Want: 1000, Need: 1}}}},
	{"command-v1-floor.bin", Command{Ops: []Op{{Kind: OpFloor, Key: Key{Store: "default", Name: "orders"}, Value: 5000}}}},
	{"command-v1-set-node.bin", Command{Ops: []Op{{Kind: OpSetNode, NodeID: "n1", Addr: "10.0.0.1:34904"}}}},
	{"command-v1-remove-node.bin", Command{Ops: []Op{{Kind: OpRemoveNode, NodeID: "n2"}}}},
	{"command-v1-init.bin", Command{Ops: []Op{{Kind: OpInit, ClusterID: "c-5e2c588f"}}}},
	{"command-v1-batch.bin", Command{Ops: []Op{
		{Kind: OpInit, ClusterID: "c-5e2c588f"},
		{Kind: OpSetNode, NodeID: "n1", Addr: "10.0.0.1:34904"},
		{Kind: OpSetNode, NodeID: "n2", Addr: "10.0.0.2:34904"},
		{Kind: OpReserve, Key: Key{Store: "a", Name: "k"}, Want: 5, Need: 5},
		{Kind: OpReserve, Key: Key{Store: "a", Name: "k2"}, Want: 300, Need: 128},
		{Kind: OpReserve, Key: Key{Store: "b", Name: "ключ/日本"}, Want: 1, Need: 1},
		{Kind: OpReserve, Key: Key{Store: "", Name: ""}, Want: 1 << 24, Need: 1},
		{Kind: OpFloor, Key: Key{Store: "a", Name: "k"}, Value: 3},
		{Kind: OpFloor, Key: Key{Store: "a", Name: "max"}, Value: MaxID},
		{Kind: OpRemoveNode, NodeID: "n2"},
	}}},
}

func readFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestDecodeV1Fixtures checks that entries written by the version 1
// encoder still decode to what they meant, that version 1 stays canonical,
// and that re-encoding moves them to version 2 unchanged in meaning.
func TestDecodeV1Fixtures(t *testing.T) {
	for _, fx := range v1Fixtures {
		t.Run(fx.file, func(t *testing.T) {
			b := readFixture(t, fx.file)
			if b[0] != commandVersionV1 {
				t.Fatalf("fixture starts with version %d, want 1", b[0])
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, fx.cmd) {
				t.Fatalf("Decode = %+v\nwant     %+v", got, fx.cmd)
			}
			if again := encodeV1(got); !bytes.Equal(again, b) {
				t.Errorf("version 1 re-encoding differs from the fixture:\nfixture %x\nagain   %x", b, again)
			}
			v2 := got.Encode()
			if v2[0] != commandVersion || !bytes.Equal(v2[1:len(v2)-crcLen], b[1:]) {
				t.Errorf("version 2 encoding %x is not the fixture's body with a checksum", v2)
			}
			if back, err := Decode(v2); err != nil || !reflect.DeepEqual(back, fx.cmd) {
				t.Errorf("Decode(Encode(fixture)) = %+v, %v", back, err)
			}
		})
	}
}

// TestApplyV1Log replays the version 1 fixtures as a log written before
// version 2, then version 2 entries after them, as a node that upgraded
// in place does.
func TestApplyV1Log(t *testing.T) {
	f := New(nil)
	index := uint64(0)
	for _, fx := range v1Fixtures {
		index++
		if out := f.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Term: 1, Data: readFixture(t, fx.file)}); !isResponse(out) {
			t.Fatalf("Apply(%s) = %v", fx.file, out)
		}
	}
	index++
	out := f.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Term: 2, Data: Command{Ops: []Op{reserve("default", "orders", 1, 10)}}.Encode()})
	resp, ok := out.(*ApplyResponse)
	if !ok {
		t.Fatalf("Apply of a version 2 entry = %v", out)
	}
	if r := resp.Results[0]; r.First != 5001 || r.Last != 5010 {
		t.Errorf("reservation after the version 1 log = %+v, want 5001..5010", r)
	}
	want := map[Key]uint64{
		{Store: "default", Name: "orders"}: 5010, {Store: "a", Name: "k"}: 5, {Store: "a", Name: "k2"}: 300, {Store: "a", Name: "max"}: MaxID,
		{Store: "b", Name: "ключ/日本"}: 1, {Store: "", Name: ""}: 1 << 24,
	}
	if got := dumpToModel(dumpOf(f)); !reflect.DeepEqual(got, want) {
		t.Errorf("state = %v\nwant    %v", got, want)
	}
	if got, want := f.Nodes(), map[string]string{"n1": "10.0.0.1:34904"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nodes = %v, want %v", got, want)
	}
	if f.ClusterID() != "c-5e2c588f" || f.AppliedIndex() != index {
		t.Errorf("cluster id %q applied %d, want c-5e2c588f and %d", f.ClusterID(), f.AppliedIndex(), index)
	}
}

func isResponse(out interface{}) bool {
	_, ok := out.(*ApplyResponse)
	return ok
}

// v1SnapshotState is what testdata/snapshot-v1.bin holds.
var v1SnapshotState = dump{
	Stores: map[string]map[string]uint64{
		"":        {"": 1 << 24},
		"a":       {"k": 5, "k2": 300, "max": MaxID},
		"b":       {"ключ/日本": 1},
		"default": {"orders": 1000, "users": 1 << 40},
	},
	Keys:      7,
	Nodes:     map[string]string{"n1": "10.0.0.1:34904", "n3": "10.0.0.3:34904"},
	ClusterID: "c-5e2c588f",
	Applied:   7,
}

// TestRestoreV1SnapshotFixture restores a snapshot written before commands
// had checksums and checks that today's code writes the very same bytes for
// that state: the snapshot format did not change (see DESIGN.md, "Snapshot
// format", for why it needed no new version).
func TestRestoreV1SnapshotFixture(t *testing.T) {
	b := readFixture(t, "snapshot-v1.bin")
	f := New(nil)
	if err := restoreBytes(f, b); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := dumpOf(f); !equalDump(got, v1SnapshotState) {
		t.Fatalf("restored %+v\nwant     %+v", got, v1SnapshotState)
	}
	if again := snapshotBytes(t, f); !bytes.Equal(again, b) {
		t.Errorf("snapshot of the restored state differs from the fixture:\nfixture %x\nagain   %x", b, again)
	}
}

// TestSnapshotChecksumCoversEveryByte flips every bit of each snapshot
// fixture in turn. Each damaged copy must be refused and leave the FSM it
// was offered to stopped with its state untouched: the trailer's CRC-32C
// covers every byte from the magic on, which is why the snapshot format
// needed no new version when commands gained a checksum, and why version
// 2's Snowflake sections are covered without more.
func TestSnapshotChecksumCoversEveryByte(t *testing.T) {
	for _, file := range []string{"snapshot-v1.bin", "snapshot-v2.bin"} {
		t.Run(file, func(t *testing.T) {
			b := readFixture(t, file)
			for i := range len(b) * 8 {
				d := bytes.Clone(b)
				d[i/8] ^= 1 << (i % 8)
				f := New(nil)
				applyLog(t, f, 1, Command{Ops: []Op{reserve("old", "k", 1, 1), declare("old-sf", "L", 3), acquire("n", "i", 1, 1)}})
				before := dumpOf(f)
				err := restoreBytes(f, d)
				if err == nil {
					t.Fatalf("bit %d flipped: Restore accepted the snapshot", i)
				}
				if !errors.Is(err, ErrMalformed) || !errors.Is(err, ErrFailed) {
					t.Fatalf("bit %d flipped: Restore error %v, want ErrMalformed and ErrFailed", i, err)
				}
				if !equalDump(before, dumpOf(f)) {
					t.Fatalf("bit %d flipped: the failed Restore changed the state", i)
				}
			}
		})
	}
}

// Snowflake fixtures: what testdata/command-v2-snowflake.bin and
// testdata/snapshot-v2.bin hold (see testdata/README.md). They were
// written when the Snowflake kinds and snapshot version 2 were added.
const (
	fixtureT       = 1767225600000 // 2026-01-01T00:00:00Z in unix ms
	fixtureLayotto = "seconds:28 worker:22 sequence:13 epoch:2022-01-01T00:00:00Z"
	fixtureLeaf    = "milliseconds:41 worker:10 sequence:12 epoch:2010-11-04T01:42:54.657Z"
)

var v2SnowflakeCommand = Command{Ops: []Op{
	{Kind: OpDeclareSnowflake, Key: Key{Store: "orders"}, Layout: fixtureLayotto, Value: 22},
	{Kind: OpDeclareSnowflake, Key: Key{Store: "events"}, Layout: fixtureLeaf, Value: 10},
	{Kind: OpAcquireWorker, NodeID: "n1", Incarnation: "3f9c2a7e", At: fixtureT, Hold: 60000},
	{Kind: OpReserve, Key: Key{Store: SnowflakeTimeStore, Name: "0"}, Want: fixtureT + 1000, Need: 1},
	{Kind: OpReleaseWorker, NodeID: "n2", At: fixtureT + 500, Hold: 60000},
}}

// v2SnapshotState is what testdata/snapshot-v2.bin holds: the state after
// init and three set-nodes (index 1); a reservation of default/orders and
// the declarations of orders and events (index 2); n1, n2 and n3
// acquiring workers 0, 1 and 2 at fixtureT and reserving their times
// (index 3); n2 coming back as inc-n2b at fixtureT+5000 (worker 1
// released, worker 3 acquired), n3 released at fixtureT+6000, a floor in
// the Snowflake store events and another reservation (index 4).
var v2SnapshotState = dump{
	Stores: map[string]map[string]uint64{
		"default":          {"orders": 1010},
		"events":           {"user-import": 1 << 40},
		SnowflakeTimeStore: {"0": fixtureT + 1000, "1": fixtureT + 2000, "2": fixtureT + 2000},
	},
	Keys:      5,
	Nodes:     map[string]string{"n1": "10.0.0.1:34904", "n2": "10.0.0.2:34904", "n3": "10.0.0.3:34904"},
	ClusterID: "c-7d1e04b2",
	Applied:   4,
	Snowflakes: map[string]SnowflakeStore{
		"orders": {Layout: fixtureLayotto, WorkerBits: 22},
		"events": {Layout: fixtureLeaf, WorkerBits: 10},
	},
	Workers: map[uint64]Worker{
		0: {ID: 0, NodeID: "n1", Incarnation: "inc-n1"},
		1: {ID: 1, NodeID: "n2", Incarnation: "inc-n2", FreeAt: fixtureT + 65000},
		2: {ID: 2, NodeID: "n3", Incarnation: "inc-n3", FreeAt: fixtureT + 66000},
		3: {ID: 3, NodeID: "n2", Incarnation: "inc-n2b"},
	},
	Held: map[string]uint64{"n1": 0, "n2": 3},
}

// TestDecodeSnowflakeFixture checks that the entry written when the
// Snowflake kinds were added still decodes to what it meant, re-encodes
// to the same bytes and applies as it did.
func TestDecodeSnowflakeFixture(t *testing.T) {
	b := readFixture(t, "command-v2-snowflake.bin")
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !reflect.DeepEqual(got, v2SnowflakeCommand) {
		t.Fatalf("Decode = %+v\nwant     %+v", got, v2SnowflakeCommand)
	}
	if again := got.Encode(); !bytes.Equal(again, b) {
		t.Errorf("re-encoding differs from the fixture:\nfixture %x\nagain   %x", b, again)
	}
	f := New(nil)
	out := f.Apply(&raft.Log{Type: raft.LogCommand, Index: 1, Data: b})
	resp, ok := out.(*ApplyResponse)
	if !ok {
		t.Fatalf("Apply = %v", out)
	}
	checkResults(t, 0, resp.Results, []Result{{}, {}, {Worker: 0}, {First: 1, Last: fixtureT + 1000, HighWater: fixtureT + 1000}, {}})
}

// TestRestoreV2SnapshotFixture restores the version 2 snapshot fixture and
// checks that today's code writes the very same bytes for that state.
func TestRestoreV2SnapshotFixture(t *testing.T) {
	b := readFixture(t, "snapshot-v2.bin")
	if b[len(snapshotMagic)] != 2 {
		t.Fatalf("fixture is version %d, want 2", b[len(snapshotMagic)])
	}
	f := New(nil)
	if err := restoreBytes(f, b); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := dumpOf(f); !equalDump(got, v2SnapshotState) {
		t.Fatalf("restored %+v\nwant     %+v", got, v2SnapshotState)
	}
	if again := snapshotBytes(t, f); !bytes.Equal(again, b) {
		t.Errorf("snapshot of the restored state differs from the fixture:\nfixture %x\nagain   %x", b, again)
	}
	if w, ok := f.WorkerOf("n2", "inc-n2b"); !ok || w != 3 {
		t.Errorf("WorkerOf(n2, inc-n2b) = %d, %v; want 3", w, ok)
	}
}

// BenchmarkDecodeVersions compares decoding one reservation, the common
// entry, in both versions: the difference is version 2's CRC-32C, which
// runs on the CPU's CRC32 instruction.
func BenchmarkDecodeVersions(b *testing.B) {
	c := Command{Ops: []Op{reserve("default", "orders", 1, 1000)}}
	for _, v := range []struct {
		name string
		enc  []byte
	}{{"v1", encodeV1(c)}, {"v2", c.Encode()}} {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(int64(len(v.enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(v.enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
