package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// seedCommands are valid commands that seed every fuzz target, so plain
// `go test` runs them and the fuzzer starts from well-formed input.
func seedCommands() []Command {
	return []Command{
		{},
		{Ops: []Op{reserve("default", "orders", 1, 1000)}},
		{Ops: []Op{floor("s", "k", MaxID-3), reserve("s", "k", 2, 10), reserve("s", "k", 1, 1), reserve("s", "k", 1, 1)}},
		{Ops: []Op{reserve("a", "k", 5, 5), reserve("b", "k", 1, 1), floor("a", "k", 3), floor("a", "k", 30)}},
		{Ops: []Op{{Kind: OpInit, ClusterID: "c1"}, {Kind: OpInit, ClusterID: "c2"}}},
		{Ops: []Op{{Kind: OpSetNode, NodeID: "n1", Addr: "h:1"}, {Kind: OpSetNode, NodeID: "n2", Addr: "h:2"}, {Kind: OpRemoveNode, NodeID: "n1"}}},
		{Ops: []Op{reserve("", "", MaxID, ^uint64(0))}},
		{Ops: []Op{declare("sf", "L", 1), acquire("n1", "a", 100, 10), acquire("n2", "a", 100, 10), acquire("n1", "b", 200, 10), acquire("n3", "a", 210, 0)}},
		{Ops: []Op{reserve(SnowflakeTimeStore, "0", 1, 5000), declare("sf", "L", 4), declare("sf", "M", 4), acquire("n1", "a", 1000, 100), release("n1", 1000, 100), reserve("sf", "k", 1, 1), floor("sf", "k", 9)}},
		{Ops: []Op{declare("sf", strings.Repeat("l", MaxLayoutLen), MaxWorkerBits), acquire("n", "i", MaxID, MaxID), release("n", MaxID, MaxID)}},
	}
}

// FuzzDecode checks that Decode never panics, that every error wraps
// ErrMalformed, and that accepted input is canonical: it re-encodes to the
// same bytes (in its own version: version 1 input through the version 1
// encoder) and decodes to the same command. Each input is also tried
// sealed as a version 2 command with a correct checksum, so the fuzzer
// reaches version 2's parser without having to forge CRCs.
func FuzzDecode(f *testing.F) {
	for _, c := range seedCommands() {
		f.Add(c.Encode())
		f.Add(encodeV1(c))
	}
	for _, fx := range v1Fixtures {
		f.Add(readFixture(f, fx.file))
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0x80, 0x00})
	f.Add([]byte{1, 1, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		if len(data) > 0 {
			checkDecode(t, sealV2(data[1:]))
		}
	})
}

// checkDecode is FuzzDecode's property for one input.
func checkDecode(t *testing.T, data []byte) {
	t.Helper()
	{
		c, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Decode accepted a command that Validate rejects: %v", err)
		}
		enc := c.Encode()
		if data[0] == commandVersionV1 {
			if v1 := encodeV1(c); !bytes.Equal(v1, data) {
				t.Fatalf("encodeV1(Decode(b)) != b\nb   = %x\nenc = %x", data, v1)
			}
		} else if !bytes.Equal(enc, data) {
			t.Fatalf("Encode(Decode(b)) != b\nb   = %x\nenc = %x", data, enc)
		}
		c2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(c)): %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("Decode(Encode(c)) = %+v, want %+v", c2, c)
		}
	}
}

// FuzzApply feeds arbitrary bytes to Apply on a fresh FSM, twice so the
// second pass meets existing keys, and then the same bytes read as a
// generator of always-decodable ops. It checks that nothing panics, that
// an undecodable entry stops the FSM without changing anything and that a
// stopped FSM refuses the next entry, that every result obeys the op
// semantics, that high-water marks never decrease, and that the final
// state survives a snapshot round trip.
func FuzzApply(f *testing.F) {
	for _, c := range seedCommands() {
		f.Add(c.Encode())
	}
	f.Add([]byte{0xff, 0x00, 0x17, 0x42, 0x9c, 0x01, 0x02, 0x03, 0x04})
	f.Add(bytes.Repeat([]byte{0x06, 0xff}, 40))
	// Generated ops: declare a with 1 worker bit, then acquire, release
	// and reserve times.
	f.Add([]byte{0x05, 0x00, 0x04, 0x06, 0x00, 0x00, 0x06, 0x01, 0x02, 0x06, 0x02, 0x01, 0x07, 0x00, 0x0b, 0x10, 0x01, 0x04})
	f.Fuzz(func(t *testing.T, data []byte) {
		m := New(nil)
		for index := uint64(1); index <= 2; index++ {
			before := dumpOf(m)
			want, decErr := Decode(data)
			out := m.Apply(&raft.Log{Type: raft.LogCommand, Index: index, Data: data})
			if decErr != nil {
				err, ok := out.(error)
				if !ok || !errors.Is(err, ErrMalformed) || !errors.Is(err, ErrFailed) {
					t.Fatalf("Apply of undecodable data returned %v, want ErrMalformed and ErrFailed", out)
				}
				if !equalDump(before, dumpOf(m)) {
					t.Fatalf("Apply of undecodable data changed the state")
				}
				valid := Command{Ops: []Op{reserve("s", "k", 1, 1)}}.Encode()
				if err, ok := m.Apply(&raft.Log{Type: raft.LogCommand, Index: index + 1, Data: valid}).(error); !ok || !errors.Is(err, ErrFailed) {
					t.Fatalf("a stopped FSM applied the next entry")
				}
				m = New(nil) // the generated ops below need a working FSM
				break
			}
			resp, ok := out.(*ApplyResponse)
			if !ok {
				t.Fatalf("Apply returned %T (%v), want *ApplyResponse", out, out)
			}
			checkApplied(t, before, want, resp, m)
		}

		generated := opsFromBytes(data)
		before := dumpOf(m)
		checkApplied(t, before, generated, m.ApplyCommand(generated), m)

		dst := New(nil)
		if err := restoreBytes(dst, snapshotBytes(t, m)); err != nil {
			t.Fatalf("Restore of a fresh snapshot: %v", err)
		}
		if !equalDump(dumpOf(m), dumpOf(dst)) {
			t.Fatalf("snapshot round trip changed the state")
		}
	})
}

// checkApplied checks resp, the outcome of applying c to state before,
// against the op semantics, replaying them on a model of the state, and
// then checks the FSM m against the model.
func checkApplied(t *testing.T, before dump, c Command, resp *ApplyResponse, m *FSM) {
	t.Helper()
	if len(resp.Results) != len(c.Ops) {
		t.Fatalf("%d results for %d ops", len(resp.Results), len(c.Ops))
	}
	model := dumpToModel(before)
	cluster := before.ClusterID
	nodes := maps.Clone(before.Nodes)
	sm := snowModel{stores: maps.Clone(before.Snowflakes), workers: maps.Clone(before.Workers), marks: model}
	if sm.stores == nil {
		sm.stores = make(map[string]SnowflakeStore)
	}
	if sm.workers == nil {
		sm.workers = make(map[uint64]Worker)
	}
	for i, op := range c.Ops {
		r := resp.Results[i]
		if op.validate() != nil {
			if !errors.Is(r.Err, ErrMalformed) {
				t.Fatalf("op %d (%+v) is invalid but result is %+v", i, op, r)
			}
			continue
		}
		switch op.Kind {
		case OpReserve:
			if _, ok := sm.stores[op.Key.Store]; ok {
				if !errors.Is(r.Err, ErrSnowflakeStore) || r.First != 0 || r.Last != 0 || r.HighWater != model[op.Key] {
					t.Fatalf("op %d reserve in snowflake store %q: got %+v, want ErrSnowflakeStore at high-water %d", i, op.Key.Store, r, model[op.Key])
				}
				continue
			}
			model[op.Key] = checkReserve(t, i, op, r, model[op.Key])
		case OpDeclareSnowflake, OpAcquireWorker, OpReleaseWorker:
			want := sm.apply(op)
			if r.Worker != want.Worker || !errors.Is(r.Err, want.Err) || (r.Err == nil) != (want.Err == nil) || r.First != 0 || r.Last != 0 || r.HighWater != 0 {
				t.Fatalf("op %d %+v: got %+v, model says %+v", i, op, r, want)
			}
		case OpFloor:
			if want := max(model[op.Key], op.Value); r.HighWater != want || r.Err != nil {
				t.Fatalf("op %d floor %d over %d: got %+v, want high-water %d", i, op.Value, model[op.Key], r, want)
			}
			model[op.Key] = r.HighWater
		case OpSetNode:
			nodes[op.NodeID] = op.Addr
		case OpRemoveNode:
			delete(nodes, op.NodeID)
		case OpInit:
			if cluster == "" {
				cluster = op.ClusterID
			}
			if r.ClusterID != cluster {
				t.Fatalf("op %d init: cluster id %q, want %q", i, r.ClusterID, cluster)
			}
		}
	}
	after := dumpOf(m)
	for k, hw := range dumpToModel(before) {
		if got := m.HighWater(k); got < hw {
			t.Fatalf("high-water mark of %+v decreased from %d to %d", k, hw, got)
		}
	}
	if got := dumpToModel(after); !reflect.DeepEqual(got, nonZero(model)) {
		t.Fatalf("state after apply = %v, model says %v", got, nonZero(model))
	}
	if after.ClusterID != cluster {
		t.Fatalf("cluster id %q, want %q", after.ClusterID, cluster)
	}
	if !maps.Equal(after.Nodes, nodes) {
		t.Fatalf("nodes %v, want %v", after.Nodes, nodes)
	}
	if !maps.Equal(after.Snowflakes, sm.stores) {
		t.Fatalf("snowflake stores %v, model says %v", after.Snowflakes, sm.stores)
	}
	if !maps.Equal(after.Workers, sm.workers) {
		t.Fatalf("workers %v, model says %v", after.Workers, sm.workers)
	}
	for id, w := range sm.workers {
		if got, ok := m.WorkerOf(w.NodeID, w.Incarnation); w.FreeAt == 0 && (!ok || got != id) {
			t.Fatalf("WorkerOf(%q, %q) = %d, %v; worker %d is held by it", w.NodeID, w.Incarnation, got, ok, id)
		}
	}
}

// snowModel is a plain model of the Snowflake ops over a dump's state,
// written from their specification without the FSM's index of held
// workers: it finds what a node holds by scanning the table.
type snowModel struct {
	stores  map[string]SnowflakeStore
	workers map[uint64]Worker
	marks   map[Key]uint64 // the counters, for conflicts and reserved times
}

// apply applies a valid Snowflake op to the model and returns the result
// it must have (with a bare sentinel as the error).
func (sm *snowModel) apply(op Op) Result {
	switch op.Kind {
	case OpDeclareSnowflake:
		s := SnowflakeStore{Layout: op.Layout, WorkerBits: uint8(op.Value)}
		if old, ok := sm.stores[op.Key.Store]; ok {
			if old != s {
				return Result{Err: ErrSnowflakeConflict}
			}
			return Result{}
		}
		for k, hw := range sm.marks {
			if k.Store == op.Key.Store && hw != 0 {
				return Result{Err: ErrSnowflakeConflict}
			}
		}
		for id, w := range sm.workers {
			if w.FreeAt == 0 && id >= 1<<op.Value {
				return Result{Err: ErrSnowflakeConflict}
			}
		}
		sm.stores[op.Key.Store] = s
	case OpAcquireWorker:
		if len(sm.stores) == 0 {
			return Result{Err: ErrNoWorker}
		}
		for id, w := range sm.workers {
			if w.FreeAt == 0 && w.NodeID == op.NodeID && w.Incarnation == op.Incarnation {
				return Result{Worker: id}
			}
		}
		sm.release(op.NodeID, op.At, op.Hold)
		bits := uint8(64)
		for _, s := range sm.stores {
			bits = min(bits, s.WorkerBits)
		}
		for id := uint64(0); id < 1<<bits; id++ {
			if w, ok := sm.workers[id]; !ok || (w.FreeAt != 0 && w.FreeAt <= op.At) {
				sm.workers[id] = Worker{ID: id, NodeID: op.NodeID, Incarnation: op.Incarnation}
				return Result{Worker: id}
			}
		}
		return Result{Err: ErrNoWorker}
	case OpReleaseWorker:
		sm.release(op.NodeID, op.At, op.Hold)
	}
	return Result{}
}

// release releases every worker node holds.
func (sm *snowModel) release(node string, at, hold uint64) {
	for id, w := range sm.workers {
		if w.FreeAt == 0 && w.NodeID == node {
			w.FreeAt = max(max(at, sm.marks[timeKey(id)])+hold, 1)
			sm.workers[id] = w
		}
	}
}

// checkReserve checks one reservation result against the high-water mark
// hw it started from and returns the mark it leaves.
func checkReserve(t *testing.T, i int, op Op, r Result, hw uint64) uint64 {
	t.Helper()
	avail := MaxID - hw
	if r.Err != nil {
		if !errors.Is(r.Err, ErrOverflow) || op.Need <= avail || r.HighWater != hw || r.First != 0 || r.Last != 0 {
			t.Fatalf("op %d reserve need %d want %d over %d: bad failure %+v", i, op.Need, op.Want, hw, r)
		}
		return hw
	}
	n := min(op.Want, avail)
	if r.First != hw+1 || r.Last != hw+n || r.HighWater != r.Last || r.Last > MaxID || n < op.Need {
		t.Fatalf("op %d reserve need %d want %d over %d: got %+v, want %d..%d", i, op.Need, op.Want, hw, r, hw+1, hw+n)
	}
	return r.Last
}

// dumpToModel flattens a dump's stores into one map keyed by Key.
func dumpToModel(d dump) map[Key]uint64 {
	m := make(map[Key]uint64)
	for store, keys := range d.Stores {
		for name, hw := range keys {
			m[Key{Store: store, Name: name}] = hw
		}
	}
	return m
}

// nonZero drops zero marks, which the FSM does not store.
func nonZero(m map[Key]uint64) map[Key]uint64 {
	out := make(map[Key]uint64)
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// opsFromBytes reads data as a compact op generator, three bytes per op, so
// the fuzzer explores Apply semantics (overflow edges, floors, stores,
// Snowflake stores and workers, reserved times) without having to discover
// the wire format first. Some generated ops are invalid on purpose (need 0,
// need > want, worker bits 0 or 32, a reserved store, an empty layout,
// times above MaxID) to cover ApplyCommand's per-op validation.
func opsFromBytes(data []byte) Command {
	numbers := []uint64{0, 1, 2, 3, 1000, MaxID - 2, MaxID - 1, MaxID, MaxID + 1, ^uint64(0)}
	pick := func(b byte) uint64 { return numbers[int(b)%len(numbers)] }
	times := []uint64{0, 1, 5, 10, 100, 1000, MaxID, MaxID + 1}
	holds := []uint64{0, 1, 10, MaxID, MaxID + 1}
	stores := []string{"a", "b", SnowflakeTimeStore}
	var c Command
	for len(data) >= 3 && len(c.Ops) < 64 {
		a, b, v := data[0], data[1], data[2]
		data = data[3:]
		key := Key{Store: stores[a>>3%3], Name: string(rune('x' + a>>5%3))}
		if key.Store == SnowflakeTimeStore {
			key.Name = string(rune('0' + a>>5%3)) // workers 0..2
		}
		node := string(rune('A' + b%3))
		switch a % 8 {
		case 0:
			need, want := pick(b), pick(v)
			c.Ops = append(c.Ops, Op{Kind: OpReserve, Key: key, Need: need, Want: want})
		case 1:
			c.Ops = append(c.Ops, Op{Kind: OpFloor, Key: key, Value: pick(b) - uint64(v%4)})
		case 2:
			c.Ops = append(c.Ops, Op{Kind: OpInit, ClusterID: string(rune('A' + b%3))})
		case 3:
			c.Ops = append(c.Ops, Op{Kind: OpSetNode, NodeID: string(rune('A' + b%3)), Addr: string(rune('0' + v%10))})
		case 4:
			c.Ops = append(c.Ops, Op{Kind: OpRemoveNode, NodeID: string(rune('A' + b%3))})
		case 5:
			layout := []string{"L", "M", "L", ""}[v%4]
			bits := []uint64{0, 1, 2, 31, 32}[int(v>>2)%5]
			c.Ops = append(c.Ops, declare(stores[b>>2%3], layout, bits))
		case 6:
			c.Ops = append(c.Ops, acquire(node, string(rune('0'+v%2)), times[int(v>>1)%len(times)], holds[int(b>>2)%len(holds)]))
		case 7:
			c.Ops = append(c.Ops, release(node, times[int(v)%len(times)], holds[int(v>>3)%len(holds)]))
		}
	}
	return c
}

// FuzzRestore feeds arbitrary snapshot bodies, with a correct checksum
// appended so the parser behind the checksum gets exercised, to Restore.
// It checks that nothing panics, that failures wrap ErrMalformed and keep
// the old state, and that accepted snapshots are canonical: re-snapshotting
// the restored state yields the same bytes.
func FuzzRestore(f *testing.F) {
	for _, c := range seedCommands() {
		m := New(nil)
		applyLog(f, m, 1, c)
		b := snapshotBytes(f, m)
		f.Add(b[:len(b)-4])
	}
	f.Add([]byte(header().u(0).s("").u(0).u(1).s("s").u(2).s("a").u(1).s("b").u(2)))
	f.Add([]byte(snapBody(snapshotMagic + "\x02").u(0).s("").u(0).u(0).u(1).s("s").s("L").u(2).u(2).u(1).s("a").s("i").u(5).u(3).s("a").s("j").u(0)))
	f.Add([]byte("ORDS"))
	f.Fuzz(func(t *testing.T, body []byte) {
		data := withCRC(body)
		m := New(nil)
		applyLog(t, m, 1, Command{Ops: []Op{reserve("old", "k", 1, 1), {Kind: OpInit, ClusterID: "old"}}})
		before := dumpOf(m)
		if err := restoreBytes(m, data); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Restore error %v does not wrap ErrMalformed", err)
			}
			if !equalDump(before, dumpOf(m)) {
				t.Fatalf("failed Restore changed the state")
			}
			return
		}
		if again := snapshotBytes(t, m); !bytes.Equal(again, data) {
			t.Fatalf("restored snapshot is not canonical:\nin  %x\nout %x", data, again)
		}
		if got := m.Len(); got != sumKeys(dumpOf(m)) {
			t.Fatalf("Len = %d, stores hold %d keys", got, sumKeys(dumpOf(m)))
		}
	})
}

func sumKeys(d dump) int {
	n := 0
	for _, keys := range d.Stores {
		n += len(keys)
	}
	return n
}

// TestWithCRCMatchesPersist guards the fuzz helper: if withCRC drifted from
// the real trailer, FuzzRestore would only ever test checksum failures.
func TestWithCRCMatchesPersist(t *testing.T) {
	b := snapshotBytes(t, populated(t))
	if got := withCRC(b[:len(b)-4]); !bytes.Equal(got, b) {
		t.Errorf("withCRC trailer %x, Persist wrote %x", got[len(got)-4:], b[len(b)-4:])
	}
	if binary.BigEndian.Uint32(b[len(b)-4:]) == 0 {
		t.Errorf("suspicious zero checksum")
	}
}
