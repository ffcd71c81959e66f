package fsm

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func declare(store, layout string, bits uint64) Op {
	return Op{Kind: OpDeclareSnowflake, Key: Key{Store: store}, Layout: layout, Value: bits}
}

func acquire(node, incarnation string, at, hold uint64) Op {
	return Op{Kind: OpAcquireWorker, NodeID: node, Incarnation: incarnation, At: at, Hold: hold}
}

func release(node string, at, hold uint64) Op {
	return Op{Kind: OpReleaseWorker, NodeID: node, At: at, Hold: hold}
}

// timeKey is worker w's key in SnowflakeTimeStore.
func timeKey(w uint64) Key {
	return Key{Store: SnowflakeTimeStore, Name: strconv.FormatUint(w, 10)}
}

// worker returns the Result of an OpAcquireWorker that gave w.
func worker(w uint64) Result { return Result{Worker: w} }

// snowStep is one op of a Snowflake case, applied as a Raft log entry of
// its own, with the result it must produce; errText, if set, must be in
// the result's error.
type snowStep struct {
	op      Op
	want    Result
	errText string
}

// snowCase is a sequence of steps and the state it must leave.
type snowCase struct {
	name        string
	steps       []snowStep
	wantStores  map[string]SnowflakeStore
	wantWorkers []Worker
	wantHW      map[Key]uint64
	// wantOf maps "node/incarnation" to the worker WorkerOf must return,
	// or -1 for none.
	wantOf map[string]int64
}

// runSnowCases applies every case's steps through Raft log entries on a
// fresh FSM and checks the results and the state.
func runSnowCases(t *testing.T, tests []snowCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(nil)
			for i, s := range tt.steps {
				resp := applyLog(t, f, uint64(i+1), Command{Ops: []Op{s.op}})
				checkResults(t, i, resp.Results, []Result{s.want})
				if s.errText != "" && (resp.Results[0].Err == nil || !strings.Contains(resp.Results[0].Err.Error(), s.errText)) {
					t.Errorf("step %d: error %v does not contain %q", i, resp.Results[0].Err, s.errText)
				}
			}
			if got := f.SnowflakeStores(); !maps.Equal(got, tt.wantStores) {
				t.Errorf("SnowflakeStores = %v, want %v", got, tt.wantStores)
			}
			if got := f.Workers(); !slices.Equal(got, tt.wantWorkers) {
				t.Errorf("Workers = %+v\nwant      %+v", got, tt.wantWorkers)
			}
			for k, want := range tt.wantHW {
				if got := f.HighWater(k); got != want {
					t.Errorf("HighWater(%+v) = %d, want %d", k, got, want)
				}
			}
			for ni, want := range tt.wantOf {
				node, inc, _ := strings.Cut(ni, "/")
				w, ok := f.WorkerOf(node, inc)
				if got := map[bool]int64{true: int64(w), false: -1}[ok]; got != want {
					t.Errorf("WorkerOf(%q, %q) = %d, %v; want %d", node, inc, w, ok, want)
				}
			}
			if got, want := f.AppliedIndex(), uint64(len(tt.steps)); got != want {
				t.Errorf("AppliedIndex = %d, want %d", got, want)
			}
			// Whatever the state, it survives a snapshot round trip.
			dst := New(nil)
			if err := restoreBytes(dst, snapshotBytes(t, f)); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if !equalDump(dumpOf(f), dumpOf(dst)) {
				t.Errorf("snapshot round trip changed the state:\nwant %+v\ngot  %+v", dumpOf(f), dumpOf(dst))
			}
		})
	}
}

func TestDeclareSnowflake(t *testing.T) {
	conflict := Result{Err: ErrSnowflakeConflict}
	l22 := SnowflakeStore{Layout: "L22", WorkerBits: 22}
	runSnowCases(t, []snowCase{
		{
			name:       "declare",
			steps:      []snowStep{{op: declare("orders", "L22", 22)}},
			wantStores: map[string]SnowflakeStore{"orders": l22},
		},
		{
			name: "same layout again is a no-op",
			steps: []snowStep{
				{op: declare("orders", "L22", 22)},
				{op: declare("orders", "L22", 22)},
			},
			wantStores: map[string]SnowflakeStore{"orders": l22},
		},
		{
			name: "different layout conflicts",
			steps: []snowStep{
				{op: declare("orders", "L22", 22)},
				{op: declare("orders", "other", 22), want: conflict, errText: `layout "other" and 22 worker bits: snowflake store declaration conflicts with the replicated state: it is declared with layout "L22" and 22 worker bits`},
			},
			wantStores: map[string]SnowflakeStore{"orders": l22},
		},
		{
			name: "different worker bits conflict",
			steps: []snowStep{
				{op: declare("orders", "L22", 22)},
				{op: declare("orders", "L22", 10), want: conflict, errText: "declared with layout"},
			},
			wantStores: map[string]SnowflakeStore{"orders": l22},
		},
		{
			name: "a store with counters conflicts",
			steps: []snowStep{
				{op: reserve("orders", "k", 1, 1), want: granted(1, 1)},
				{op: declare("orders", "L22", 22), want: conflict, errText: "store holds counters (1 keys); a snowflake store needs a new name"},
				{op: declare("orders2", "L22", 22)},
			},
			wantStores: map[string]SnowflakeStore{"orders2": l22},
			wantHW:     map[Key]uint64{{Store: "orders", Name: "k"}: 1},
		},
		{
			name: "a floor of 0 creates no counter",
			steps: []snowStep{
				{op: floor("orders", "k", 0)},
				{op: declare("orders", "L22", 22)},
			},
			wantStores: map[string]SnowflakeStore{"orders": l22},
		},
		{
			// Floors are allowed in a Snowflake store, and the keys they
			// create must not make the store conflict with itself.
			name: "floors after the declaration do not conflict with it",
			steps: []snowStep{
				{op: declare("orders", "L22", 22)},
				{op: floor("orders", "k", 5), want: Result{HighWater: 5}},
				{op: declare("orders", "L22", 22)},
				{op: declare("orders", "L", 22), want: conflict, errText: `declared with layout "L22"`},
			},
			wantStores: map[string]SnowflakeStore{"orders": l22},
			wantHW:     map[Key]uint64{{Store: "orders", Name: "k"}: 5},
		},
		{
			name: "worker bits must fit every held worker",
			steps: []snowStep{
				{op: declare("a", "L3", 3)},
				{op: acquire("n0", "i", 1, 0), want: worker(0)},
				{op: acquire("n1", "i", 1, 0), want: worker(1)},
				{op: acquire("n2", "i", 1, 0), want: worker(2)},
				{op: declare("b", "L1", 1), want: conflict, errText: `node "n2" holds worker 2, and 1 worker bits allow ids below 2`},
				{op: declare("b", "L2", 2)},
			},
			wantStores: map[string]SnowflakeStore{"a": {Layout: "L3", WorkerBits: 3}, "b": {Layout: "L2", WorkerBits: 2}},
			wantWorkers: []Worker{
				{ID: 0, NodeID: "n0", Incarnation: "i"}, {ID: 1, NodeID: "n1", Incarnation: "i"}, {ID: 2, NodeID: "n2", Incarnation: "i"},
			},
		},
		{
			// A released worker above the new limit is never handed out
			// again, so it does not stand in the way.
			name: "released workers do not limit the worker bits",
			steps: []snowStep{
				{op: declare("a", "L3", 3)},
				{op: acquire("n0", "i", 1, 0), want: worker(0)},
				{op: acquire("n1", "i", 1, 0), want: worker(1)},
				{op: acquire("n2", "i", 1, 0), want: worker(2)},
				{op: acquire("n3", "i", 1, 0), want: worker(3)},
				{op: declare("b", "L1", 1), want: conflict, errText: `node "n3" holds worker 3`},
				{op: release("n3", 10, 5)},
				{op: declare("b", "L1", 1), want: conflict, errText: `node "n2" holds worker 2`},
				{op: release("n2", 10, 5)},
				{op: declare("b", "L1", 1)},
				// Workers 2 and 3 are free but above the limit now.
				{op: acquire("n4", "i", 20, 0), want: Result{Err: ErrNoWorker}, errText: "all 2 worker ids are taken at unix ms 20, 2 held and 0 released but not free yet; none is released"},
			},
			wantStores: map[string]SnowflakeStore{"a": {Layout: "L3", WorkerBits: 3}, "b": {Layout: "L1", WorkerBits: 1}},
			wantWorkers: []Worker{
				{ID: 0, NodeID: "n0", Incarnation: "i"}, {ID: 1, NodeID: "n1", Incarnation: "i"},
				{ID: 2, NodeID: "n2", Incarnation: "i", FreeAt: 15}, {ID: 3, NodeID: "n3", Incarnation: "i", FreeAt: 15},
			},
		},
	})
}

func TestAcquireWorker(t *testing.T) {
	noWorker := Result{Err: ErrNoWorker}
	sf := declare("sf", "L", 2) // worker ids 0..3
	sf1 := declare("sf", "L", 1)
	stores2 := map[string]SnowflakeStore{"sf": {Layout: "L", WorkerBits: 2}}
	stores1 := map[string]SnowflakeStore{"sf": {Layout: "L", WorkerBits: 1}}
	runSnowCases(t, []snowCase{
		{
			name:   "no snowflake store is declared",
			steps:  []snowStep{{op: acquire("n1", "a", 100, 10), want: noWorker, errText: `acquire worker for node "n1": no worker id available: no snowflake store is declared`}},
			wantOf: map[string]int64{"n1/a": -1},
		},
		{
			name: "the same node and incarnation keep their worker",
			steps: []snowStep{
				{op: sf},
				{op: acquire("n1", "a", 100, 10), want: worker(0)},
				{op: acquire("n1", "a", 200, 10), want: worker(0)},
				{op: acquire("n2", "a", 300, 10), want: worker(1)},
				{op: acquire("n1", "a", 400, 10), want: worker(0)},
			},
			wantStores:  stores2,
			wantWorkers: []Worker{{ID: 0, NodeID: "n1", Incarnation: "a"}, {ID: 1, NodeID: "n2", Incarnation: "a"}},
			wantOf:      map[string]int64{"n1/a": 0, "n2/a": 1, "n1/b": -1, "n3/a": -1},
		},
		{
			name: "a new incarnation releases the old worker and gets another",
			steps: []snowStep{
				{op: sf},
				{op: acquire("n1", "a", 100, 10), want: worker(0)},
				{op: acquire("n1", "b", 200, 50), want: worker(1)},
			},
			wantStores:  stores2,
			wantWorkers: []Worker{{ID: 0, NodeID: "n1", Incarnation: "a", FreeAt: 250}, {ID: 1, NodeID: "n1", Incarnation: "b"}},
			wantOf:      map[string]int64{"n1/a": -1, "n1/b": 1},
		},
		{
			name: "the lowest free id",
			steps: []snowStep{
				{op: sf},
				{op: acquire("n0", "i", 100, 0), want: worker(0)},
				{op: acquire("n1", "i", 100, 0), want: worker(1)},
				{op: acquire("n2", "i", 100, 0), want: worker(2)},
				{op: release("n1", 100, 10)},
				{op: release("n0", 100, 20)},
				{op: acquire("n3", "i", 105, 0), want: worker(3)}, // 0 and 1 are not free yet
				{op: acquire("n4", "i", 120, 0), want: worker(0)}, // both are: the lower
				{op: acquire("n5", "i", 120, 0), want: worker(1)},
			},
			wantStores: stores2,
			wantWorkers: []Worker{
				{ID: 0, NodeID: "n4", Incarnation: "i"}, {ID: 1, NodeID: "n5", Incarnation: "i"},
				{ID: 2, NodeID: "n2", Incarnation: "i"}, {ID: 3, NodeID: "n3", Incarnation: "i"},
			},
			wantOf: map[string]int64{"n0/i": -1, "n1/i": -1, "n4/i": 0},
		},
		{
			name: "released is not reused before FreeAt and is at FreeAt",
			steps: []snowStep{
				{op: sf1},
				{op: acquire("n1", "i", 100, 0), want: worker(0)},
				{op: acquire("n2", "i", 100, 0), want: worker(1)},
				{op: release("n1", 100, 50)},
				{op: acquire("n3", "i", 149, 0), want: noWorker, errText: "all 2 worker ids are taken at unix ms 149, 1 held and 1 released but not free yet; the first of them frees at unix ms 150"},
				{op: acquire("n3", "i", 150, 0), want: worker(0)},
			},
			wantStores:  stores1,
			wantWorkers: []Worker{{ID: 0, NodeID: "n3", Incarnation: "i"}, {ID: 1, NodeID: "n2", Incarnation: "i"}},
		},
		{
			name: "FreeAt counts from the reserved time when it is ahead of the clock",
			steps: []snowStep{
				{op: sf1},
				{op: acquire("n1", "i", 1000, 0), want: worker(0)},
				{op: acquire("n2", "i", 1000, 0), want: worker(1)},
				{op: reserve(SnowflakeTimeStore, "0", 1, 5000), want: granted(1, 5000)},
				{op: floor(SnowflakeTimeStore, "1", 900), want: Result{HighWater: 900}},
				{op: release("n1", 1000, 100)}, // reserved 5000 > 1000: free at 5100
				{op: release("n2", 1000, 100)}, // reserved 900 < 1000: free at 1100
				{op: acquire("n3", "i", 1100, 0), want: worker(1)},
				{op: acquire("n4", "i", 5099, 0), want: noWorker, errText: "the first of them frees at unix ms 5100"},
				{op: acquire("n4", "i", 5100, 0), want: worker(0)},
			},
			wantStores:  stores1,
			wantWorkers: []Worker{{ID: 0, NodeID: "n4", Incarnation: "i"}, {ID: 1, NodeID: "n3", Incarnation: "i"}},
			wantHW:      map[Key]uint64{timeKey(0): 5000, timeKey(1): 900},
		},
		{
			name: "exhaustion",
			steps: []snowStep{
				{op: sf1},
				{op: acquire("n1", "i", 1, 0), want: worker(0)},
				{op: acquire("n2", "i", 1, 0), want: worker(1)},
				{op: acquire("n3", "i", 1, 0), want: noWorker, errText: "all 2 worker ids are taken at unix ms 1, 2 held and 0 released but not free yet; none is released"},
			},
			wantStores:  stores1,
			wantWorkers: []Worker{{ID: 0, NodeID: "n1", Incarnation: "i"}, {ID: 1, NodeID: "n2", Incarnation: "i"}},
			wantOf:      map[string]int64{"n3/i": -1},
		},
		{
			// The old incarnation is gone whether or not a worker is free,
			// and a retry once its worker frees must find it.
			name: "a new incarnation releases the old worker even when none is free",
			steps: []snowStep{
				{op: sf1},
				{op: acquire("n1", "a", 100, 0), want: worker(0)},
				{op: acquire("n2", "a", 100, 0), want: worker(1)},
				{op: acquire("n1", "b", 100, 10), want: noWorker, errText: "1 held and 1 released but not free yet; the first of them frees at unix ms 110"},
				{op: acquire("n1", "b", 110, 10), want: worker(0)},
			},
			wantStores:  stores1,
			wantWorkers: []Worker{{ID: 0, NodeID: "n1", Incarnation: "b"}, {ID: 1, NodeID: "n2", Incarnation: "a"}},
			wantOf:      map[string]int64{"n1/a": -1, "n1/b": 0},
		},
		{
			// A released worker stays released for its own node too: the
			// incarnation may have stamped IDs up to its reserved time.
			name: "a released worker is not handed back early to the same incarnation",
			steps: []snowStep{
				{op: sf},
				{op: acquire("n1", "a", 100, 0), want: worker(0)},
				{op: release("n1", 100, 10)},
				{op: acquire("n1", "a", 105, 0), want: worker(1)},
			},
			wantStores:  stores2,
			wantWorkers: []Worker{{ID: 0, NodeID: "n1", Incarnation: "a", FreeAt: 110}, {ID: 1, NodeID: "n1", Incarnation: "a"}},
			wantOf:      map[string]int64{"n1/a": 1},
		},
		{
			name: "the fewest worker bits of any store set the limit",
			steps: []snowStep{
				{op: declare("big", "L", 20)},
				{op: declare("small", "L", 1)},
				{op: acquire("n1", "i", 1, 0), want: worker(0)},
				{op: acquire("n2", "i", 1, 0), want: worker(1)},
				{op: acquire("n3", "i", 1, 0), want: noWorker, errText: "all 2 worker ids are taken"},
			},
			wantStores:  map[string]SnowflakeStore{"big": {Layout: "L", WorkerBits: 20}, "small": {Layout: "L", WorkerBits: 1}},
			wantWorkers: []Worker{{ID: 0, NodeID: "n1", Incarnation: "i"}, {ID: 1, NodeID: "n2", Incarnation: "i"}},
		},
		{
			name: "the largest times do not wrap",
			steps: []snowStep{
				{op: sf1},
				{op: acquire("n1", "a", MaxID, MaxID), want: worker(0)},
				{op: floor(SnowflakeTimeStore, "0", MaxID), want: Result{HighWater: MaxID}},
				{op: acquire("n1", "b", MaxID, MaxID), want: worker(1)},
				{op: acquire("n2", "a", MaxID, 0), want: noWorker, errText: "frees at unix ms 18446744073709551614"},
			},
			wantStores:  stores1,
			wantWorkers: []Worker{{ID: 0, NodeID: "n1", Incarnation: "a", FreeAt: 2 * MaxID}, {ID: 1, NodeID: "n1", Incarnation: "b"}},
		},
	})
}

func TestReleaseWorker(t *testing.T) {
	stores := map[string]SnowflakeStore{"sf": {Layout: "L", WorkerBits: 4}}
	runSnowCases(t, []snowCase{
		{
			name:       "an unknown node is a no-op",
			steps:      []snowStep{{op: declare("sf", "L", 4)}, {op: release("n1", 100, 10)}},
			wantStores: stores,
		},
		{
			name:  "before any declaration it is a no-op",
			steps: []snowStep{{op: release("n1", 100, 10)}},
		},
		{
			name: "releases the worker of any incarnation, once",
			steps: []snowStep{
				{op: declare("sf", "L", 4)},
				{op: acquire("n1", "a", 100, 0), want: worker(0)},
				{op: acquire("n2", "a", 100, 0), want: worker(1)},
				{op: release("n1", 200, 30)},
				{op: release("n1", 300, 30)}, // already released: FreeAt stays
			},
			wantStores:  stores,
			wantWorkers: []Worker{{ID: 0, NodeID: "n1", Incarnation: "a", FreeAt: 230}, {ID: 1, NodeID: "n2", Incarnation: "a"}},
			wantOf:      map[string]int64{"n1/a": -1, "n2/a": 1},
		},
		{
			name: "FreeAt is never 0",
			steps: []snowStep{
				{op: declare("sf", "L", 4)},
				{op: acquire("n1", "a", 0, 0), want: worker(0)},
				{op: release("n1", 0, 0)},
				{op: acquire("n2", "a", 0, 0), want: worker(1)},
				{op: acquire("n3", "a", 1, 0), want: worker(0)},
			},
			wantStores:  stores,
			wantWorkers: []Worker{{ID: 0, NodeID: "n3", Incarnation: "a"}, {ID: 1, NodeID: "n2", Incarnation: "a"}},
		},
		{
			name: "a released node acquires anew",
			steps: []snowStep{
				{op: declare("sf", "L", 4)},
				{op: acquire("n1", "a", 100, 0), want: worker(0)},
				{op: release("n1", 100, 0)},
				{op: acquire("n1", "a", 100, 0), want: worker(0)},
			},
			wantStores:  stores,
			wantWorkers: []Worker{{ID: 0, NodeID: "n1", Incarnation: "a"}},
			wantOf:      map[string]int64{"n1/a": 0},
		},
	})
}

func TestReserveInSnowflakeStore(t *testing.T) {
	refused := func(hw uint64) Result { return Result{HighWater: hw, Err: ErrSnowflakeStore} }
	runSnowCases(t, []snowCase{
		{
			name: "reserve is refused and floor allowed in a declared store",
			steps: []snowStep{
				{op: declare("sf", "L", 4)},
				{op: reserve("sf", "k", 1, 10), want: refused(0), errText: "reserve 1 ids of sf/k: the store hands out snowflake ids, not counter ranges"},
				{op: floor("sf", "k", 1000), want: Result{HighWater: 1000}},
				{op: reserve("sf", "k", 1, 10), want: refused(1000)},
				{op: floor("sf", "k", 999), want: Result{HighWater: 1000}},
			},
			wantStores: map[string]SnowflakeStore{"sf": {Layout: "L", WorkerBits: 4}},
			wantHW:     map[Key]uint64{{Store: "sf", Name: "k"}: 1000},
		},
		{
			name: "other stores and the time store reserve as before",
			steps: []snowStep{
				{op: declare("sf", "L", 4)},
				{op: reserve("sf2", "k", 1, 10), want: granted(1, 10)},
				{op: reserve(SnowflakeTimeStore, "0", 1, 10), want: granted(1, 10)},
				{op: reserve(SnowflakeTimeStore, "0", 5, 5), want: granted(11, 15)},
				{op: reserve("", "k", 1, 1), want: granted(1, 1)},
			},
			wantStores: map[string]SnowflakeStore{"sf": {Layout: "L", WorkerBits: 4}},
			wantHW:     map[Key]uint64{{Store: "sf2", Name: "k"}: 10, timeKey(0): 15, {Store: "sf", Name: "k"}: 0},
		},
	})
}

// TestSnowflakeOpsInOneEntry checks that the ops of one entry apply in
// order, each seeing what the ones before it did.
func TestSnowflakeOpsInOneEntry(t *testing.T) {
	f := New(nil)
	resp := applyLog(t, f, 1, Command{Ops: []Op{
		acquire("n1", "a", 1, 0),
		declare("sf", "L", 1),
		reserve("sf", "k", 1, 1),
		acquire("n1", "a", 1, 0),
		acquire("n2", "a", 1, 0),
		acquire("n3", "a", 1, 0),
		release("n1", 10, 10),
		acquire("n3", "a", 20, 0),
		declare("sf", "other", 1),
	}})
	checkResults(t, 0, resp.Results, []Result{
		{Err: ErrNoWorker}, {}, {Err: ErrSnowflakeStore}, worker(0), worker(1), {Err: ErrNoWorker}, {}, worker(0), {Err: ErrSnowflakeConflict},
	})
	if f.Len() != 0 {
		t.Errorf("Len = %d, want 0", f.Len())
	}
}

// TestApplyCommandValidatesSnowflakeOps checks that invalid Snowflake ops
// change nothing when handed in without Raft.
func TestApplyCommandValidatesSnowflakeOps(t *testing.T) {
	f := New(nil)
	resp := f.ApplyCommand(Command{Ops: []Op{
		declare(SnowflakeTimeStore, "L", 4),
		declare("sf", "", 4),
		declare("sf", "L", 0),
		declare("sf", "L", 32),
		declare("sf", "L", 4),
		acquire("n1", "", 1, 1),
		acquire("", "a", 1, 1),
		acquire("n1", "a", MaxID+1, 1),
		release("n1", 1, MaxID+1),
		acquire("n1", "a", 1, 1),
	}})
	for i, r := range resp.Results {
		switch i {
		case 4:
			checkResults(t, 0, []Result{r}, []Result{{}})
		case 9:
			checkResults(t, 0, []Result{r}, []Result{worker(0)})
		default:
			if !errors.Is(r.Err, ErrMalformed) {
				t.Errorf("result %d = %+v, want ErrMalformed", i, r)
			}
		}
	}
	if got := f.SnowflakeStores(); len(got) != 1 {
		t.Errorf("SnowflakeStores = %v, want sf only", got)
	}
}

func TestSnowflakeAccessorsReturnCopies(t *testing.T) {
	f := New(nil)
	f.ApplyCommand(Command{Ops: []Op{declare("sf", "L", 4), acquire("n1", "a", 1, 0)}})
	s := f.SnowflakeStores()
	s["sf"] = SnowflakeStore{Layout: "changed", WorkerBits: 1}
	s["new"] = SnowflakeStore{}
	w := f.Workers()
	w[0].NodeID = "changed"
	if got := f.SnowflakeStores(); !maps.Equal(got, map[string]SnowflakeStore{"sf": {Layout: "L", WorkerBits: 4}}) {
		t.Errorf("SnowflakeStores = %v after mutating a returned copy", got)
	}
	if got := f.Workers(); got[0].NodeID != "n1" {
		t.Errorf("Workers = %+v after mutating a returned copy", got)
	}
}

// TestApplyCommandCopiesSnowflakeStrings checks that the worker table and
// the declarations keep no strings that alias the caller's memory.
func TestApplyCommandCopiesSnowflakeStrings(t *testing.T) {
	buf := []byte("sf-L-n1-a")
	f := New(nil)
	f.ApplyCommand(Command{Ops: []Op{
		declare(unsafeString(buf[0:2]), unsafeString(buf[3:4]), 4),
		acquire(unsafeString(buf[5:7]), unsafeString(buf[8:9]), 1, 0),
	}})
	copy(buf, "XXXXXXXXX")
	if got := f.SnowflakeStores(); !maps.Equal(got, map[string]SnowflakeStore{"sf": {Layout: "L", WorkerBits: 4}}) {
		t.Errorf("SnowflakeStores = %v after mutating the caller's buffer", got)
	}
	if w, ok := f.WorkerOf("n1", "a"); !ok || w != 0 {
		t.Errorf("WorkerOf(n1, a) = %d, %v after mutating the caller's buffer", w, ok)
	}
}

// TestSnowflakeHook checks that the hook hears of every successful
// declaration from the log and of every declared store after Restore.
func TestSnowflakeHook(t *testing.T) {
	type decl struct {
		store string
		s     SnowflakeStore
	}
	var got []decl
	hook := func(store string, s SnowflakeStore) { got = append(got, decl{store, s}) }
	f := New(nil)
	f.SetSnowflakeHook(hook)
	applyLog(t, f, 1, Command{Ops: []Op{
		reserve("counters", "k", 1, 1),
		declare("b", "Lb", 10),
		declare("b", "Lb", 10),       // repeated: reported again
		declare("b", "other", 10),    // conflict: not reported
		declare("counters", "L", 10), // conflict: not reported
		declare("a", "La", 12),
		floor("a", "k", 5),
	}})
	lb, la, lc := SnowflakeStore{Layout: "Lb", WorkerBits: 10}, SnowflakeStore{Layout: "La", WorkerBits: 12}, SnowflakeStore{Layout: "Lc", WorkerBits: 3}
	want := []decl{{"b", lb}, {"b", lb}, {"a", la}}
	if !slices.Equal(got, want) {
		t.Fatalf("hook saw %v, want %v", got, want)
	}

	// ApplyCommand does not go through the log, like the floor hook.
	got = nil
	f.ApplyCommand(Command{Ops: []Op{declare("c", "Lc", 3)}})
	if len(got) != 0 {
		t.Errorf("hook saw %v from ApplyCommand", got)
	}

	dst := New(nil)
	dst.SetSnowflakeHook(hook)
	if err := restoreBytes(dst, snapshotBytes(t, f)); err != nil {
		t.Fatal(err)
	}
	want = []decl{{"a", la}, {"b", lb}, {"c", lc}}
	if !slices.Equal(got, want) {
		t.Errorf("hook saw %v after Restore, want %v (sorted by store)", got, want)
	}

	// A restore of a state without declarations reports nothing.
	got = nil
	if err := restoreBytes(dst, snapshotBytes(t, populated(t))); err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("hook saw %v after restoring a state without snowflake stores", got)
	}
}

// TestSnowflakeDeterministic applies the same Snowflake entries to two
// FSMs and checks that results and snapshots are identical.
func TestSnowflakeDeterministic(t *testing.T) {
	var cmds []Command
	cmds = append(cmds, Command{Ops: []Op{declare("sf", "L", 3)}})
	for i := range 60 {
		node := "n" + strconv.Itoa(i%11)
		ops := []Op{acquire(node, strconv.Itoa(i%3), uint64(i*10), 25)}
		if i%4 == 0 {
			ops = append(ops, release("n"+strconv.Itoa(i%7), uint64(i*10), 15))
		}
		ops = append(ops, reserve(SnowflakeTimeStore, strconv.Itoa(i%8), 1, uint64(i+1)))
		cmds = append(cmds, Command{Ops: ops})
	}
	a, b := New(nil), New(nil)
	for i, c := range cmds {
		// Errors built alike are deeply equal: same text, same sentinel.
		if ra, rb := applyLog(t, a, uint64(i+1), c), applyLog(t, b, uint64(i+1), c); !reflect.DeepEqual(ra, rb) {
			t.Errorf("step %d: results differ:\n%+v\n%+v", i, ra.Results, rb.Results)
		}
	}
	if sa, sb := snapshotBytes(t, a), snapshotBytes(t, b); string(sa) != string(sb) {
		t.Errorf("snapshots of identically built FSMs differ")
	}
}

// TestApplySnowflakeLogEntries applies Snowflake ops from encoded Raft log
// entries, next to the other kinds, and checks the responses and hooks.
func TestApplySnowflakeLogEntries(t *testing.T) {
	f := New(nil)
	var floors []uint64
	f.SetFloorHook(func(_ Key, v uint64) { floors = append(floors, v) })
	entries := []Command{
		{Ops: []Op{{Kind: OpInit, ClusterID: "c"}, {Kind: OpSetNode, NodeID: "n1", Addr: "a1"}, declare("events", "L", 10)}},
		{Ops: []Op{acquire("n1", "inc", 1000, 500), reserve(SnowflakeTimeStore, "0", 1, 2000)}},
		{Ops: []Op{floor("events", "k", 7), {Kind: OpRemoveNode, NodeID: "n1"}, release("n1", 1500, 500)}},
	}
	want := [][]Result{
		{{ClusterID: "c"}, {}, {}},
		{worker(0), granted(1, 2000)},
		{{HighWater: 7}, {}, {}},
	}
	for i, c := range entries {
		out := f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(10 + i), Term: 2, Data: c.Encode()})
		resp, ok := out.(*ApplyResponse)
		if !ok {
			t.Fatalf("Apply(entry %d) = %v", i, out)
		}
		checkResults(t, i, resp.Results, want[i])
	}
	if got, want := f.Workers(), []Worker{{ID: 0, NodeID: "n1", Incarnation: "inc", FreeAt: 2500}}; !slices.Equal(got, want) {
		t.Errorf("Workers = %+v, want %+v", got, want)
	}
	if !slices.Equal(floors, []uint64{7}) {
		t.Errorf("floor hook saw %v, want [7]", floors)
	}
	if f.AppliedIndex() != 12 || f.Len() != 2 {
		t.Errorf("AppliedIndex %d Len %d, want 12 and 2", f.AppliedIndex(), f.Len())
	}
}

// populatedSnowflake returns populated's FSM with Snowflake stores and a
// worker table of held and released workers added through entries 4..6.
func populatedSnowflake(t testing.TB) *FSM {
	f := populated(t)
	applyLog(t, f, 4, Command{Ops: []Op{
		declare("sf-b", "layout b", 10),
		declare("sf-a", strings.Repeat("l", MaxLayoutLen), MaxWorkerBits),
		declare("sf-c", "layout c", 12),
	}})
	applyLog(t, f, 5, Command{Ops: []Op{
		acquire("n2", "i2", 1000, 100),
		acquire("n1", "i1", 1000, 100),
		acquire(strings.Repeat("n", MaxNodeFieldLen), strings.Repeat("i", MaxNodeFieldLen), 1000, 100),
		reserve(SnowflakeTimeStore, "1", 1, 1<<41),
	}})
	applyLog(t, f, 6, Command{Ops: []Op{
		acquire("n1", "i1b", 2000, 100),
		release("n2", 3000, MaxID),
		floor("sf-a", "k", 9),
	}})
	return f
}

func TestSnowflakeSnapshotRoundTrip(t *testing.T) {
	src := populatedSnowflake(t)
	b := snapshotBytes(t, src)
	if b[len(snapshotMagic)] != snapshotVersion {
		t.Fatalf("snapshot version %d, want %d", b[len(snapshotMagic)], snapshotVersion)
	}
	dst := New(nil)
	applyLog(t, dst, 99, Command{Ops: []Op{declare("stale", "L", 2), acquire("stale", "i", 1, 1)}})
	if err := restoreBytes(dst, b); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if want, got := dumpOf(src), dumpOf(dst); !equalDump(want, got) {
		t.Errorf("restored state differs:\nwant %+v\ngot  %+v", want, got)
	}
	if again := snapshotBytes(t, dst); string(again) != string(b) {
		t.Errorf("snapshot of the restored FSM differs from the original snapshot")
	}
	// The restored FSM goes on as the original does.
	next := Command{Ops: []Op{acquire("n3", "i3", 4000, 0), acquire("n1", "i1b", 4000, 0), reserve("sf-b", "k", 1, 1)}}
	if ra, rb := applyLog(t, src, 7, next), applyLog(t, dst, 7, next); !reflect.DeepEqual(ra, rb) {
		t.Errorf("after restore: %+v, original: %+v", rb, ra)
	}
	// Restoring a state without Snowflake stores drops them.
	if err := restoreBytes(dst, snapshotBytes(t, populated(t))); err != nil {
		t.Fatal(err)
	}
	if len(dst.SnowflakeStores()) != 0 || len(dst.Workers()) != 0 {
		t.Errorf("after restoring a version 1 snapshot: stores %v workers %v", dst.SnowflakeStores(), dst.Workers())
	}
	if _, ok := dst.WorkerOf("n1", "i1b"); ok {
		t.Errorf("WorkerOf still answers after restoring a state without workers")
	}
}

// TestSnapshotVersionFollowsState checks that a state without Snowflake
// stores is written as version 1, so nodes that read only version 1 keep
// working until a Snowflake store is declared, and any other as version 2.
func TestSnapshotVersionFollowsState(t *testing.T) {
	tests := []struct {
		name string
		ops  []Op
		want byte
	}{
		{"empty", nil, 1},
		{"counters, nodes and time keys", []Op{reserve("s", "k", 1, 1), {Kind: OpSetNode, NodeID: "n", Addr: "a"}, reserve(SnowflakeTimeStore, "0", 1, 1)}, 1},
		{"refused declaration", []Op{reserve("s", "k", 1, 1), declare("s", "L", 4), acquire("n", "i", 1, 1)}, 1},
		{"declaration", []Op{declare("s", "L", 4)}, 2},
		{"declaration and workers", []Op{declare("s", "L", 4), acquire("n", "i", 1, 1)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(nil)
			applyLog(t, f, 1, Command{Ops: tt.ops})
			if got := snapshotBytes(t, f)[len(snapshotMagic)]; got != tt.want {
				t.Errorf("snapshot version %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSnapshotLayoutV2(t *testing.T) {
	f := New(nil)
	applyLog(t, f, 5, Command{Ops: []Op{
		declare("sb", "Lb", 3),
		declare("sa", "La", 31),
		acquire("n2", "i", 100, 7),
		acquire("n1", "i", 100, 7),
		acquire("n1", "j", 200, 7),
	}})
	// Workers 0 (n2), 1 (n1/i, released at 207) and 2 (n1/j).
	want := withCRC(snapBody(snapshotMagic + "\x02").u(5).s("").u(0).u(0).
		u(2).s("sa").s("La").u(31).s("sb").s("Lb").u(3).
		u(3).u(0).s("n2").s("i").u(0).u(1).s("n1").s("i").u(207).u(2).s("n1").s("j").u(0))
	if got := snapshotBytes(t, f); string(got) != string(want) {
		t.Errorf("snapshot = %q\nwant       %q", got, want)
	}
}

func TestRestoreRejectsSnowflakeCorruption(t *testing.T) {
	src := populatedSnowflake(t)
	// v2 is the start of a version 2 snapshot without counters or nodes,
	// up to its Snowflake stores.
	v2 := func() snapBody { return snapBody(snapshotMagic + "\x02").u(1).s("").u(0).u(0) }
	one := func() snapBody { return v2().u(1).s("s").s("L").u(2) } // one store, limit 4
	tests := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"no snowflake store", withCRC(v2().u(0).u(0)), "version 2 snapshot declares no snowflake store (that state is written as version 1)"},
		{"workers without a snowflake store", withCRC(v2().u(0).u(1).u(0).s("n").s("i").u(0)), "declares no snowflake store"},
		{"stores out of order", withCRC(v2().u(2).s("b").s("L").u(2).s("a").s("L").u(2).u(0)), `snowflake store "a" is not after "b"`},
		{"duplicate store", withCRC(v2().u(2).s("a").s("L").u(2).s("a").s("L").u(2).u(0)), `snowflake store "a" is not after "a"`},
		{"reserved store name", withCRC(v2().u(1).s(SnowflakeTimeStore).s("L").u(2).u(0)), `store name "_ordinal.snowflake" starts with "_ordinal"`},
		{"oversize store name", withCRC(v2().u(1).s(strings.Repeat("s", MaxStoreLen+1)).s("L").u(2).u(0)), "snowflake store name is 257 bytes"},
		{"empty layout", withCRC(v2().u(1).s("s").s("").u(2).u(0)), `snowflake store "s": layout is empty`},
		{"oversize layout", withCRC(v2().u(1).s("s").s(strings.Repeat("l", MaxLayoutLen+1)).u(2).u(0)), "layout is 129 bytes, limit is 128"},
		{"zero worker bits", withCRC(v2().u(1).s("s").s("L").u(0).u(0)), `snowflake store "s": worker bits 0 outside 1..31`},
		{"too many worker bits", withCRC(v2().u(1).s("s").s("L").u(32).u(0)), "worker bits 32 outside 1..31"},
		{"huge worker bits", withCRC(v2().u(1).s("s").s("L").u(1 << 40).u(0)), "worker bits 1099511627776 outside 1..31"},
		{"missing worker count", []byte(one()), "worker count: truncated"},
		{"workers out of order", withCRC(one().u(2).u(1).s("a").s("i").u(5).u(0).s("b").s("i").u(5)), "worker 0 is not after 1"},
		{"duplicate worker", withCRC(one().u(2).u(1).s("a").s("i").u(5).u(1).s("b").s("i").u(5)), "worker 1 is not after 1"},
		{"worker id too large", withCRC(one().u(1).u(1 << 31).s("a").s("i").u(5)), "worker 2147483648 is not below 1<<31"},
		{"empty worker node id", withCRC(one().u(1).u(0).s("").s("i").u(0)), "worker 0 has an empty node id or incarnation"},
		{"empty incarnation", withCRC(one().u(1).u(0).s("n").s("").u(0)), "worker 0 has an empty node id or incarnation"},
		{"oversize worker node id", withCRC(one().u(1).u(0).s(strings.Repeat("n", MaxNodeFieldLen+1)).s("i").u(0)), "worker node id is 1025 bytes"},
		{"held worker above the limit", withCRC(one().u(1).u(4).s("n").s("i").u(0)), "held worker 4 is not below the limit 4"},
		{"node holds two workers", withCRC(one().u(2).u(0).s("n").s("i").u(0).u(1).s("n").s("j").u(0)), `node "n" holds workers 0 and 1`},
		{"worker count too high", []byte(one().u(3).u(0).s("n").s("i").u(0)), "truncated"},
		{"trailing worker", append(withCRC(one().u(0)), 0), "trailing data after checksum"},
	}
	// The crafted cases' bases restore.
	for _, base := range []snapBody{one().u(0), one().u(2).u(1).s("a").s("i").u(5).u(3).s("a").s("j").u(0).raw()} {
		if err := restoreBytes(New(nil), withCRC(base)); err != nil {
			t.Fatalf("a base of the crafted cases does not restore: %v", err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRestoreFails(t, src, tt.data, tt.reason)
		})
	}
}

// TestRestoreRejectsEveryFlipAndTruncationV2 damages a version 2 snapshot
// at every byte and checks that each damaged copy is refused.
func TestRestoreRejectsEveryFlipAndTruncationV2(t *testing.T) {
	src := New(nil)
	applyLog(t, src, 1, Command{Ops: []Op{
		reserve("s", "k", 1, 1), declare("a", "L", 4), declare("b", "M", 5),
		acquire("n1", "i", 10, 10), acquire("n2", "i", 10, 10), release("n1", 20, 20),
	}})
	good := snapshotBytes(t, src)
	for i := range good {
		bad := append([]byte(nil), good...)
		bad[i] ^= 0xff
		checkRestoreFails(t, src, bad, "")
	}
	for n := range len(good) {
		checkRestoreFails(t, src, good[:n], "")
	}
}
