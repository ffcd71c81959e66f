package backup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ordinal-dev/ordinal/fsm"
)

// testState returns a state machine with a cluster ID, a node and keys in
// two stores, applied through the Raft path as on a node.
func testState(t testing.TB, keys int) *fsm.FSM {
	t.Helper()
	f := fsm.New(nil)
	ops := []fsm.Op{
		{Kind: fsm.OpInit, ClusterID: "c0ffee"},
		{Kind: fsm.OpSetNode, NodeID: "n1", Addr: "127.0.0.1:1"},
	}
	for i := range keys {
		ops = append(ops, fsm.Op{Kind: fsm.OpFloor, Key: fsm.Key{Store: []string{"default", "orders"}[i%2], Name: fmt.Sprintf("k%d", i)}, Value: uint64(1000*i + 7)})
	}
	resp := f.Apply(&raft.Log{Index: 42, Term: 3, Type: raft.LogCommand, Data: fsm.Command{Ops: ops}.Encode()})
	if err, ok := resp.(error); ok {
		t.Fatal(err)
	}
	return f
}

func testHeader() Header {
	return Header{
		ClusterID: "c0ffee",
		Index:     42,
		Term:      3,
		TakenAt:   time.Date(2026, 5, 1, 12, 0, 0, 123, time.UTC),
		Rates: RateSummary{
			Window:      10 * time.Second,
			Horizon:     15 * time.Minute,
			Since:       time.Date(2026, 5, 1, 11, 0, 0, 0, time.UTC),
			ClusterPeak: 5000,
			Keys: []KeyRate{
				{Key: fsm.Key{Store: "orders", Name: "k1"}, Peak: 40},
				{Key: fsm.Key{Store: "default", Name: "k0"}, Peak: 7},
			},
		},
	}
}

// writeBackup writes a backup of f with header h.
func writeBackup(t testing.TB, h Header, f *fsm.FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	bw, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if err := snap.Persist(&sink{bw}); err != nil {
		t.Fatal(err)
	}
	if bw.Size() != int64(buf.Len()) {
		t.Fatalf("Size %d, wrote %d", bw.Size(), buf.Len())
	}
	return buf.Bytes()
}

// sink is the raft.SnapshotSink a node persists the state machine into.
type sink struct{ *Writer }

func (sink) ID() string    { return "test" }
func (sink) Cancel() error { return nil }

func TestRoundTrip(t *testing.T) {
	for _, keys := range []int{0, 1, 5000} {
		t.Run(fmt.Sprint(keys, " keys"), func(t *testing.T) {
			state := testState(t, keys)
			h := testHeader()
			data := writeBackup(t, h, state)
			b, err := Read(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if b.Size != int64(len(data)) {
				t.Errorf("Size %d, file is %d bytes", b.Size, len(data))
			}
			if b.Version != Version || b.ClusterID != h.ClusterID || b.Index != h.Index || b.Term != h.Term ||
				!b.TakenAt.Equal(h.TakenAt) || b.Rates.Window != h.Rates.Window || b.Rates.Horizon != h.Rates.Horizon ||
				!b.Rates.Since.Equal(h.Rates.Since) || b.Rates.ClusterPeak != h.Rates.ClusterPeak {
				t.Errorf("header read back %+v, wrote %+v", b.Header, h)
			}
			// Rates come back sorted.
			want := []KeyRate{h.Rates.Keys[1], h.Rates.Keys[0]}
			if fmt.Sprint(b.Rates.Keys) != fmt.Sprint(want) {
				t.Errorf("rates %v, want %v", b.Rates.Keys, want)
			}
			if b.State.Len() != keys || b.State.ClusterID() != "c0ffee" || b.State.AppliedIndex() != 42 {
				t.Fatalf("state: %d keys, cluster %q, index %d", b.State.Len(), b.State.ClusterID(), b.State.AppliedIndex())
			}
			n := 0
			b.State.ForEachKey(func(k fsm.Key, hw uint64) bool {
				if want := state.HighWater(k); hw != want {
					t.Errorf("%v: %d, want %d", k, hw, want)
				}
				n++
				return true
			})
			if n != keys {
				t.Errorf("ForEachKey saw %d keys, want %d", n, keys)
			}
		})
	}
}

// A backup read one byte at a time, or through a reader that returns
// data with io.EOF, reads the same.
func TestReadOddReaders(t *testing.T) {
	data := writeBackup(t, testHeader(), testState(t, 300))
	for name, r := range map[string]io.Reader{
		"one byte":  iotest.OneByteReader(bytes.NewReader(data)),
		"data+EOF":  iotest.DataErrReader(bytes.NewReader(data)),
		"half read": iotest.HalfReader(bytes.NewReader(data)),
	} {
		if b, err := Read(r); err != nil || b.State.Len() != 300 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A snapshot written in many small pieces and one over the chunk size
// frames and reads back the same.
func TestWriterChunks(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), maxChunk/8+3) // > 2 chunks
	var buf bytes.Buffer
	bw, err := NewWriter(&buf, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := bw.Write(payload[:10]); n != 10 || err != nil {
		t.Fatal(n, err)
	}
	if n, err := bw.Write(nil); n != 0 || err != nil {
		t.Fatal(n, err)
	}
	if n, err := bw.Write(payload[10:]); n != len(payload)-10 || err != nil {
		t.Fatal(n, err)
	}
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := bw.Write([]byte{1}); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	hr := &hashReader{br: bufioReader(buf.Bytes())}
	p := &parser{hr: hr}
	var head [5]byte
	io.ReadFull(hr, head[:])
	p.string("", 1<<10)
	for range 7 {
		p.uvarint("")
	}
	p.rates()
	got, err := io.ReadAll(&chunkReader{p: p})
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("payload read back: %d bytes, %v", len(got), err)
	}
}

func TestNewWriterRefuses(t *testing.T) {
	for name, mutate := range map[string]func(*Header){
		"zero window":    func(h *Header) { h.Rates.Window = 0 },
		"time before 70": func(h *Header) { h.TakenAt = time.Unix(-5, 0) },
		"zero peak":      func(h *Header) { h.Rates.Keys[0].Peak = 0 },
		"empty key":      func(h *Header) { h.Rates.Keys[0].Key.Name = "" },
		"duplicate":      func(h *Header) { h.Rates.Keys[1] = h.Rates.Keys[0] },
	} {
		h := testHeader()
		mutate(&h)
		if _, err := NewWriter(io.Discard, h); err == nil {
			t.Errorf("%s: NewWriter accepted it", name)
		}
	}
}

// Every kind of damage is refused with the right error, never accepted
// and never a panic.
func TestReadRefusesDamage(t *testing.T) {
	good := writeBackup(t, testHeader(), testState(t, 200))
	inRates := bytes.Index(good, []byte("orders")) + 2
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte { b[off] ^= 0x10; return b }
	}
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
		want   error
	}{
		{"empty", func([]byte) []byte { return nil }, ErrNotBackup},
		{"other file", func([]byte) []byte { return []byte("SQLite format 3\x00") }, ErrNotBackup},
		{"bad magic", flip(0), ErrNotBackup},
		{"newer version", func(b []byte) []byte { b[4] = Version + 1; return b }, ErrVersion},
		{"version 0", func(b []byte) []byte { b[4] = 0; return b }, ErrVersion},
		{"bit in cluster ID", flip(6), ErrCorrupt},
		{"bit in the index", flip(12), ErrCorrupt},
		{"bit in the time", flip(15), ErrCorrupt},
		{"bit in the rates", flip(inRates), ErrCorrupt},
		{"bit in the snapshot", flip(len(good) / 2), ErrCorrupt},
		{"bit in the snapshot's end", flip(len(good) - 8), ErrCorrupt},
		{"bit in the checksum", flip(len(good) - 1), ErrCorrupt},
		{"truncated in the header", func(b []byte) []byte { return b[:9] }, ErrCorrupt},
		{"truncated in the snapshot", func(b []byte) []byte { return b[:len(b)/2] }, ErrCorrupt},
		{"checksum missing", func(b []byte) []byte { return b[:len(b)-4] }, ErrCorrupt},
		{"checksum cut", func(b []byte) []byte { return b[:len(b)-2] }, ErrCorrupt},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }, ErrCorrupt},
		{"second backup appended", func(b []byte) []byte { return append(b, good...) }, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.damage(bytes.Clone(good))
			b, err := Read(bytes.NewReader(data))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Read: %v (state %v), want %v", err, b, tc.want)
			}
		})
	}
}

// Every single-bit flip anywhere in a small backup is refused.
func TestReadRefusesEveryBitFlip(t *testing.T) {
	good := writeBackup(t, testHeader(), testState(t, 3))
	for off := range good {
		for bit := range 8 {
			data := bytes.Clone(good)
			data[off] ^= 1 << bit
			if _, err := Read(bytes.NewReader(data)); err == nil {
				t.Fatalf("a flip of bit %d at offset %d of %d was accepted", bit, off, len(good))
			}
		}
	}
}

// A failing reader is reported as a read error, not as damage.
func TestReadError(t *testing.T) {
	data := writeBackup(t, testHeader(), testState(t, 100))
	boom := errors.New("disk on fire")
	_, err := Read(io.MultiReader(bytes.NewReader(data[:len(data)/2]), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read: %v, want the reader's error and not ErrCorrupt", err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add(writeBackup(f, testHeader(), testState(f, 3)))
	f.Add([]byte("ORDB\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Read(bytes.NewReader(data))
		if err == nil && b.State == nil {
			t.Fatal("no error and no state")
		}
	})
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
