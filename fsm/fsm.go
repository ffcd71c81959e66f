// Package fsm is ordinal's replicated state machine. It implements
// raft.FSM over a tiny state: one high-water mark per key (the largest ID
// ever granted for it), the cluster's node address book and the cluster ID.
// Nodes reserve ranges of IDs through Raft with OpReserve and hand them out
// from memory, so the log grows with reservations, not with IDs.
//
// For Snowflake stores (package snowflake) it also records which stores are
// declared Snowflake stores, with their layouts (OpDeclareSnowflake), and
// a worker table: which node, in which incarnation of its data directory,
// holds which worker ID, and when a released worker ID becomes free
// (OpAcquireWorker, OpReleaseWorker). A worker's reserved time is a counter
// key in SnowflakeTimeStore, so a worker ID never passes to another node
// before every time its holder may have stamped has gone by.
//
// The package also defines the compact binary encoding of the commands that
// Raft log entries carry (Command, Encode, Decode) and the snapshot format.
// See DESIGN.md for the reasoning behind both.
package fsm

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Result is the outcome of one Op, at the same index as the op in its
// Command.
type Result struct {
	// First and Last bound the IDs granted by an OpReserve, inclusive;
	// Last-First+1 is between Need and Want. Both are 0 if nothing was
	// granted.
	First, Last uint64
	// HighWater is the key's high-water mark after an OpReserve or OpFloor.
	HighWater uint64
	// ClusterID is the cluster ID in force after an OpInit.
	ClusterID string
	// Worker is the worker ID an OpAcquireWorker gave (or found held).
	Worker uint64
	// Err is ErrOverflow for an OpReserve that cannot get Need IDs below
	// MaxID, and wraps ErrSnowflakeStore for an OpReserve in a Snowflake
	// store (state unchanged either way). It wraps ErrSnowflakeConflict
	// for a refused OpDeclareSnowflake and ErrNoWorker for an
	// OpAcquireWorker that got no worker. ApplyCommand also reports an
	// error wrapping ErrMalformed here for an op that fails Validate;
	// Apply never does, because Decode rejects such commands whole.
	// Otherwise Err is nil.
	Err error
}

// ApplyResponse is what Apply returns for a well-formed command: one Result
// per Op, in order.
type ApplyResponse struct {
	Results []Result
}

// ErrFailed is wrapped by every error of an FSM that stopped because a log
// entry or snapshot could not be applied (see FailedError). A stopped FSM
// never applies anything again: the node must be rebuilt from its peers.
var ErrFailed = errors.New("state machine stopped")

// FailedError says why an FSM stopped: which log entry it could not apply,
// or that a snapshot could not be restored, and why. It wraps both
// ErrFailed and the cause, so errors.Is finds either (ErrChecksum for a
// damaged entry, ErrMalformed for any undecodable one).
type FailedError struct {
	// Index and Term identify the log entry that could not be applied.
	// Both are 0 when Snapshot is set.
	Index, Term uint64
	// Snapshot is set when a snapshot could not be restored.
	Snapshot bool
	// Err is the cause: the decode error of the entry, or the error
	// Restore met reading the snapshot.
	Err error
}

// Error names the entry or snapshot and the cause.
func (e *FailedError) Error() string {
	if e.Snapshot {
		return fmt.Sprintf("%v: a snapshot could not be restored: %v", ErrFailed, e.Err)
	}
	return fmt.Sprintf("%v: the log entry at index %d (term %d) could not be applied: %v", ErrFailed, e.Index, e.Term, e.Err)
}

// Unwrap returns ErrFailed and the cause.
func (e *FailedError) Unwrap() []error { return []error{ErrFailed, e.Err} }

// FSM is the replicated state machine. Apply, Snapshot and Restore are
// called by Raft from its single FSM goroutine; the read accessors
// (HighWater, Nodes, ClusterID, Len, AppliedIndex, SnowflakeStores,
// WorkerOf, Workers, Err) are safe to call from any goroutine at any time.
//
// An FSM never skips what it cannot apply. A log entry that does not decode
// (a damaged or unknown encoding), or a snapshot that does not restore,
// stops it for good: Err reports which and why, Failed is closed, and every
// later Apply, Snapshot and Restore fails without changing anything. The
// state it holds is then incomplete and must not be used to hand out IDs;
// see DESIGN.md, "Never skip".
type FSM struct {
	logger hclog.Logger

	// failed is set once, by the first entry or snapshot that cannot be
	// applied; failedCh is closed then. It is atomic so the check on
	// every Apply costs one load.
	failed   atomic.Pointer[FailedError]
	failedCh chan struct{}

	mu sync.RWMutex
	// stores maps store name -> key name -> high-water mark. A key is
	// present only once its mark is above zero, so an absent key and a key
	// at zero are the same state and snapshots stay canonical. A store's
	// keyMap is a Go map with plain uint64 values, the cheapest layout Go
	// offers for millions of short keys, split in shards once large (see
	// DESIGN.md, "Memory per key", and keymap.go).
	stores    map[string]*keyMap
	keys      int // total keys across stores, kept so Len is O(1)
	nodes     map[string]string
	clusterID string
	applied   uint64
	onFloor   func(Key, uint64)
	onReserve func(k Key, ids uint64, at time.Time)

	// snowflakes holds the declared Snowflake stores, workers the worker
	// table by ID, and held each node's held worker: at most one, since
	// acquiring releases what a node holds in another incarnation
	// (snowflake.go).
	snowflakes  map[string]SnowflakeStore
	workers     map[uint64]Worker
	held        map[string]uint64
	onSnowflake func(store string, s SnowflakeStore)

	// order holds each store's key names and storeOrder the store names,
	// sorted, so that Keys lists a page without sorting; names holds the
	// bytes of every key name in large chunks, so that millions of keys
	// are not millions of heap objects for the garbage collector to mark
	// (keys.go).
	order      map[string]*sortedNames
	storeOrder sortedNames
	names      nameArena
}

var _ raft.FSM = (*FSM)(nil)

// New returns an empty FSM that logs through logger. A nil logger discards
// log output.
func New(logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &FSM{
		logger:     logger,
		failedCh:   make(chan struct{}),
		stores:     make(map[string]*keyMap),
		nodes:      make(map[string]string),
		snowflakes: make(map[string]SnowflakeStore),
		workers:    make(map[uint64]Worker),
		held:       make(map[string]uint64),
	}
}

// Err returns nil while the FSM applies entries, and a *FailedError (which
// wraps ErrFailed) once it has stopped.
func (f *FSM) Err() error {
	if e := f.failed.Load(); e != nil {
		return e
	}
	return nil
}

// Failed returns a channel that is closed when the FSM stops; Err then
// says why. The node watches it to shut Raft down.
func (f *FSM) Failed() <-chan struct{} { return f.failedCh }

// fail stops the FSM with e, unless it already stopped, and returns the
// error it stopped with.
func (f *FSM) fail(e *FailedError) *FailedError {
	if !f.failed.CompareAndSwap(nil, e) {
		return f.failed.Load()
	}
	close(f.failedCh)
	if e.Snapshot {
		f.logger.Error("stopping: a snapshot could not be restored; this node's state is incomplete and it must not serve", "error", e.Err)
	} else {
		f.logger.Error("stopping: a log entry could not be applied; this node's state is incomplete and it must not serve",
			"index", e.Index, "term", e.Term, "error", e.Err)
	}
	return e
}

// Apply applies one committed Raft log entry. For a raft.LogCommand it
// decodes the payload, applies every op and returns an *ApplyResponse;
// other log types return nil. Either way the entry's index becomes
// AppliedIndex.
//
// A payload that does not decode, or whose checksum does not match, is
// never skipped: skipping a reservation would leave this replica's
// high-water mark too low, and once it led it would hand the same IDs out
// again. Instead the FSM stops (see Err and Failed) and Apply returns an
// error wrapping ErrFailed and the decode error (ErrMalformed, ErrChecksum).
// Once stopped, every Apply returns such an error and changes nothing,
// AppliedIndex included.
func (f *FSM) Apply(l *raft.Log) interface{} {
	if e := f.failed.Load(); e != nil {
		return fmt.Errorf("fsm: apply log index %d: %w", l.Index, e)
	}
	if l.Type != raft.LogCommand {
		f.setApplied(l.Index)
		return nil
	}
	cmd, err := decode(l.Data)
	if err != nil {
		e := f.fail(&FailedError{Index: l.Index, Term: l.Term, Err: err})
		return fmt.Errorf("fsm: apply log index %d: %w", l.Index, e)
	}
	resp := f.apply(cmd, l.Index)
	f.notifyFloors(cmd)
	f.notifyReserves(cmd, resp, l.AppendedAt)
	f.notifySnowflakes(cmd, resp)
	return resp
}

// SetFloorHook registers fn to be called, outside the FSM's lock, for every
// OpFloor applied from the Raft log. Every node's allocator uses it to drop
// IDs below a floor from the ranges it holds, including nodes that did not
// take the SetFloor call. Register it before Raft starts; fn must not block.
func (f *FSM) SetFloorHook(fn func(k Key, floor uint64)) {
	f.mu.Lock()
	f.onFloor = fn
	f.mu.Unlock()
}

func (f *FSM) notifyFloors(cmd Command) {
	f.mu.RLock()
	fn := f.onFloor
	f.mu.RUnlock()
	if fn == nil {
		return
	}
	for _, op := range cmd.Ops {
		if op.Kind == OpFloor {
			fn(op.Key, op.Value)
		}
	}
}

// SetReserveHook registers fn to be called, outside the FSM's lock, for
// every OpReserve applied from the Raft log that granted IDs: ids is how
// many, at the time the leader appended the entry (raft.Log.AppendedAt;
// zero for entries written before raft recorded it). The FSM reads no
// clock: at is part of the entry, so replaying the log reports the
// reservations at the times they were made. Nodes use it to measure each
// key's reservation rate for backups. Register it before Raft starts; fn
// must not block.
func (f *FSM) SetReserveHook(fn func(k Key, ids uint64, at time.Time)) {
	f.mu.Lock()
	f.onReserve = fn
	f.mu.Unlock()
}

func (f *FSM) notifyReserves(cmd Command, resp *ApplyResponse, at time.Time) {
	f.mu.RLock()
	fn := f.onReserve
	f.mu.RUnlock()
	if fn == nil {
		return
	}
	for i, op := range cmd.Ops {
		if r := resp.Results[i]; op.Kind == OpReserve && r.Last != 0 {
			fn(op.Key, r.Last-r.First+1, at)
		}
	}
}

// ApplyCommand applies c directly, without Raft, for tests and tools. It
// does not change AppliedIndex. Ops that fail Validate get an error wrapping
// ErrMalformed in their Result and change nothing; the other ops still
// apply. Strings in c are copied, so callers may pass slices of buffers they
// reuse.
func (f *FSM) ApplyCommand(c Command) *ApplyResponse {
	return f.apply(c.clone(), 0)
}

// apply runs every op of c under the write lock. index is the Raft log
// index to record, or 0 to leave AppliedIndex alone.
func (f *FSM) apply(c Command, index uint64) *ApplyResponse {
	resp := &ApplyResponse{Results: make([]Result, len(c.Ops))}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, op := range c.Ops {
		resp.Results[i] = f.applyOp(op)
	}
	if index != 0 {
		f.applied = index
	}
	return resp
}

// setApplied records index as applied without changing any other state.
func (f *FSM) setApplied(index uint64) {
	f.mu.Lock()
	f.applied = index
	f.mu.Unlock()
}

// applyOp applies one op. The caller holds the write lock. The op is
// re-validated even on the Decode path, because ApplyCommand callers can
// hand in anything and the check costs a few comparisons.
func (f *FSM) applyOp(op Op) Result {
	if err := op.validate(); err != nil {
		return Result{Err: fmt.Errorf("fsm: apply %s: %w: %w", op.Kind, ErrMalformed, err)}
	}
	switch op.Kind {
	case OpReserve:
		return f.reserve(op.Key, op.Need, op.Want)
	case OpFloor:
		return f.floor(op.Key, op.Value)
	case OpSetNode:
		f.nodes[op.NodeID] = op.Addr
	case OpRemoveNode:
		delete(f.nodes, op.NodeID)
	case OpInit:
		if f.clusterID == "" {
			f.clusterID = op.ClusterID
		}
		return Result{ClusterID: f.clusterID}
	case OpDeclareSnowflake:
		return f.declareSnowflake(op.Key.Store, SnowflakeStore{Layout: op.Layout, WorkerBits: uint8(op.Value)})
	case OpAcquireWorker:
		return f.acquireWorker(op.NodeID, op.Incarnation, op.At, op.Hold)
	case OpReleaseWorker:
		f.releaseWorkers(op.NodeID, op.At, op.Hold)
	}
	return Result{}
}

// reserve grants between need and want IDs directly above k's high-water
// mark. It grants as many as fit below MaxID, up to want, and refuses
// outright (ErrOverflow, no state change) if fewer than need fit, so callers
// never receive a range smaller than they said they can use. A key of a
// Snowflake store is refused (ErrSnowflakeStore, no state change).
func (f *FSM) reserve(k Key, need, want uint64) Result {
	hw := f.stores[k.Store].get(k.Name)
	if _, ok := f.snowflakes[k.Store]; ok {
		return Result{HighWater: hw, Err: fmt.Errorf("fsm: reserve %d ids of %s/%s: %w", need, k.Store, k.Name, ErrSnowflakeStore)}
	}
	avail := MaxID - hw // hw <= MaxID is an invariant, so this cannot wrap.
	if avail < need {
		f.logger.Warn("reservation would pass the maximum id", "store", k.Store, "key", k.Name, "high_water", hw, "need", need)
		return Result{HighWater: hw, Err: ErrOverflow}
	}
	last := hw + min(want, avail)
	f.set(k, last)
	return Result{First: hw + 1, Last: last, HighWater: last}
}

// floor raises k's high-water mark to value if it is lower. It never lowers
// a mark: IDs already granted must stay unique.
func (f *FSM) floor(k Key, value uint64) Result {
	hw := f.stores[k.Store].get(k.Name)
	if value <= hw {
		return Result{HighWater: hw}
	}
	f.set(k, value)
	return Result{HighWater: value}
}

// set stores a non-zero high-water mark for k, creating its store and
// counting and indexing the key if they are new. The caller holds the
// write lock.
func (f *FSM) set(k Key, hw uint64) {
	m := f.stores[k.Store]
	if m == nil {
		m = newKeyMap(0)
		f.stores[k.Store] = m
	}
	if name, created := m.set(k.Name, hw, f.names.copy); created {
		f.created(Key{Store: k.Store, Name: name})
	}
}

// HighWater returns k's high-water mark: the largest ID granted for k or the
// floor set for it, whichever is higher. It is 0 for an unknown key.
func (f *FSM) HighWater(k Key) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.stores[k.Store].get(k.Name)
}

// Nodes returns a copy of the node metadata, node ID -> gRPC address. The
// caller may modify it freely.
func (f *FSM) Nodes() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.nodes)
}

// NodeAddr returns the address recorded for nodeID, or "" if none is. It
// spares hot paths the copy Nodes makes.
func (f *FSM) NodeAddr(nodeID string) string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.nodes[nodeID]
}

// ClusterID returns the cluster ID set by the first OpInit, or "" if the
// cluster has not been initialised.
func (f *FSM) ClusterID() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.clusterID
}

// Len returns the number of keys with a non-zero high-water mark, across
// all stores.
func (f *FSM) Len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.keys
}

// AppliedIndex returns the index of the last Raft log entry passed to
// Apply. After Restore it is the AppliedIndex recorded when the snapshot was
// taken: raft.FSM.Restore does not receive the snapshot's metadata, so the
// FSM carries the index inside the snapshot itself. This may trail Raft's
// own applied index, because Raft does not pass no-op and configuration
// entries to a non-batching FSM. ApplyCommand does not change it.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// Snapshot captures the current state for Raft. Raft calls it on the FSM
// goroutine, so Apply cannot run meanwhile; it copies the state into flat
// slices under the read lock (readers are not blocked) and leaves sorting
// and I/O to Persist, which runs concurrently with later Applies.
//
// A stopped FSM refuses: its state lacks the entry it could not apply, and
// a snapshot of it would let Raft compact that entry away, so that the
// node would restart from the incomplete state with nothing left to show
// that it is incomplete.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if e := f.failed.Load(); e != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", e)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.capture(), nil
}

// Restore replaces all state with the snapshot read from rc. The snapshot is
// parsed and its checksum verified in full before anything is replaced, so
// on any error (wrapping ErrMalformed for corrupt data, and ErrChecksum too
// for a checksum mismatch) the previous state stays in place. A snapshot
// that does not restore stops the FSM as an undecodable log entry does:
// Raft only ever restores snapshots it has stored on this node's disk, so
// a failure means the node's data is damaged. A stopped FSM refuses to
// restore. Once the new state is in place, the Snowflake hook (see
// SetSnowflakeHook) hears of every store it declares. Following the
// raft.FSM contract, the caller closes rc.
func (f *FSM) Restore(rc io.ReadCloser) error {
	if e := f.failed.Load(); e != nil {
		return fmt.Errorf("fsm: restore snapshot: %w", e)
	}
	st, err := readSnapshot(rc)
	if err != nil {
		e := f.fail(&FailedError{Snapshot: true, Err: err})
		return fmt.Errorf("fsm: restore snapshot: %w", e)
	}
	f.mu.Lock()
	f.stores, f.keys, f.nodes, f.clusterID, f.applied = st.stores, st.keys, st.nodes, st.clusterID, st.applied
	f.order, f.storeOrder, f.names = st.order, st.storeOrder, st.names
	f.snowflakes, f.workers, f.held = st.snowflakes, st.workers, st.held
	f.mu.Unlock()
	f.logger.Info("restored snapshot", "keys", st.keys, "nodes", len(st.nodes), "applied_index", st.applied,
		"snowflake_stores", len(st.snowflakes), "workers", len(st.workers))
	f.notifyRestoredSnowflakes()
	return nil
}
