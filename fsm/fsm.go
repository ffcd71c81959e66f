// Package fsm is ordinal's replicated state machine. It implements
// raft.FSM over a tiny state: one high-water mark per key (the largest ID
// ever granted for it), the cluster's node address book and the cluster ID.
// Nodes reserve ranges of IDs through Raft with OpReserve and hand them out
// from memory, so the log grows with reservations, not with IDs.
//
// The package also defines the compact binary encoding of the commands that
// Raft log entries carry (Command, Encode, Decode) and the snapshot format.
// See DESIGN.md for the reasoning behind both.
package fsm

import (
	"fmt"
	"io"
	"maps"
	"sync"

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
	// Err is ErrOverflow for an OpReserve that cannot get Need IDs below
	// MaxID (state unchanged). ApplyCommand also reports an error wrapping
	// ErrMalformed here for an op that fails Validate; Apply never does,
	// because Decode rejects such commands whole. Otherwise Err is nil.
	Err error
}

// ApplyResponse is what Apply returns for a well-formed command: one Result
// per Op, in order.
type ApplyResponse struct {
	Results []Result
}

// FSM is the replicated state machine. Apply, Snapshot and Restore are
// called by Raft from its single FSM goroutine; the read accessors
// (HighWater, Nodes, ClusterID, Len, AppliedIndex) are safe to call from any
// goroutine at any time.
type FSM struct {
	logger hclog.Logger

	mu sync.RWMutex
	// stores maps store name -> key name -> high-water mark. A key is
	// present only once its mark is above zero, so an absent key and a key
	// at zero are the same state and snapshots stay canonical. The nested
	// map with plain uint64 values is the cheapest layout Go offers for
	// millions of short keys (see DESIGN.md, "Memory per key").
	stores    map[string]map[string]uint64
	keys      int // total keys across stores, kept so Len is O(1)
	nodes     map[string]string
	clusterID string
	applied   uint64
	onFloor   func(Key, uint64)
}

var _ raft.FSM = (*FSM)(nil)

// New returns an empty FSM that logs through logger. A nil logger discards
// log output.
func New(logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &FSM{
		logger: logger,
		stores: make(map[string]map[string]uint64),
		nodes:  make(map[string]string),
	}
}

// Apply applies one committed Raft log entry. For a raft.LogCommand it
// decodes the payload, applies every op and returns an *ApplyResponse. A
// payload that does not decode changes no state, is logged at Error level
// and returns an error wrapping ErrMalformed: every replica rejects the same
// bytes the same way, so rejecting is deterministic. Other log types return
// nil. In every case the entry's index becomes AppliedIndex.
func (f *FSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		f.setApplied(l.Index)
		return nil
	}
	cmd, err := decode(l.Data)
	if err != nil {
		f.setApplied(l.Index)
		f.logger.Error("rejecting malformed command", "index", l.Index, "term", l.Term, "error", err)
		return fmt.Errorf("fsm: apply log index %d: %w", l.Index, err)
	}
	resp := f.apply(cmd, l.Index)
	f.notifyFloors(cmd)
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
	}
	return Result{}
}

// reserve grants between need and want IDs directly above k's high-water
// mark. It grants as many as fit below MaxID, up to want, and refuses
// outright (ErrOverflow, no state change) if fewer than need fit, so callers
// never receive a range smaller than they said they can use.
func (f *FSM) reserve(k Key, need, want uint64) Result {
	hw := f.stores[k.Store][k.Name]
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
	hw := f.stores[k.Store][k.Name]
	if value <= hw {
		return Result{HighWater: hw}
	}
	f.set(k, value)
	return Result{HighWater: value}
}

// set stores a non-zero high-water mark for k, creating its store and
// counting the key if they are new. The caller holds the write lock.
func (f *FSM) set(k Key, hw uint64) {
	m := f.stores[k.Store]
	if m == nil {
		m = make(map[string]uint64)
		f.stores[k.Store] = m
	}
	before := len(m)
	m[k.Name] = hw
	f.keys += len(m) - before
}

// HighWater returns k's high-water mark: the largest ID granted for k or the
// floor set for it, whichever is higher. It is 0 for an unknown key.
func (f *FSM) HighWater(k Key) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.stores[k.Store][k.Name]
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
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.capture(), nil
}

// Restore replaces all state with the snapshot read from rc. The snapshot is
// parsed and its checksum verified in full before anything is replaced, so
// on any error (wrapping ErrMalformed for corrupt data) the previous state
// stays in place. Following the raft.FSM contract, the caller closes rc.
func (f *FSM) Restore(rc io.ReadCloser) error {
	st, err := readSnapshot(rc)
	if err != nil {
		f.logger.Error("failed to restore snapshot", "error", err)
		return fmt.Errorf("fsm: restore snapshot: %w", err)
	}
	f.mu.Lock()
	f.stores, f.keys, f.nodes, f.clusterID, f.applied = st.stores, st.keys, st.nodes, st.clusterID, st.applied
	f.mu.Unlock()
	f.logger.Info("restored snapshot", "keys", st.keys, "nodes", len(st.nodes), "applied_index", st.applied)
	return nil
}
