package fsm

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

// step is one command applied in an Apply semantics case and the results
// it must produce.
type step struct {
	ops  []Op
	want []Result
}

func reserve(store, name string, need, want uint64) Op {
	return Op{Kind: OpReserve, Key: Key{Store: store, Name: name}, Need: need, Want: want}
}

func floor(store, name string, value uint64) Op {
	return Op{Kind: OpFloor, Key: Key{Store: store, Name: name}, Value: value}
}

func granted(first, last uint64) Result { return Result{First: first, Last: last, HighWater: last} }

func TestApplySemantics(t *testing.T) {
	overflow := func(hw uint64) Result { return Result{HighWater: hw, Err: ErrOverflow} }
	tests := []struct {
		name        string
		steps       []step
		wantHW      map[Key]uint64
		wantLen     int
		wantNodes   map[string]string
		wantCluster string
	}{
		{
			name:    "fresh key starts at 1",
			steps:   []step{{[]Op{reserve("s", "k", 1, 10)}, []Result{granted(1, 10)}}},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: 10},
			wantLen: 1,
		},
		{
			name: "sequential reserves are contiguous",
			steps: []step{
				{[]Op{reserve("s", "k", 10, 10)}, []Result{granted(1, 10)}},
				{[]Op{reserve("s", "k", 1, 5)}, []Result{granted(11, 15)}},
				{[]Op{reserve("s", "k", 1, 1), reserve("s", "k", 2, 3)}, []Result{granted(16, 16), granted(17, 19)}},
			},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: 19},
			wantLen: 1,
		},
		{
			name: "want is clamped near MaxID",
			steps: []step{
				{[]Op{floor("s", "k", MaxID-5)}, []Result{{HighWater: MaxID - 5}}},
				{[]Op{reserve("s", "k", 1, 100)}, []Result{granted(MaxID-4, MaxID)}},
			},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: MaxID},
			wantLen: 1,
		},
		{
			name: "need exactly fits below MaxID",
			steps: []step{
				{[]Op{floor("s", "k", MaxID-5)}, []Result{{HighWater: MaxID - 5}}},
				{[]Op{reserve("s", "k", 5, 5)}, []Result{granted(MaxID-4, MaxID)}},
			},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: MaxID},
			wantLen: 1,
		},
		{
			name: "overflow leaves state unchanged",
			steps: []step{
				{[]Op{floor("s", "k", MaxID-5)}, []Result{{HighWater: MaxID - 5}}},
				{[]Op{reserve("s", "k", 6, 10)}, []Result{overflow(MaxID - 5)}},
				{[]Op{reserve("s", "k", 2, 2)}, []Result{granted(MaxID-4, MaxID-3)}},
			},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: MaxID - 3},
			wantLen: 1,
		},
		{
			name: "exhausted key overflows",
			steps: []step{
				{[]Op{floor("s", "k", MaxID)}, []Result{{HighWater: MaxID}}},
				{[]Op{reserve("s", "k", 1, 1)}, []Result{overflow(MaxID)}},
			},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: MaxID},
			wantLen: 1,
		},
		{
			name:    "overflow on a fresh key creates nothing",
			steps:   []step{{[]Op{reserve("s", "k", MaxID+1, MaxID+1)}, []Result{overflow(0)}}},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: 0},
			wantLen: 0,
		},
		{
			name:    "whole id space in one reservation",
			steps:   []step{{[]Op{reserve("s", "k", MaxID, ^uint64(0))}, []Result{granted(1, MaxID)}}},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: MaxID},
			wantLen: 1,
		},
		{
			name: "failed op does not stop later ops",
			steps: []step{{
				[]Op{floor("s", "a", MaxID), reserve("s", "a", 1, 1), reserve("s", "b", 1, 1)},
				[]Result{{HighWater: MaxID}, overflow(MaxID), granted(1, 1)},
			}},
			wantHW:  map[Key]uint64{{Store: "s", Name: "a"}: MaxID, {Store: "s", Name: "b"}: 1},
			wantLen: 2,
		},
		{
			name: "floor raises and never lowers",
			steps: []step{
				{[]Op{floor("s", "k", 100)}, []Result{{HighWater: 100}}},
				{[]Op{floor("s", "k", 50)}, []Result{{HighWater: 100}}},
				{[]Op{floor("s", "k", 100)}, []Result{{HighWater: 100}}},
				{[]Op{floor("s", "k", 0)}, []Result{{HighWater: 100}}},
				{[]Op{floor("s", "k", 101)}, []Result{{HighWater: 101}}},
			},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: 101},
			wantLen: 1,
		},
		{
			name: "floor below granted ids is ignored",
			steps: []step{
				{[]Op{reserve("s", "k", 10, 10)}, []Result{granted(1, 10)}},
				{[]Op{floor("s", "k", 3)}, []Result{{HighWater: 10}}},
				{[]Op{reserve("s", "k", 1, 1)}, []Result{granted(11, 11)}},
			},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: 11},
			wantLen: 1,
		},
		{
			name:    "floor zero on a fresh key creates nothing",
			steps:   []step{{[]Op{floor("s", "k", 0)}, []Result{{HighWater: 0}}}},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: 0},
			wantLen: 0,
		},
		{
			name: "reserve after floor starts at floor plus one",
			steps: []step{
				{[]Op{floor("s", "k", 1000)}, []Result{{HighWater: 1000}}},
				{[]Op{reserve("s", "k", 1, 10)}, []Result{granted(1001, 1010)}},
			},
			wantHW:  map[Key]uint64{{Store: "s", Name: "k"}: 1010},
			wantLen: 1,
		},
		{
			name: "stores are separate namespaces",
			steps: []step{{
				[]Op{reserve("a", "k", 5, 5), reserve("b", "k", 1, 1), reserve("", "k", 2, 2), reserve("default", "k", 3, 3), reserve("a", "k", 1, 1)},
				[]Result{granted(1, 5), granted(1, 1), granted(1, 2), granted(1, 3), granted(6, 6)},
			}},
			wantHW:  map[Key]uint64{{Store: "a", Name: "k"}: 6, {Store: "b", Name: "k"}: 1, {Store: "", Name: "k"}: 2, {Store: "default", Name: "k"}: 3, {Store: "a", Name: "other"}: 0},
			wantLen: 4,
		},
		{
			name: "init first wins",
			steps: []step{
				{[]Op{{Kind: OpInit, ClusterID: "c1"}}, []Result{{ClusterID: "c1"}}},
				{[]Op{{Kind: OpInit, ClusterID: "c2"}, {Kind: OpInit, ClusterID: "c1"}}, []Result{{ClusterID: "c1"}, {ClusterID: "c1"}}},
			},
			wantCluster: "c1",
		},
		{
			name: "set and remove nodes",
			steps: []step{
				{[]Op{{Kind: OpSetNode, NodeID: "n1", Addr: "a1"}, {Kind: OpSetNode, NodeID: "n2", Addr: "a2"}}, []Result{{}, {}}},
				{[]Op{{Kind: OpSetNode, NodeID: "n1", Addr: "a3"}, {Kind: OpRemoveNode, NodeID: "n2"}, {Kind: OpRemoveNode, NodeID: "unknown"}}, []Result{{}, {}, {}}},
			},
			wantNodes: map[string]string{"n1": "a3"},
		},
		{
			name:  "empty command",
			steps: []step{{nil, []Result{}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(nil)
			for i, s := range tt.steps {
				resp := applyLog(t, f, uint64(i+1), Command{Ops: s.ops})
				checkResults(t, i, resp.Results, s.want)
			}
			for k, want := range tt.wantHW {
				if got := f.HighWater(k); got != want {
					t.Errorf("HighWater(%+v) = %d, want %d", k, got, want)
				}
			}
			if got := f.Len(); got != tt.wantLen {
				t.Errorf("Len = %d, want %d", got, tt.wantLen)
			}
			if got := f.Nodes(); !maps.Equal(got, tt.wantNodes) {
				t.Errorf("Nodes = %v, want %v", got, tt.wantNodes)
			}
			if got := f.ClusterID(); got != tt.wantCluster {
				t.Errorf("ClusterID = %q, want %q", got, tt.wantCluster)
			}
			if got, want := f.AppliedIndex(), uint64(len(tt.steps)); got != want {
				t.Errorf("AppliedIndex = %d, want %d", got, want)
			}
		})
	}
}

// checkResults compares results field by field, matching errors with
// errors.Is.
func checkResults(t *testing.T, stepIdx int, got, want []Result) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("step %d: %d results, want %d", stepIdx, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.First != w.First || g.Last != w.Last || g.HighWater != w.HighWater || g.ClusterID != w.ClusterID || g.Worker != w.Worker || !errors.Is(g.Err, w.Err) || (w.Err == nil) != (g.Err == nil) {
			t.Errorf("step %d op %d: got %+v, want %+v", stepIdx, i, g, w)
		}
	}
}

// TestApplyUndecodableEntryStopsFSM checks that an entry the FSM cannot
// decode is never skipped: the FSM stops, names the entry, changes
// nothing, and refuses every later Apply, Snapshot and Restore.
func TestApplyUndecodableEntryStopsFSM(t *testing.T) {
	valid := Command{Ops: []Op{reserve("s", "k", 1, 1)}}.Encode()
	flipped := bytes.Clone(valid)
	flipped[5] ^= 0x04
	tests := []struct {
		name     string
		data     []byte
		checksum bool // the cause must wrap ErrChecksum
	}{
		{"empty", nil, false},
		{"garbage", []byte("not a command"), false},
		{"bad version", append([]byte{9}, valid[1:]...), false},
		{"flipped bit", flipped, true},
		{"truncated", valid[:len(valid)-1], true},
		{"trailing", append(valid[:len(valid):len(valid)], 0), true},
		{"v1 truncated", encodeV1(Command{Ops: []Op{reserve("s", "k", 1, 1)}})[:5], false},
		// A bad op after a good one must not let the good one apply.
		{"bad second op", Command{Ops: []Op{reserve("s", "k", 1, 1), reserve("s", "k", 0, 1)}}.Encode(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(nil)
			applyLog(t, f, 1, Command{Ops: []Op{reserve("s", "k", 5, 5), {Kind: OpInit, ClusterID: "c"}}})
			before := dumpOf(f)
			select {
			case <-f.Failed():
				t.Fatal("Failed closed before anything failed")
			default:
			}

			out := f.Apply(&raft.Log{Type: raft.LogCommand, Index: 2, Term: 3, Data: tt.data})
			err, ok := out.(error)
			if !ok {
				t.Fatalf("Apply returned %T (%v), want an error", out, out)
			}
			for _, target := range []error{ErrFailed, ErrMalformed} {
				if !errors.Is(err, target) {
					t.Errorf("Apply error %v does not wrap %v", err, target)
				}
			}
			if got := errors.Is(err, ErrChecksum); got != tt.checksum {
				t.Errorf("errors.Is(%v, ErrChecksum) = %v, want %v", err, got, tt.checksum)
			}
			var fe *FailedError
			if !errors.As(f.Err(), &fe) || fe.Index != 2 || fe.Term != 3 || fe.Snapshot {
				t.Fatalf("Err() = %#v, want a FailedError for index 2, term 3", f.Err())
			}
			if !strings.Contains(fe.Error(), "the log entry at index 2 (term 3) could not be applied") {
				t.Errorf("Err() = %q does not name the entry", fe)
			}
			select {
			case <-f.Failed():
			default:
				t.Fatal("Failed not closed after a failed Apply")
			}
			// Nothing changed, not even the applied index: the entry was
			// not applied.
			if after := dumpOf(f); !equalDump(before, after) {
				t.Errorf("state changed by an undecodable entry:\nbefore %+v\nafter  %+v", before, after)
			}

			// Everything after it is refused, valid or not.
			for i, l := range []*raft.Log{
				{Type: raft.LogCommand, Index: 3, Data: Command{Ops: []Op{reserve("s", "k", 1, 1)}}.Encode()},
				{Type: raft.LogNoop, Index: 4},
			} {
				if err, ok := f.Apply(l).(error); !ok || !errors.Is(err, ErrFailed) {
					t.Errorf("later Apply %d = %v, want ErrFailed", i, f.Apply(l))
				}
			}
			if _, err := f.Snapshot(); !errors.Is(err, ErrFailed) {
				t.Errorf("Snapshot of a stopped FSM: %v, want ErrFailed", err)
			}
			if err := restoreBytes(f, snapshotBytes(t, populated(t))); !errors.Is(err, ErrFailed) {
				t.Errorf("Restore into a stopped FSM: %v, want ErrFailed", err)
			}
			if after := dumpOf(f); !equalDump(before, after) {
				t.Errorf("a stopped FSM changed:\nbefore %+v\nafter  %+v", before, after)
			}
			// The first failure is the one reported.
			if fe2, _ := f.Err().(*FailedError); fe2 != fe {
				t.Errorf("Err changed from %v to %v", fe, fe2)
			}
		})
	}
}

// TestRestoreFailureStopsFSM checks that a snapshot that does not restore
// stops the FSM like an undecodable entry, keeping the old state.
func TestRestoreFailureStopsFSM(t *testing.T) {
	good := snapshotBytes(t, populated(t))
	damaged := bytes.Clone(good)
	damaged[len(damaged)/2] ^= 0x01
	f := New(nil)
	applyLog(t, f, 1, Command{Ops: []Op{reserve("s", "k", 5, 5)}})
	before := dumpOf(f)
	err := restoreBytes(f, damaged)
	if !errors.Is(err, ErrFailed) || !errors.Is(err, ErrMalformed) {
		t.Fatalf("Restore of a damaged snapshot: %v, want ErrFailed and ErrMalformed", err)
	}
	var fe *FailedError
	if !errors.As(f.Err(), &fe) || !fe.Snapshot {
		t.Fatalf("Err() = %#v, want a FailedError for a snapshot", f.Err())
	}
	if !equalDump(before, dumpOf(f)) {
		t.Errorf("a failed Restore changed the state")
	}
	if err := restoreBytes(f, good); !errors.Is(err, ErrFailed) {
		t.Errorf("Restore of a good snapshot into a stopped FSM: %v, want ErrFailed", err)
	}
	if out, ok := f.Apply(&raft.Log{Type: raft.LogCommand, Index: 2, Data: Command{Ops: []Op{reserve("s", "k", 1, 1)}}.Encode()}).(error); !ok || !errors.Is(out, ErrFailed) {
		t.Errorf("Apply after a failed Restore: %v, want ErrFailed", out)
	}
}

func TestApplyNonCommandLogs(t *testing.T) {
	for _, typ := range []raft.LogType{raft.LogNoop, raft.LogConfiguration, raft.LogBarrier} {
		t.Run(typ.String(), func(t *testing.T) {
			f := New(nil)
			// The payload is a valid command, to prove it is not applied.
			data := Command{Ops: []Op{reserve("s", "k", 1, 1)}}.Encode()
			if out := f.Apply(&raft.Log{Type: typ, Index: 7, Data: data}); out != nil {
				t.Errorf("Apply = %v, want nil", out)
			}
			if f.Len() != 0 {
				t.Errorf("Len = %d, want 0", f.Len())
			}
			if got := f.AppliedIndex(); got != 7 {
				t.Errorf("AppliedIndex = %d, want 7", got)
			}
		})
	}
}

func TestApplyCommand(t *testing.T) {
	f := New(nil)
	resp := f.ApplyCommand(Command{Ops: []Op{
		reserve("s", "k", 1, 3),
		reserve("s", "k", 0, 3), // invalid: need 0
		{Kind: 42},              // invalid: unknown kind
		floor("s", "k", MaxID+1),
		reserve("s", "k", 1, 1),
	}})
	if len(resp.Results) != 5 {
		t.Fatalf("%d results, want 5", len(resp.Results))
	}
	checkResults(t, 0, []Result{resp.Results[0], resp.Results[4]}, []Result{granted(1, 3), granted(4, 4)})
	for _, i := range []int{1, 2, 3} {
		if r := resp.Results[i]; !errors.Is(r.Err, ErrMalformed) || r.HighWater != 0 {
			t.Errorf("result %d = %+v, want only an ErrMalformed error", i, r)
		}
	}
	if got := f.HighWater(Key{Store: "s", Name: "k"}); got != 4 {
		t.Errorf("HighWater = %d, want 4", got)
	}
	if got := f.AppliedIndex(); got != 0 {
		t.Errorf("AppliedIndex = %d, want 0: ApplyCommand must not move it", got)
	}
}

// TestApplyCommandCopiesStrings checks that the FSM does not keep strings
// that alias the caller's memory.
func TestApplyCommandCopiesStrings(t *testing.T) {
	buf := []byte("store-key")
	name := unsafeString(buf[6:])
	f := New(nil)
	f.ApplyCommand(Command{Ops: []Op{floor("s", name, 9)}})
	copy(buf, "XXXXXXXXX")
	if got := f.HighWater(Key{Store: "s", Name: "key"}); got != 9 {
		t.Errorf("HighWater(key) = %d after mutating the caller's buffer, want 9", got)
	}
}

func TestNodesReturnsCopy(t *testing.T) {
	f := New(nil)
	f.ApplyCommand(Command{Ops: []Op{{Kind: OpSetNode, NodeID: "n1", Addr: "a1"}}})
	n := f.Nodes()
	n["n1"] = "changed"
	n["n2"] = "added"
	if got := f.Nodes(); !maps.Equal(got, map[string]string{"n1": "a1"}) {
		t.Errorf("Nodes = %v after mutating a returned copy", got)
	}
}

// TestApplyDeterministic applies the same entries to two FSMs and checks
// that results and snapshots are identical.
func TestApplyDeterministic(t *testing.T) {
	var cmds []Command
	for i := range 50 {
		ops := []Op{
			reserve("s"+strings.Repeat("x", i%3), keyName(i%7), 1, uint64(i+1)),
			floor("t", keyName(i%5), uint64(i*i)),
			{Kind: OpSetNode, NodeID: keyName(i % 4), Addr: keyName(i)},
		}
		if i%9 == 0 {
			ops = append(ops, Op{Kind: OpRemoveNode, NodeID: keyName(i % 4)})
		}
		cmds = append(cmds, Command{Ops: ops})
	}
	a, b := New(nil), New(nil)
	for i, c := range cmds {
		ra, rb := applyLog(t, a, uint64(i+1), c), applyLog(t, b, uint64(i+1), c)
		checkResults(t, i, ra.Results, rb.Results)
	}
	if sa, sb := snapshotBytes(t, a), snapshotBytes(t, b); string(sa) != string(sb) {
		t.Errorf("snapshots of identically built FSMs differ")
	}
}

// TestConcurrentReads exercises the read accessors against Apply, Snapshot
// and Persist so that -race can catch unguarded access.
func TestConcurrentReads(t *testing.T) {
	f := New(nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = f.HighWater(Key{Store: "s", Name: keyName(1)})
				_ = f.Nodes()
				_ = f.ClusterID()
				_ = f.Len()
				_ = f.AppliedIndex()
				_ = f.SnowflakeStores()
				_, _ = f.WorkerOf(keyName(1), "i")
				_ = f.Workers()
			}
		})
	}
	for i := range 200 {
		applyLog(t, f, uint64(i+1), Command{Ops: []Op{
			reserve("s", keyName(i%10), 1, 1),
			{Kind: OpSetNode, NodeID: keyName(i % 3), Addr: "a"},
			{Kind: OpInit, ClusterID: "c"},
			declare("sf", "L", 4),
			acquire(keyName(i%5), "i", uint64(i), 1),
			release(keyName(i%7), uint64(i), 1),
		}})
		if i%50 == 0 {
			snap, err := f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				defer snap.Release()
				if err := snap.Persist(&memSink{}); err != nil {
					t.Error(err)
				}
			})
		}
	}
	close(stop)
	wg.Wait()
}

func TestNewNilLogger(t *testing.T) {
	f := New(nil)
	// Logging paths must not panic with the default logger.
	f.Apply(&raft.Log{Type: raft.LogCommand, Index: 1, Data: []byte{0}})
	f.ApplyCommand(Command{Ops: []Op{floor("s", "k", MaxID), reserve("s", "k", 1, 1)}})
	if err := restoreBytes(f, nil); err == nil {
		t.Fatal("Restore of empty input succeeded")
	}
}

func BenchmarkApply(b *testing.B) {
	f := New(nil)
	ops := make([]Op, 100)
	for i := range ops {
		ops[i] = reserve("default", keyName(i), 1, 1000)
	}
	data := Command{Ops: ops}.Encode()
	b.ReportAllocs()
	var index uint64
	for b.Loop() {
		index++
		if _, ok := f.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Data: data}).(*ApplyResponse); !ok {
			b.Fatal("apply failed")
		}
	}
}

func TestFloorHookSeesFloorsFromTheLog(t *testing.T) {
	f := New(nil)
	var got []uint64
	f.SetFloorHook(func(k Key, floor uint64) {
		if k != (Key{Store: "s", Name: "k"}) {
			t.Errorf("hook called for %v", k)
		}
		got = append(got, floor)
	})
	cmd := Command{Ops: []Op{
		{Kind: OpReserve, Key: Key{Store: "s", Name: "k"}, Want: 5, Need: 1},
		{Kind: OpFloor, Key: Key{Store: "s", Name: "k"}, Value: 100},
	}}
	f.Apply(&raft.Log{Type: raft.LogCommand, Index: 1, Data: cmd.Encode()})
	if len(got) != 1 || got[0] != 100 {
		t.Fatalf("hook saw %v, want [100]", got)
	}
}
