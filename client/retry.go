package client

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// retryPolicy says how often and how patiently a call is retried.
type retryPolicy struct {
	attempts int
	backoff  time.Duration
}

// call runs rpc until it succeeds, fails with a code other than
// Unavailable, runs out of attempts, or the next wait would outlive ctx. It
// returns the last error unchanged, so that the caller sees the server's
// status rather than a context error of the client's making.
func call[T any](ctx context.Context, p retryPolicy, rpc func(context.Context) (T, error)) (T, error) {
	wait := p.backoff
	for attempt := 1; ; attempt++ {
		resp, err := rpc(ctx)
		if err == nil || attempt >= p.attempts || status.Code(err) != codes.Unavailable {
			return resp, err
		}
		if !sleep(ctx, jitter(wait)) {
			return resp, err
		}
		wait *= 2
	}
}

// jitter returns a random duration between d/2 and d. Keeping half of d
// keeps the backoff growing; the random half spreads out clients that
// failed at the same moment.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits for d and reports whether the wait ended before ctx did. It
// returns false at once when ctx's deadline comes before d has passed:
// there would be no time left for another try.
func sleep(ctx context.Context, d time.Duration) bool {
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
