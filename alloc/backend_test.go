package alloc

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ordinal-dev/ordinal/fsm"
)

// memBackend is a Backend over the real state machine without Raft, so the
// allocator's own logic (prefetch, sizing, fencing, floors) can be driven
// deterministically. Multi-node behaviour is tested over real Raft in the
// cluster and daemon packages.
type memBackend struct {
	mu       sync.Mutex
	fsm      *fsm.FSM
	epoch    Epoch
	leader   bool
	started  int      // Reserve calls entered, counted before reserveGate
	wants    []uint64 // want of every Reserve, in order
	confirms int
	// confirmGate, when set, is received from by each Confirm before it
	// answers, so a test can hold a leadership proof in flight.
	confirmGate chan struct{}
	// reserveGate, when set, is received from by each Reserve.
	reserveGate chan struct{}
	reserveErr  error
}

func newMemBackend() *memBackend {
	return &memBackend{fsm: fsm.New(nil), epoch: 1, leader: true}
}

func (b *memBackend) Reserve(ctx context.Context, key fsm.Key, want, need uint64) (Range, Epoch, error) {
	b.mu.Lock()
	b.started++
	gate := b.reserveGate
	// The range is tagged with the tenure it was asked for in, as a Raft
	// log entry keeps the term it was appended in however long it waits
	// (here: at the gate) to be applied.
	epoch := Epoch(0)
	if b.leader {
		epoch = b.epoch
	}
	b.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Range{}, 0, ctx.Err()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.wants = append(b.wants, want)
	if b.reserveErr != nil {
		return Range{}, 0, b.reserveErr
	}
	res := b.fsm.ApplyCommand(fsm.Command{Ops: []fsm.Op{{Kind: fsm.OpReserve, Key: key, Want: want, Need: need}}})
	r := res.Results[0]
	if r.Err != nil {
		return Range{}, 0, fmt.Errorf("reserve: %w", r.Err)
	}
	return Range{First: r.First, Last: r.Last}, epoch, nil
}

func (b *memBackend) Confirm(ctx context.Context) (Epoch, error) {
	b.mu.Lock()
	b.confirms++
	gate := b.confirmGate
	b.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.leader {
		return 0, ErrNotLeader
	}
	return b.epoch, nil
}

func (b *memBackend) Floor(_ context.Context, key fsm.Key, value uint64) (uint64, error) {
	res := b.fsm.ApplyCommand(fsm.Command{Ops: []fsm.Op{{Kind: fsm.OpFloor, Key: key, Value: value}}})
	return res.Results[0].HighWater, nil
}

func (b *memBackend) HighWater(_ context.Context, key fsm.Key) (uint64, error) {
	return b.fsm.HighWater(key), nil
}

// setLeader changes leadership: a new tenure gets a new epoch.
func (b *memBackend) setLeader(leader bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if leader && !b.leader {
		b.epoch++
	}
	b.leader = leader
}

func (b *memBackend) reserveCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.wants)
}

func (b *memBackend) reservesStarted() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.started
}

func (b *memBackend) confirmCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.confirms
}

// HoldFloor implements FloorHolder: the memBackend is the only node, and
// the allocator applied the floor itself.
func (b *memBackend) HoldFloor(context.Context, time.Duration) error { return nil }

// IsLeader tells the allocator whether to reserve ahead of a STRONG call's
// proof.
func (b *memBackend) IsLeader() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leader
}
