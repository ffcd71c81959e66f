package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"testing"
	"unsafe"

	"github.com/hashicorp/raft"
)

// memSink is an in-memory raft.SnapshotSink. failAfter > 0 makes writes
// fail once that many bytes have been accepted.
type memSink struct {
	buf       bytes.Buffer
	failAfter int
	closed    bool
	cancelled bool
}

var errSinkFull = errors.New("memSink: write failed")

func (s *memSink) ID() string { return "mem" }

func (s *memSink) Write(p []byte) (int, error) {
	if s.closed || s.cancelled {
		return 0, errors.New("memSink: write after close")
	}
	if s.failAfter > 0 && s.buf.Len()+len(p) > s.failAfter {
		return 0, errSinkFull
	}
	return s.buf.Write(p)
}

func (s *memSink) Close() error {
	s.closed = true
	return nil
}

func (s *memSink) Cancel() error {
	s.cancelled = true
	return nil
}

// snapshotBytes takes and persists a snapshot of f, failing the test on
// any error.
func snapshotBytes(tb testing.TB, f *FSM) []byte {
	tb.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		tb.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		tb.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		tb.Fatalf("Persist left sink closed=%v cancelled=%v, want closed only", sink.closed, sink.cancelled)
	}
	return sink.buf.Bytes()
}

// restoreBytes restores f from b.
func restoreBytes(f *FSM, b []byte) error {
	return f.Restore(io.NopCloser(bytes.NewReader(b)))
}

// dump is a comparable copy of an FSM's whole state.
type dump struct {
	Stores     map[string]map[string]uint64
	Keys       int
	Nodes      map[string]string
	ClusterID  string
	Applied    uint64
	Snowflakes map[string]SnowflakeStore
	Workers    map[uint64]Worker
	Held       map[string]uint64
}

func dumpOf(f *FSM) dump {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d := dump{
		Stores:    make(map[string]map[string]uint64, len(f.stores)),
		Keys:      f.keys,
		Nodes:     maps.Clone(f.nodes),
		ClusterID: f.clusterID,
		Applied:   f.applied,
		// maps.Equal takes nil and empty maps alike.
		Snowflakes: maps.Clone(f.snowflakes),
		Workers:    maps.Clone(f.workers),
		Held:       maps.Clone(f.held),
	}
	for name, m := range f.stores {
		d.Stores[name] = maps.Collect(m.all())
	}
	return d
}

// equalDump reports whether two dumps hold the same state.
func equalDump(a, b dump) bool {
	if a.Keys != b.Keys || a.ClusterID != b.ClusterID || a.Applied != b.Applied {
		return false
	}
	if !maps.Equal(a.Nodes, b.Nodes) || len(a.Stores) != len(b.Stores) {
		return false
	}
	if !maps.Equal(a.Snowflakes, b.Snowflakes) || !maps.Equal(a.Workers, b.Workers) || !maps.Equal(a.Held, b.Held) {
		return false
	}
	for name, m := range a.Stores {
		if !maps.Equal(m, b.Stores[name]) {
			return false
		}
	}
	return true
}

// applyLog applies c through the Raft entry point at index.
func applyLog(tb testing.TB, f *FSM, index uint64, c Command) *ApplyResponse {
	tb.Helper()
	out := f.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Data: c.Encode()})
	resp, ok := out.(*ApplyResponse)
	if !ok {
		tb.Fatalf("Apply(index %d) returned %T (%v), want *ApplyResponse", index, out, out)
	}
	return resp
}

// keyName returns the i-th key name of the large-state tests, shaped like
// the short names the memory budget is specified for.
func keyName(i int) string {
	return fmt.Sprintf("key-%06d", i)
}

// fillKeys gives n keys in store a high-water mark of i+1 (key i) through
// batched Raft entries, the way production state is built.
func fillKeys(tb testing.TB, f *FSM, store string, n int) {
	tb.Helper()
	const batch = 1000
	index := f.AppliedIndex()
	for start := 0; start < n; start += batch {
		ops := make([]Op, 0, batch)
		for i := start; i < min(start+batch, n); i++ {
			ops = append(ops, Op{Kind: OpFloor, Key: Key{Store: store, Name: keyName(i)}, Value: uint64(i) + 1})
		}
		index++
		applyLog(tb, f, index, Command{Ops: ops})
	}
}

// unsafeString returns a string sharing b's memory, to check that the FSM
// copies strings it keeps.
func unsafeString(b []byte) string {
	return unsafe.String(&b[0], len(b))
}
