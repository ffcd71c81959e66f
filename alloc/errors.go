package alloc

import (
	"errors"
	"fmt"
)

var (
	// ErrNotLeader is returned by a Backend's Confirm or Reserve, and so by
	// STRONG calls, when this node cannot prove it leads. The caller should
	// forward the call to the leader or retry.
	ErrNotLeader = errors.New("alloc: this node is not the leader")

	// ErrUnavailable is wrapped by errors that mean the store cannot serve
	// the call right now (no leader, no quorum, shutting down). The call may
	// succeed if retried later.
	ErrUnavailable = errors.New("alloc: store unavailable")

	// ErrFloorPending is returned by SetFloor when its context ended after
	// the floor committed but before it was known to hold on every node
	// (see Allocator.SetFloor). The floor will hold; retry the call to
	// wait for it.
	ErrFloorPending = fmt.Errorf("alloc: floor committed, not yet held on every node: %w", ErrUnavailable)

	// ErrClosed is returned by every call after Close.
	ErrClosed = fmt.Errorf("alloc: allocator closed: %w", ErrUnavailable)
)
