// Package keyspace names ordinal's counters and bounds their IDs: the few
// facts every layer agrees on (the state machine, the allocator, the stores
// and the API), in a package that depends on nothing, so that none of them
// links another's dependencies to learn them (the allocator no Raft, the
// etcd store no daemon).
package keyspace

import (
	"errors"
	"math"
)

// MaxID is the largest ID ever handed out. IDs travel as int64 on the
// wire, so the unsigned high-water mark is capped at math.MaxInt64.
const MaxID uint64 = math.MaxInt64

const (
	// MaxStoreLen is the longest store name, in bytes.
	MaxStoreLen = 256
	// MaxKeyLen is the longest key name, in bytes.
	MaxKeyLen = 1024
)

// ErrOverflow is returned when a reservation cannot get the IDs it needs
// without passing MaxID. Nothing was reserved and the key's high-water mark
// is unchanged.
var ErrOverflow = errors.New("reservation would pass the maximum id")

// Key names one counter. Store is a namespace; stores keep it exactly as
// given (callers normalise an empty store to "default").
type Key struct {
	Store string
	Name  string
}
