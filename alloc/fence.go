package alloc

import (
	"context"
	"sync"
	"time"
)

// fenceGroup coalesces leadership proofs. Every caller needs a proof whose
// round trip started after the caller arrived; callers that arrive while a
// round is in flight share the next round, so under load one quorum round
// trip fences a whole batch of calls and the cost per call shrinks as the
// load grows.
type fenceGroup struct {
	confirm func(context.Context) (Epoch, error)
	timeout time.Duration

	mu      sync.Mutex
	waiting *fenceRound // the round that starts when the current one ends
	running bool        // a round is in flight
}

type fenceRound struct {
	done  chan struct{}
	epoch Epoch
	err   error
}

func newFenceGroup(confirm func(context.Context) (Epoch, error), timeout time.Duration) *fenceGroup {
	return &fenceGroup{confirm: confirm, timeout: timeout}
}

// wait returns the epoch proven by a round that started after wait was
// called.
func (g *fenceGroup) wait(ctx context.Context) (Epoch, error) {
	g.mu.Lock()
	if !g.running {
		// Idle: run a round of our own inline, sparing a goroutine hand-off
		// on the latency-critical single-caller path.
		g.running = true
		g.mu.Unlock()
		r := &fenceRound{done: make(chan struct{})}
		g.runRound(ctx, r)
		g.handOff()
		return r.epoch, r.err
	}
	r := g.waiting
	if r == nil {
		r = &fenceRound{done: make(chan struct{})}
		g.waiting = r
	}
	g.mu.Unlock()
	select {
	case <-r.done:
		return r.epoch, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// handOff is called when a round ends: it starts the next round in the
// background if callers queued up meanwhile, or marks the group idle.
func (g *fenceGroup) handOff() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting == nil {
		g.running = false
		return
	}
	go g.drain()
}

// drain runs queued rounds until none is waiting.
func (g *fenceGroup) drain() {
	for {
		g.mu.Lock()
		r := g.waiting
		if r == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.waiting = nil
		g.mu.Unlock()
		g.runRound(context.Background(), r)
	}
}

func (g *fenceGroup) runRound(parent context.Context, r *fenceRound) {
	ctx, cancel := context.WithTimeout(parent, g.timeout)
	r.epoch, r.err = g.confirm(ctx)
	cancel()
	close(r.done)
}
