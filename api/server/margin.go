package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// withMargin returns ctx with its deadline moved earlier by deadlineMargin,
// so that a call that cannot complete answers Unavailable while the caller
// still listens.
//
// Most calls finish long before any deadline and never wait on the
// context, so the returned context arms no timer until something asks for
// its Done channel: a timer per call was the largest item of its own on
// the WEAK path's CPU profile.
func withMargin(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return ctx, func() {}
	}
	margin := min(time.Until(deadline)*deadlineMargin/100, maxDeadlineMargin)
	m := &marginCtx{Context: ctx, deadline: deadline.Add(-margin)}
	return m, m.cancel
}

// marginCtx is a context whose deadline is earlier than its parent's and
// whose timer starts on the first call to Done.
type marginCtx struct {
	context.Context // the parent, until Done is asked for
	deadline        time.Time

	mu     sync.Mutex
	inner  atomic.Pointer[deadlineCtx] // set by the first call to Done
	closed bool                        // cancel was called; guarded by mu
}

type deadlineCtx struct {
	context.Context // the parent with the earlier deadline
	stop            context.CancelFunc
}

// Deadline implements context.Context.
func (m *marginCtx) Deadline() (time.Time, bool) { return m.deadline, true }

// Done implements context.Context; the first call arms the timer.
func (m *marginCtx) Done() <-chan struct{} {
	return m.materialize().Done()
}

// Err implements context.Context. Before Done was asked for it is derived
// from the parent and the clock, which is what Done's channel would show.
func (m *marginCtx) Err() error {
	if inner := m.inner.Load(); inner != nil {
		return inner.Err()
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return context.Canceled
	}
	if err := m.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(m.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value implements context.Context. Once the timer is armed, values come
// from the inner context: the context package then finds the inner
// context's cancellation through it, and derived contexts hook onto it
// directly instead of each starting a goroutine to watch Done.
func (m *marginCtx) Value(key any) any {
	if inner := m.inner.Load(); inner != nil {
		return inner.Value(key)
	}
	return m.Context.Value(key)
}

func (m *marginCtx) materialize() *deadlineCtx {
	if inner := m.inner.Load(); inner != nil {
		return inner
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if inner := m.inner.Load(); inner != nil {
		return inner
	}
	ctx, stop := context.WithDeadline(m.Context, m.deadline)
	inner := &deadlineCtx{Context: ctx, stop: stop}
	if m.closed {
		stop()
	}
	m.inner.Store(inner)
	return inner
}

func (m *marginCtx) cancel() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if inner := m.inner.Load(); inner != nil {
		inner.stop()
	}
}
