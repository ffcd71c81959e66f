package fsm

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// Snowflake stores and worker IDs (see DESIGN.md, "Snowflake stores and
// workers"). The FSM records which stores hand out Snowflake IDs and
// which node holds which worker ID; package snowflake builds the IDs.
// Worker w's reserved time is the counter key {SnowflakeTimeStore, "w"},
// reserved with OpReserve like any counter, so a worker is never handed to
// another node before the time its last holder reserved has passed.

const (
	// SnowflakeTimeStore is the store whose key w (the worker ID in
	// decimal, strconv.FormatUint(w, 10)) holds worker w's reserved time
	// in unix milliseconds, reserved through OpReserve like any counter;
	// see package snowflake. A released worker is not free before that
	// time plus the hold.
	SnowflakeTimeStore = "_ordinal.snowflake"

	// ReservedStorePrefix starts the names of the stores the FSM keeps for
	// itself, such as SnowflakeTimeStore. OpDeclareSnowflake refuses
	// them.
	ReservedStorePrefix = "_ordinal"
)

var (
	// ErrSnowflakeConflict is wrapped in Result.Err when an
	// OpDeclareSnowflake contradicts the state: the store is declared with
	// another layout or worker bits, it holds counters, or a held worker
	// ID does not fit the worker bits. Nothing changed.
	ErrSnowflakeConflict = errors.New("snowflake store declaration conflicts with the replicated state")

	// ErrNoWorker is wrapped in Result.Err when an OpAcquireWorker finds
	// no worker ID to give: every ID below the limit is held or released
	// but not free yet (the message says when the first one frees), or no
	// Snowflake store is declared.
	ErrNoWorker = errors.New("no worker id available")

	// ErrSnowflakeStore is wrapped in Result.Err when an OpReserve targets
	// a key of a declared Snowflake store: such a store hands out
	// Snowflake IDs, and a node that has not learnt the declaration yet
	// must not hand out counter IDs in it. Nothing changed. OpFloor stays
	// allowed there.
	ErrSnowflakeStore = errors.New("the store hands out snowflake ids, not counter ranges")
)

// SnowflakeStore is a Snowflake store's declaration, as
// OpDeclareSnowflake records it.
type SnowflakeStore struct {
	// Layout is the store's layout in package snowflake's canonical text
	// form, 1..MaxLayoutLen bytes. The FSM compares it byte for byte and
	// never parses it.
	Layout string
	// WorkerBits is how many bits of the store's IDs hold the worker ID,
	// 1..MaxWorkerBits. The smallest over all declared stores bounds the
	// worker IDs OpAcquireWorker hands out.
	WorkerBits uint8
}

// Worker is one entry of the worker table.
type Worker struct {
	// ID is the worker ID, below 1<<MaxWorkerBits.
	ID uint64
	// NodeID and Incarnation are the node and the identity of its data
	// directory that acquired the worker last.
	NodeID, Incarnation string
	// FreeAt is 0 while the worker is held. Once released it is the unix
	// millisecond time from which OpAcquireWorker may give the worker to
	// another node: free when an op's At is at least FreeAt. It is never
	// 0 for a released worker.
	FreeAt uint64
}

// held reports whether w is held, not released.
func (w Worker) held() bool { return w.FreeAt == 0 }

// SetSnowflakeHook registers fn to be called, outside the FSM's lock, for
// every OpDeclareSnowflake applied from the Raft log that succeeds (a
// repeated identical declaration included), and after every Restore for
// each store the restored state declares, in ascending order of name.
// Every node's daemon uses it to learn the declarations, including nodes
// that did not propose them. Register it before Raft starts; fn must not
// block.
func (f *FSM) SetSnowflakeHook(fn func(store string, s SnowflakeStore)) {
	f.mu.Lock()
	f.onSnowflake = fn
	f.mu.Unlock()
}

// notifySnowflakes calls the Snowflake hook for the declarations of cmd
// that succeeded.
func (f *FSM) notifySnowflakes(cmd Command, resp *ApplyResponse) {
	f.mu.RLock()
	fn := f.onSnowflake
	f.mu.RUnlock()
	if fn == nil {
		return
	}
	for i, op := range cmd.Ops {
		if op.Kind == OpDeclareSnowflake && resp.Results[i].Err == nil {
			fn(op.Key.Store, SnowflakeStore{Layout: op.Layout, WorkerBits: uint8(op.Value)})
		}
	}
}

// notifyRestoredSnowflakes calls the Snowflake hook for every declared
// store, after Restore.
func (f *FSM) notifyRestoredSnowflakes() {
	f.mu.RLock()
	fn := f.onSnowflake
	stores := maps.Clone(f.snowflakes)
	f.mu.RUnlock()
	if fn == nil {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(stores)) {
		fn(name, stores[name])
	}
}

// SnowflakeStores returns a copy of the declared Snowflake stores, store
// name -> declaration. The caller may modify it freely.
func (f *FSM) SnowflakeStores() map[string]SnowflakeStore {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.snowflakes)
}

// WorkerOf returns the worker ID that nodeID holds in incarnation, and
// whether it holds one. Released workers do not count.
func (f *FSM) WorkerOf(nodeID, incarnation string) (uint64, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	w, ok := f.held[nodeID]
	if !ok || f.workers[w].Incarnation != incarnation {
		return 0, false
	}
	return w, true
}

// Workers returns the worker table, held and released entries, in
// ascending order of ID.
func (f *FSM) Workers() []Worker {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedWorkers(f.workers)
}

// sortedWorkers returns the entries of workers in ascending order of ID.
func sortedWorkers(workers map[uint64]Worker) []Worker {
	out := make([]Worker, 0, len(workers))
	for _, w := range workers {
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b Worker) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// declareSnowflake applies an OpDeclareSnowflake. The caller holds the
// write lock.
func (f *FSM) declareSnowflake(store string, s SnowflakeStore) Result {
	if old, ok := f.snowflakes[store]; ok {
		if old == s {
			return Result{}
		}
		return Result{Err: fmt.Errorf("fsm: declare snowflake store %q with layout %q and %d worker bits: %w: it is declared with layout %q and %d worker bits",
			store, s.Layout, s.WorkerBits, ErrSnowflakeConflict, old.Layout, old.WorkerBits)}
	}
	if n := f.stores[store].Len(); n > 0 {
		return Result{Err: fmt.Errorf("fsm: declare snowflake store %q: %w: store holds counters (%d keys); a snowflake store needs a new name",
			store, ErrSnowflakeConflict, n)}
	}
	limit := uint64(1) << s.WorkerBits
	if w, ok := f.highestHeld(); ok && w >= limit {
		return Result{Err: fmt.Errorf("fsm: declare snowflake store %q with %d worker bits: %w: node %q holds worker %d, and %d worker bits allow ids below %d",
			store, s.WorkerBits, ErrSnowflakeConflict, f.workers[w].NodeID, w, s.WorkerBits, limit)}
	}
	f.snowflakes[store] = s
	return Result{}
}

// highestHeld returns the highest held worker ID, if any worker is held.
func (f *FSM) highestHeld() (uint64, bool) {
	var top uint64
	for _, w := range f.held {
		top = max(top, w)
	}
	return top, len(f.held) > 0
}

// workerLimit returns the bound of the worker IDs OpAcquireWorker gives:
// 1 << the fewest worker bits of any declared store, or 0 if none is.
func (f *FSM) workerLimit() uint64 {
	if len(f.snowflakes) == 0 {
		return 0
	}
	bits := uint8(MaxWorkerBits)
	for _, s := range f.snowflakes {
		bits = min(bits, s.WorkerBits)
	}
	return uint64(1) << bits
}

// acquireWorker applies an OpAcquireWorker. The caller holds the write
// lock.
//
// A worker nodeID holds in another incarnation is released even when no
// worker is free: that incarnation is gone (its data directory was
// wiped), and a retry once the first released worker frees must find it.
func (f *FSM) acquireWorker(nodeID, incarnation string, at, hold uint64) Result {
	limit := f.workerLimit()
	if limit == 0 {
		return Result{Err: fmt.Errorf("fsm: acquire worker for node %q: %w: no snowflake store is declared", nodeID, ErrNoWorker)}
	}
	if w, ok := f.held[nodeID]; ok {
		if f.workers[w].Incarnation == incarnation {
			return Result{Worker: w}
		}
		f.releaseWorkers(nodeID, at, hold)
	}
	// The lowest ID without an entry or with a free one. IDs with an
	// entry are at most len(f.workers), so the loop ends after that many
	// more steps.
	for w := uint64(0); w < limit; w++ {
		e, ok := f.workers[w]
		if ok && (e.held() || e.FreeAt > at) {
			continue
		}
		f.workers[w] = Worker{ID: w, NodeID: nodeID, Incarnation: incarnation}
		f.held[nodeID] = w
		return Result{Worker: w}
	}
	// Every ID below the limit is taken.
	held, released, first := 0, 0, uint64(0)
	for _, e := range f.workers {
		switch {
		case e.ID >= limit:
		case e.held():
			held++
		default:
			if released == 0 || e.FreeAt < first {
				first = e.FreeAt
			}
			released++
		}
	}
	when := "none is released"
	if released > 0 {
		when = fmt.Sprintf("the first of them frees at unix ms %d", first)
	}
	return Result{Err: fmt.Errorf("fsm: acquire worker for node %q: %w: all %d worker ids are taken at unix ms %d, %d held and %d released but not free yet; %s",
		nodeID, ErrNoWorker, limit, at, held, released, when)}
}

// releaseWorkers releases the worker nodeID holds, if any: it becomes
// free at max(at, its reserved time) + hold, and never at 0, which marks
// a held worker. The operands are at most MaxID each, so the sum cannot
// wrap. The caller holds the write lock.
func (f *FSM) releaseWorkers(nodeID string, at, hold uint64) {
	w, ok := f.held[nodeID]
	if !ok {
		return
	}
	e := f.workers[w]
	e.FreeAt = max(max(at, f.timeHighWater(w))+hold, 1)
	f.workers[w] = e
	delete(f.held, nodeID)
}

// timeHighWater returns worker w's reserved time: the high-water mark of
// its key in SnowflakeTimeStore.
func (f *FSM) timeHighWater(w uint64) uint64 {
	return f.stores[SnowflakeTimeStore].get(strconv.FormatUint(w, 10))
}
