package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name string
		cmd  Command
	}{
		{"empty", Command{}},
		{"reserve", Command{Ops: []Op{{Kind: OpReserve, Key: Key{Store: "default", Name: "orders"}, Want: 1000, Need: 1}}}},
		{"reserve need equals want", Command{Ops: []Op{{Kind: OpReserve, Key: Key{Store: "s", Name: "k"}, Want: 7, Need: 7}}}},
		{"reserve huge want", Command{Ops: []Op{{Kind: OpReserve, Key: Key{Store: "s", Name: "k"}, Want: ^uint64(0), Need: ^uint64(0)}}}},
		{"reserve empty store and key", Command{Ops: []Op{{Kind: OpReserve, Want: 1, Need: 1}}}},
		{"reserve max lengths", Command{Ops: []Op{{Kind: OpReserve, Key: Key{Store: long(MaxStoreLen), Name: long(MaxKeyLen)}, Want: 2, Need: 1}}}},
		{"reserve binary key", Command{Ops: []Op{{Kind: OpReserve, Key: Key{Store: "\x00\xff", Name: "\x80\x00k"}, Want: 2, Need: 1}}}},
		{"floor zero", Command{Ops: []Op{{Kind: OpFloor, Key: Key{Store: "s", Name: "k"}}}}},
		{"floor max", Command{Ops: []Op{{Kind: OpFloor, Key: Key{Store: "s", Name: "k"}, Value: MaxID}}}},
		{"set node", Command{Ops: []Op{{Kind: OpSetNode, NodeID: "node-1", Addr: "10.0.0.1:7000"}}}},
		{"set node max lengths", Command{Ops: []Op{{Kind: OpSetNode, NodeID: long(MaxNodeFieldLen), Addr: long(MaxNodeFieldLen)}}}},
		{"remove node", Command{Ops: []Op{{Kind: OpRemoveNode, NodeID: "node-1"}}}},
		{"init", Command{Ops: []Op{{Kind: OpInit, ClusterID: "c-0001"}}}},
		{"init max length", Command{Ops: []Op{{Kind: OpInit, ClusterID: long(MaxNodeFieldLen)}}}},
		{"declare snowflake", Command{Ops: []Op{declare("orders", "layout", 22)}}},
		{"declare snowflake limits", Command{Ops: []Op{declare(long(MaxStoreLen), long(MaxLayoutLen), MaxWorkerBits), declare("", "l", 1)}}},
		{"declare snowflake near the reserved prefix", Command{Ops: []Op{declare("_ordina", "l", 1), declare("x_ordinal", "l", 1)}}},
		{"acquire worker", Command{Ops: []Op{acquire("node-1", "inc-1", 1767225600000, 60000)}}},
		{"acquire worker limits", Command{Ops: []Op{acquire(long(MaxNodeFieldLen), long(MaxNodeFieldLen), MaxID, MaxID), acquire("n", "i", 0, 0)}}},
		{"release worker", Command{Ops: []Op{release("node-1", 1767225600000, 60000)}}},
		{"release worker limits", Command{Ops: []Op{release(long(MaxNodeFieldLen), MaxID, MaxID), release("n", 0, 0)}}},
		{"mixed batch", Command{Ops: []Op{
			{Kind: OpInit, ClusterID: "c"},
			{Kind: OpSetNode, NodeID: "n1", Addr: "a:1"},
			{Kind: OpReserve, Key: Key{Store: "s", Name: "k"}, Want: 300, Need: 200},
			{Kind: OpFloor, Key: Key{Store: "s", Name: "k"}, Value: 1 << 40},
			{Kind: OpRemoveNode, NodeID: "n1"},
			declare("s2", "l", 10),
			acquire("n1", "i1", 5, 6),
			reserve(SnowflakeTimeStore, "0", 1, 1000),
			release("n1", 7, 8),
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cmd.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			b := tt.cmd.Encode()
			if got := tt.cmd.encodedLen(); got != len(b) {
				t.Errorf("encodedLen = %d, encoding is %d bytes", got, len(b))
			}
			if b[0] != commandVersion {
				t.Errorf("first byte = %d, want version %d", b[0], commandVersion)
			}
			if v1 := encodeV1(tt.cmd); !bytes.Equal(b[1:len(b)-crcLen], v1[1:]) {
				t.Errorf("version 2 body differs from version 1's:\nv2 %x\nv1 %x", b, v1)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, tt.cmd) {
				t.Errorf("Decode(Encode(c)) = %+v, want %+v", got, tt.cmd)
			}
			prefix := []byte("prefix")
			if app := tt.cmd.AppendEncode(prefix); !bytes.Equal(app[len(prefix):], b) || !bytes.Equal(app[:len(prefix)], prefix) {
				t.Errorf("AppendEncode does not append the Encode bytes")
			}
		})
	}
}

// TestEncodeIgnoresUnusedFields checks that fields a kind does not use are
// neither encoded nor resurrected by Decode.
func TestEncodeIgnoresUnusedFields(t *testing.T) {
	op := Op{Kind: OpInit, ClusterID: "c", Key: Key{Store: "s", Name: "k"}, Want: 5, Need: 1, Value: 9, NodeID: "n", Addr: "a"}
	got, err := Decode(Command{Ops: []Op{op}}.Encode())
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := Command{Ops: []Op{{Kind: OpInit, ClusterID: "c"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestEncodeLayout pins the byte layout so that an accidental format change
// (which would make old log entries undecodable) fails loudly. Version 1's
// layout is pinned by the fixtures in testdata (TestDecodeV1Fixtures).
func TestEncodeLayout(t *testing.T) {
	c := Command{Ops: []Op{
		{Kind: OpReserve, Key: Key{Store: "s", Name: "k"}, Want: 300, Need: 2},
		{Kind: OpFloor, Key: Key{Store: "", Name: "ab"}, Value: 1},
		{Kind: OpSetNode, NodeID: "n", Addr: "a"},
		{Kind: OpRemoveNode, NodeID: "n"},
		{Kind: OpInit, ClusterID: "c"},
	}}
	want := []byte{
		2, 5, // version, op count
		1, 1, 's', 1, 'k', 0xac, 0x02, 2, // reserve: store, key, want=300, need=2
		2, 0, 2, 'a', 'b', 1, // floor: "", "ab", value=1
		3, 1, 'n', 1, 'a', // set-node
		4, 1, 'n', // remove-node
		5, 1, 'c', // init
		0x53, 0x35, 0xc3, 0x01, // CRC-32C of every byte above, big-endian
	}
	if got := c.Encode(); !bytes.Equal(got, want) {
		t.Errorf("Encode = %v\nwant     %v", got, want)
	}
	// The trailer is the standard CRC-32C (iSCSI polynomial), computed here
	// without the package's table so a wrong table would show.
	if sum := crc32.Checksum(want[:len(want)-4], crc32.MakeTable(0x82f63b78)); binary.BigEndian.Uint32(want[len(want)-4:]) != sum {
		t.Errorf("pinned trailer is not the CRC-32C of the body: want %08x", sum)
	}
}

// TestDecodeRejects runs every structural defect through both versions:
// as a version 1 command, and as a version 2 command whose checksum is
// correct, so that the parser behind the checksum is what rejects it.
func TestDecodeRejects(t *testing.T) {
	valid := Command{Ops: []Op{{Kind: OpReserve, Key: Key{Store: "s", Name: "k"}, Want: 10, Need: 1}}}.appendBody(nil)
	body := func(ops ...Op) []byte { return Command{Ops: ops}.appendBody(nil) }
	over := func(n int) string { return strings.Repeat("x", n+1) }
	tooMany := binary.AppendUvarint(nil, MaxOpsPerCommand+1)
	for range MaxOpsPerCommand + 1 {
		tooMany = append(tooMany, byte(OpRemoveNode), 1, 'n')
	}

	tests := []struct {
		name   string
		body   []byte // everything after the version byte (and before a v2 checksum)
		reason string // substring the error must contain
	}{
		{"missing op count", []byte{}, "op count: truncated"},
		{"truncated op count varint", []byte{0x80}, "op count: truncated"},
		{"non-shortest op count", []byte{0x80, 0x00}, "not in shortest form"},
		{"op count overflows 64 bits", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, "overflows"},
		{"too many ops", binary.AppendUvarint(nil, MaxOpsPerCommand+1), "op count 65537 exceeds"},
		{"too many ops with bodies", tooMany, "op count 65537 exceeds"},
		{"missing op", []byte{1}, "op 0: kind: truncated"},
		{"fewer ops than count", append([]byte{2}, valid[1:]...), "op 1: kind: truncated"},
		{"unknown kind 0", []byte{1, 0}, "unknown op kind 0"},
		{"unknown kind 9", []byte{1, 9}, "unknown op kind 9"},
		{"truncated store", []byte{1, 1, 3, 's'}, "store: truncated"},
		{"truncated key", []byte{1, 1, 1, 's'}, "key length: truncated"},
		{"truncated want", []byte{1, 1, 0, 0}, "want: truncated"},
		{"truncated need", []byte{1, 1, 0, 0, 5}, "need: truncated"},
		{"truncated varint in need", []byte{1, 1, 0, 0, 5, 0x81}, "need: truncated"},
		{"non-shortest want", []byte{1, 1, 0, 0, 0x85, 0x00, 1}, "want: uvarint overflows 64 bits or is not in shortest form"},
		{"need zero", body(Op{Kind: OpReserve, Key: Key{Name: "k"}, Want: 5}), "need is 0"},
		{"need zero want zero", body(Op{Kind: OpReserve, Key: Key{Name: "k"}}), "need is 0"},
		{"need above want", body(Op{Kind: OpReserve, Key: Key{Name: "k"}, Want: 5, Need: 6}), "need 6 exceeds want 5"},
		{"floor above max id", body(Op{Kind: OpFloor, Key: Key{Name: "k"}, Value: MaxID + 1}), "exceeds the maximum id"},
		{"floor max uint64", body(Op{Kind: OpFloor, Key: Key{Name: "k"}, Value: ^uint64(0)}), "exceeds the maximum id"},
		{"oversize store", body(Op{Kind: OpReserve, Key: Key{Store: over(MaxStoreLen), Name: "k"}, Want: 1, Need: 1}), "store is 257 bytes, limit is 256"},
		{"oversize key", body(Op{Kind: OpFloor, Key: Key{Name: over(MaxKeyLen)}, Value: 1}), "key is 1025 bytes, limit is 1024"},
		{"oversize node id", body(Op{Kind: OpSetNode, NodeID: over(MaxNodeFieldLen), Addr: "a"}), "node id is 1025 bytes"},
		{"oversize address", body(Op{Kind: OpSetNode, NodeID: "n", Addr: over(MaxNodeFieldLen)}), "address is 1025 bytes"},
		{"oversize cluster id", body(Op{Kind: OpInit, ClusterID: over(MaxNodeFieldLen)}), "cluster id is 1025 bytes"},
		{"huge string length", []byte{1, 5, 0xff, 0xff, 0xff, 0xff, 0x0f}, "cluster id is 4294967295 bytes"},
		{"empty node id", body(Op{Kind: OpRemoveNode}), "node id is empty"},
		{"empty address", body(Op{Kind: OpSetNode, NodeID: "n"}), "address is empty"},
		{"empty cluster id", body(Op{Kind: OpInit}), "cluster id is empty"},
		{"trailing byte", append(valid[:len(valid):len(valid)], 0), "1 trailing bytes"},
		{"trailing op", append(valid[:len(valid):len(valid)], valid[1:]...), "trailing bytes"},
		{"truncated last byte", valid[:len(valid)-1], "need: truncated"},
	}
	for _, tt := range tests {
		for _, v := range []struct {
			name  string
			input []byte
		}{
			{"v1", append([]byte{commandVersionV1}, tt.body...)},
			{"v2", sealV2(tt.body)},
		} {
			t.Run(tt.name+"/"+v.name, func(t *testing.T) {
				requireDecodeError(t, v.input, tt.reason)
			})
		}
	}
}

// TestDecodeRejectsVersionAndChecksum covers what is checked before the
// body is parsed: the version byte and version 2's checksum.
func TestDecodeRejectsVersionAndChecksum(t *testing.T) {
	valid := Command{Ops: []Op{{Kind: OpReserve, Key: Key{Store: "s", Name: "k"}, Want: 10, Need: 1}}}.Encode()
	flipped := bytes.Clone(valid)
	flipped[3] ^= 0x10
	tests := []struct {
		name     string
		input    []byte
		reason   string
		checksum bool // the error must wrap ErrChecksum
	}{
		{"nil", nil, "version: truncated", false},
		{"empty", []byte{}, "version: truncated", false},
		{"bad version 0", append([]byte{0}, valid[1:]...), "unsupported command version 0", false},
		{"bad version 3", append([]byte{3}, valid[1:]...), "unsupported command version 3", false},
		{"v2 without checksum", []byte{2}, "checksum: truncated", false},
		{"v2 shorter than a checksum", []byte{2, 0, 0, 0}, "checksum: truncated", false},
		{"v2 flipped bit in the body", flipped, "checksum mismatch", true},
		{"v2 flipped bit in the checksum", append(bytes.Clone(valid[:len(valid)-1]), valid[len(valid)-1]^1), "checksum mismatch", true},
		{"v2 trailing byte", append(bytes.Clone(valid), 0), "checksum mismatch", true},
		{"v2 last byte cut", valid[:len(valid)-1], "checksum mismatch", true},
		{"v2 body of a v1 command", append([]byte{2}, valid[1:len(valid)-4]...), "checksum mismatch", true},
		{"v1 with a v2 checksum", append([]byte{1}, valid[1:]...), "trailing bytes", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := requireDecodeError(t, tt.input, tt.reason)
			if got := errors.Is(err, ErrChecksum); got != tt.checksum {
				t.Errorf("errors.Is(%v, ErrChecksum) = %v, want %v", err, got, tt.checksum)
			}
		})
	}
}

// TestDecodeDetectsEveryBitFlip flips each bit of a version 2 command in
// turn: every one must be rejected, and none may decode to another
// command. (A CRC detects every single-bit error; a flip in the version
// byte lands on an unsupported version, never on 1: 1 and 2 differ in two
// bits, so one flip cannot turn a version 2 entry into an unchecked
// version 1 entry.)
func TestDecodeDetectsEveryBitFlip(t *testing.T) {
	b := Command{Ops: []Op{
		{Kind: OpReserve, Key: Key{Store: "default", Name: "orders"}, Want: 1000, Need: 1},
		{Kind: OpFloor, Key: Key{Store: "default", Name: "users"}, Value: 1 << 40},
	}}.Encode()
	for i := range len(b) * 8 {
		d := bytes.Clone(b)
		d[i/8] ^= 1 << (i % 8)
		c, err := Decode(d)
		if err == nil {
			t.Fatalf("bit %d flipped: Decode accepted %+v", i, c)
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("bit %d flipped: error %v does not wrap ErrMalformed", i, err)
		}
		if i >= 8 && !errors.Is(err, ErrChecksum) {
			t.Fatalf("bit %d flipped: error %v does not wrap ErrChecksum", i, err)
		}
	}
}

// requireDecodeError fails the test unless Decode rejects input with an
// error wrapping ErrMalformed that contains reason, and returns the error.
func requireDecodeError(t *testing.T, input []byte, reason string) error {
	t.Helper()
	got, err := Decode(input)
	if err == nil {
		t.Fatalf("Decode succeeded with %+v, want error containing %q", got, reason)
	}
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("error %v does not wrap ErrMalformed", err)
	}
	if !strings.Contains(err.Error(), reason) {
		t.Errorf("error %q does not contain %q", err, reason)
	}
	if got.Ops != nil {
		t.Errorf("failed Decode returned ops %+v", got.Ops)
	}
	return err
}

// TestDecodeEveryTruncation checks that no proper prefix of a valid
// encoding decodes: the format is self-delimiting only as a whole.
func TestDecodeEveryTruncation(t *testing.T) {
	b := Command{Ops: []Op{
		{Kind: OpReserve, Key: Key{Store: "store", Name: "key"}, Want: 1 << 20, Need: 1 << 10},
		{Kind: OpFloor, Key: Key{Store: "store", Name: "key"}, Value: 1 << 50},
		{Kind: OpSetNode, NodeID: "n1", Addr: "h:1"},
		{Kind: OpRemoveNode, NodeID: "n1"},
		{Kind: OpInit, ClusterID: "c"},
	}}.Encode()
	for n := range len(b) {
		if _, err := Decode(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(first %d of %d bytes) error = %v, want ErrMalformed", n, len(b), err)
		}
	}
}

func TestDecodeMaxOps(t *testing.T) {
	ops := make([]Op, MaxOpsPerCommand)
	for i := range ops {
		ops[i] = Op{Kind: OpRemoveNode, NodeID: "n"}
	}
	got, err := Decode(Command{Ops: ops}.Encode())
	if err != nil {
		t.Fatalf("Decode of exactly MaxOpsPerCommand ops: %v", err)
	}
	if len(got.Ops) != MaxOpsPerCommand {
		t.Errorf("decoded %d ops, want %d", len(got.Ops), MaxOpsPerCommand)
	}
}

func TestDecodeDoesNotAliasInput(t *testing.T) {
	b := Command{Ops: []Op{{Kind: OpFloor, Key: Key{Store: "s", Name: "key"}, Value: 1}}}.Encode()
	c, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	for i := range b {
		b[i] = 'X'
	}
	if c.Ops[0].Key != (Key{Store: "s", Name: "key"}) {
		t.Errorf("decoded key changed with the input buffer: %+v", c.Ops[0].Key)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		cmd    Command
		reason string // "" means valid
	}{
		{"valid", Command{Ops: []Op{{Kind: OpReserve, Want: 2, Need: 1}}}, ""},
		{"unknown kind", Command{Ops: []Op{{Kind: 9}}}, "op 0 (OpKind(9)): unknown op kind 9"},
		{"second op bad", Command{Ops: []Op{{Kind: OpInit, ClusterID: "c"}, {Kind: OpReserve, Want: 1, Need: 2}}}, "op 1 (reserve): need 2 exceeds want 1"},
		{"too many ops", Command{Ops: make([]Op, MaxOpsPerCommand+1)}, "65537 ops exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cmd.Validate()
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Validate = %v, want ErrMalformed containing %q", err, tt.reason)
			}
			if _, derr := Decode(tt.cmd.Encode()); derr == nil {
				t.Errorf("Decode accepted the encoding of a command Validate rejects")
			}
		})
	}
}

func TestOpKindString(t *testing.T) {
	tests := map[OpKind]string{
		OpReserve: "reserve", OpFloor: "floor", OpSetNode: "set-node",
		OpRemoveNode: "remove-node", OpInit: "init", OpDeclareSnowflake: "declare-snowflake",
		OpAcquireWorker: "acquire-worker", OpReleaseWorker: "release-worker", 0: "OpKind(0)", 9: "OpKind(9)", 200: "OpKind(200)",
	}
	for k, want := range tests {
		if got := k.String(); got != want {
			t.Errorf("OpKind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}

func TestUvarintLen(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 16383, 16384, MaxID, ^uint64(0)} {
		if got, want := uvarintLen(v), len(binary.AppendUvarint(nil, v)); got != want {
			t.Errorf("uvarintLen(%d) = %d, want %d", v, got, want)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	ops := make([]Op, 100)
	for i := range ops {
		ops[i] = Op{Kind: OpReserve, Key: Key{Store: "default", Name: keyName(i)}, Want: 1000, Need: 1}
	}
	enc := Command{Ops: ops}.Encode()
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEncodeLayoutSnowflake pins the byte layout of the Snowflake kinds,
// which joined version 2 after it was first written.
func TestEncodeLayoutSnowflake(t *testing.T) {
	c := Command{Ops: []Op{
		declare("s", "L", 22),
		acquire("n", "i", 300, 2),
		release("n", 1, 0),
	}}
	body := []byte{
		3,                     // op count
		6, 1, 's', 1, 'L', 22, // declare-snowflake: store, layout, bits
		7, 1, 'n', 1, 'i', 0xac, 0x02, 2, // acquire-worker: node, incarnation, at=300, hold=2
		8, 1, 'n', 1, 0, // release-worker: node, at=1, hold=0
	}
	want := binary.BigEndian.AppendUint32(append([]byte{2}, body...), crc32.Checksum(append([]byte{2}, body...), crc32.MakeTable(0x82f63b78)))
	if got := c.Encode(); !bytes.Equal(got, want) {
		t.Errorf("Encode = %v\nwant     %v", got, want)
	}
}

// TestDecodeRejectsSnowflakeOps runs the defects of the Snowflake kinds
// through version 2, with a correct checksum, and checks that version 1,
// which never had them, refuses them outright.
func TestDecodeRejectsSnowflakeOps(t *testing.T) {
	body := func(ops ...Op) []byte { return Command{Ops: ops}.appendBody(nil) }
	over := func(n int) string { return strings.Repeat("x", n+1) }
	tests := []struct {
		name   string
		body   []byte
		reason string
	}{
		{"declare truncated store", []byte{1, 6, 3, 's'}, "store: truncated"},
		{"declare truncated layout", []byte{1, 6, 1, 's'}, "layout length: truncated"},
		{"declare truncated bits", []byte{1, 6, 1, 's', 1, 'L'}, "worker bits: truncated"},
		{"declare non-shortest bits", []byte{1, 6, 1, 's', 1, 'L', 0x82, 0x00}, "worker bits: uvarint overflows 64 bits or is not in shortest form"},
		{"declare oversize store", body(declare(over(MaxStoreLen), "L", 1)), "store is 257 bytes, limit is 256"},
		{"declare reserved store", body(declare(SnowflakeTimeStore, "L", 1)), `store name "_ordinal.snowflake" starts with "_ordinal", which is reserved`},
		{"declare reserved prefix", body(declare("_ordinal", "L", 1)), `starts with "_ordinal"`},
		{"declare empty layout", body(declare("s", "", 1)), "layout is empty"},
		{"declare oversize layout", body(declare("s", over(MaxLayoutLen), 1)), "layout is 129 bytes, limit is 128"},
		{"declare zero bits", body(declare("s", "L", 0)), "worker bits 0 outside 1..31"},
		{"declare 32 bits", body(declare("s", "L", 32)), "worker bits 32 outside 1..31"},
		{"declare huge bits", body(declare("s", "L", ^uint64(0))), "worker bits 18446744073709551615 outside 1..31"},
		{"acquire truncated node", []byte{1, 7}, "node id length: truncated"},
		{"acquire truncated incarnation", []byte{1, 7, 1, 'n'}, "incarnation length: truncated"},
		{"acquire truncated at", []byte{1, 7, 1, 'n', 1, 'i'}, "at: truncated"},
		{"acquire truncated hold", []byte{1, 7, 1, 'n', 1, 'i', 5}, "hold: truncated"},
		{"acquire empty node", body(acquire("", "i", 1, 1)), "node id is empty"},
		{"acquire empty incarnation", body(acquire("n", "", 1, 1)), "incarnation is empty"},
		{"acquire oversize incarnation", body(acquire("n", over(MaxNodeFieldLen), 1, 1)), "incarnation is 1025 bytes, limit is 1024"},
		{"acquire at above MaxID", body(acquire("n", "i", MaxID+1, 1)), "at 9223372036854775808 exceeds 9223372036854775807"},
		{"acquire hold above MaxID", body(acquire("n", "i", 1, ^uint64(0))), "hold 18446744073709551615 exceeds"},
		{"release truncated at", []byte{1, 8, 1, 'n'}, "at: truncated"},
		{"release truncated hold", []byte{1, 8, 1, 'n', 0}, "hold: truncated"},
		{"release empty node", body(release("", 1, 1)), "node id is empty"},
		{"release oversize node", body(release(over(MaxNodeFieldLen), 1, 1)), "node id is 1025 bytes"},
		{"release at above MaxID", body(release("n", MaxID+1, 1)), "at 9223372036854775808 exceeds"},
		{"release hold above MaxID", body(release("n", 1, MaxID+1)), "hold 9223372036854775808 exceeds"},
		{"trailing byte after release", append(body(release("n", 1, 1)), 0), "1 trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireDecodeError(t, sealV2(tt.body), tt.reason)
		})
	}
	for _, op := range []Op{declare("s", "L", 1), acquire("n", "i", 1, 1), release("n", 1, 1)} {
		t.Run(op.Kind.String()+"/v1", func(t *testing.T) {
			b := append([]byte{commandVersionV1}, body(reserve("s", "k", 1, 1), op)...)
			requireDecodeError(t, b, fmt.Sprintf("op 1: op kind %d (%s) at offset 9 is not in command version 1", uint8(op.Kind), op.Kind))
		})
	}
}

// TestDecodeSnowflakeOpsEveryTruncationAndFlip checks that no proper
// prefix of a command with every Snowflake kind decodes, and that every
// flipped bit is caught.
func TestDecodeSnowflakeOpsEveryTruncationAndFlip(t *testing.T) {
	b := Command{Ops: []Op{
		declare("orders", "layout", 22),
		acquire("node-1", "inc-1", 1767225600000, 60000),
		reserve(SnowflakeTimeStore, "0", 1, 1767225601000),
		release("node-1", 1767225700000, 60000),
	}}.Encode()
	for n := range len(b) {
		if _, err := Decode(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(first %d of %d bytes) error = %v, want ErrMalformed", n, len(b), err)
		}
	}
	for i := range len(b) * 8 {
		d := bytes.Clone(b)
		d[i/8] ^= 1 << (i % 8)
		if c, err := Decode(d); err == nil || !errors.Is(err, ErrMalformed) {
			t.Fatalf("bit %d flipped: Decode = %+v, %v; want ErrMalformed", i, c, err)
		}
	}
}
