package alloc

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ordinal-dev/ordinal/metrics"
)

// fenceGroup coalesces leadership proofs. Every caller needs a proof whose
// round trip started after the caller arrived; callers that arrive while a
// round is in flight share the next round, so under load one quorum round
// trip fences a whole batch and the cost per call shrinks as the load grows.
//
// Waiting callers do not watch their own contexts: each round is bounded by
// the earliest deadline among its callers (and by the group's timeout), so
// every caller hears back in time without arming a timer of its own, which
// was a visible share of the leader's CPU at tens of thousands of calls a
// second. A caller whose round ran out at someone else's earlier deadline
// joins the next round.
type fenceGroup struct {
	confirm   func(context.Context) (Epoch, error)
	timeout   time.Duration
	maxRounds int // rounds in flight at once
	metrics   *metrics.Alloc

	mu       sync.Mutex
	waiting  *fenceRound // the round that starts when a round in flight ends
	inFlight int
}

type fenceRound struct {
	done chan struct{}
	// deadline is the earliest deadline among the round's callers, zero if
	// none has one; fixed once the round starts.
	deadline time.Time
	epoch    Epoch
	err      error
	callers  int // calls that joined the round, for metrics
	// cutShort says the round ran out at deadline, before the group's
	// timeout: callers with more time left should try the next round.
	cutShort bool
}

func newFenceGroup(confirm func(context.Context) (Epoch, error), timeout time.Duration, maxRounds int, m *metrics.Alloc) *fenceGroup {
	return &fenceGroup{confirm: confirm, timeout: timeout, maxRounds: max(maxRounds, 1), metrics: m}
}

// wait returns the epoch proven by a round that started after wait was
// called.
func (g *fenceGroup) wait(ctx context.Context) (Epoch, error) {
	deadline, hasDeadline := ctx.Deadline()
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if hasDeadline && !time.Now().Before(deadline) {
			return 0, context.DeadlineExceeded
		}
		r := g.join(ctx)
		<-r.done
		if r.cutShort && ctx.Err() == nil {
			continue
		}
		if r.err != nil && ctx.Err() != nil {
			// Report the caller's own deadline or cancellation, as if it
			// had been watching its context.
			return 0, ctx.Err()
		}
		return r.epoch, r.err
	}
}

// join returns the round ctx's caller takes part in. When fewer than
// maxRounds rounds are in flight the caller starts a round of its own and
// runs it inline, sparing a goroutine hand-off on the latency-critical
// lightly loaded path, and join returns it finished. Otherwise the caller
// joins the round queued to start when one in flight ends.
func (g *fenceGroup) join(ctx context.Context) *fenceRound {
	deadline, hasDeadline := ctx.Deadline()
	g.mu.Lock()
	if g.waiting == nil && g.inFlight < g.maxRounds {
		g.inFlight++
		g.mu.Unlock()
		r := &fenceRound{done: make(chan struct{}), deadline: deadline, callers: 1}
		g.runRound(r)
		g.finished()
		return r
	}
	r := g.waiting
	if r == nil {
		r = &fenceRound{done: make(chan struct{})}
		g.waiting = r
	}
	r.callers++
	if hasDeadline && (r.deadline.IsZero() || deadline.Before(r.deadline)) {
		r.deadline = deadline
	}
	g.mu.Unlock()
	return r
}

// finished is called when a round ends: its slot passes to the queued
// round, started in the background, or is freed.
func (g *fenceGroup) finished() {
	g.mu.Lock()
	r := g.waiting
	if r == nil {
		g.inFlight--
		g.mu.Unlock()
		return
	}
	g.waiting = nil
	g.mu.Unlock()
	go func() {
		g.runRound(r)
		g.finished()
	}()
}

func (g *fenceGroup) runRound(r *fenceRound) {
	limit := time.Now().Add(g.timeout)
	callerLimit := !r.deadline.IsZero() && r.deadline.Before(limit)
	if callerLimit {
		limit = r.deadline
	}
	ctx, cancel := context.WithDeadline(context.Background(), limit)
	start := time.Now()
	r.epoch, r.err = g.confirm(ctx)
	r.cutShort = callerLimit && r.err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	if g.metrics != nil {
		g.metrics.Proof(time.Since(start), r.callers, proofResult(r.err))
	}
	close(r.done)
}

// proofResult names a proof's outcome for metrics.
func proofResult(err error) string {
	switch {
	case err == nil:
		return metrics.ResultOK
	case errors.Is(err, ErrNotLeader):
		return metrics.ResultNotLeader
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return metrics.ResultUnavailable
	}
	return metrics.ResultError
}
