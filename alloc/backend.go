// Package alloc hands out IDs from ranges reserved in a durable, replicated
// store, so that no ID costs a disk write or a consensus round of its own.
//
// A Backend reserves ranges (through Raft, or through etcd) and proves
// leadership. Allocator keeps, per key, the range it is consuming and a
// prefetched one, grows or shrinks the size of what it reserves with the
// key's rate, and fences every STRONG call with a leadership proof taken
// after the call arrived. See DESIGN.md for the safety argument.
package alloc

import (
	"context"
	"time"

	"github.com/ordinal-dev/ordinal/keyspace"
)

// Epoch identifies one leadership tenure of this node (for Raft, the term).
// A STRONG range may only be served under the epoch it was reserved in, so
// a node that lost and regained leadership never serves a stale range.
type Epoch uint64

// Range is the inclusive run of IDs First..Last. A Range with First > Last
// is empty.
type Range struct {
	First, Last uint64
}

// Len returns how many IDs the range holds.
func (r Range) Len() uint64 {
	if r.First > r.Last {
		return 0
	}
	return r.Last - r.First + 1
}

// Backend is the durable store an Allocator reserves ranges from.
type Backend interface {
	// Reserve durably reserves between need and want IDs of key, all above
	// every ID reserved for it before. It returns the epoch of the
	// leadership tenure the reservation committed in, or 0 when it was not
	// committed by this node as leader (a follower forwarding it, say); only
	// ranges with a non-zero epoch may serve STRONG calls. It returns an error
	// wrapping keyspace.ErrOverflow when fewer than need IDs are left.
	Reserve(ctx context.Context, key keyspace.Key, want, need uint64) (Range, Epoch, error)

	// Confirm proves that this node leads, with a round trip to a quorum
	// that starts after Confirm was called, and returns the current epoch.
	// It returns an error wrapping ErrNotLeader when this node does not lead.
	Confirm(ctx context.Context) (Epoch, error)

	// Floor durably raises key's high-water mark to at least value and
	// returns the mark after the change.
	Floor(ctx context.Context, key keyspace.Key, value uint64) (uint64, error)

	// HighWater returns key's high-water mark. After a successful Confirm
	// it reflects every reservation that committed before Confirm was
	// called.
	HighWater(ctx context.Context, key keyspace.Key) (uint64, error)
}

// FloorHolder is implemented by backends that can tell when a floor holds
// on every node that may hold ranges, so that SetFloor need not wait for
// older WEAK ranges to expire.
type FloorHolder interface {
	// HoldFloor returns nil once every node that may hold a range of any
	// key has applied everything this node committed before the call (and
	// so every floor up to there). hold is how long after a change a node
	// may still serve from ranges it held before (FloorHold of the WEAK
	// range TTL): nodes removed, or a leadership taken, less than hold ago
	// may be unknown to this node, and HoldFloor then fails. Any error
	// means "not known": the caller waits hold out instead.
	HoldFloor(ctx context.Context, hold time.Duration) error
}

// Sequencer hands out IDs: the Allocator does, from the ranges a Backend
// reserves, and so does a store that serves every call itself (etcd's
// Layotto layout: one write per ID). The API serves from one.
type Sequencer interface {
	// Next hands out count contiguous IDs of key and returns the first.
	Next(ctx context.Context, key keyspace.Key, mode Mode, count uint64) (uint64, error)
	// HighWater returns key's high-water mark: no ID above it has been
	// handed out.
	HighWater(ctx context.Context, key keyspace.Key) (uint64, error)
	// SetFloor raises key's counter so that every later ID is above floor,
	// and returns the high-water mark after the change.
	SetFloor(ctx context.Context, key keyspace.Key, floor uint64) (uint64, error)
}

var _ Sequencer = (*Allocator)(nil)
