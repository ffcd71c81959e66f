package client

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// retryPolicy says how often and how patiently a call is retried.
type retryPolicy struct {
	attempts int           // tries in all; 0: no limit but the time
	backoff  time.Duration // the first wait; it doubles up to maxRetryBackoff
	window   time.Duration // how long a call without a deadline keeps retrying
}

// maxRetryBackoff caps the wait between two rounds of attempts: after a
// leader failover a call should not sleep long past the election.
const maxRetryBackoff = 500 * time.Millisecond

// invoke runs rpc on the nodes of the Client's router until it succeeds
// or fails with a code other than Unavailable, for as long as p allows.
// After a node fails with Unavailable the next attempt goes at once to a
// node not tried yet; once every node was tried, invoke waits (the
// backoff) and starts another round. A retired node's Canceled counts as
// Unavailable. prefer is a node to choose among equally good ones.
//
// The error is the last attempt's, with its code and details, or, when
// that attempt ended with the caller's context, the last Unavailable one;
// when a node failed with Unavailable, the message names ordinal and the
// addresses tried. It returns the node that answered, if any.
func invoke[T any](ctx context.Context, r *router, p retryPolicy, rt route, prefer *node, rpc func(context.Context, *node) (T, error)) (T, *node, error) {
	var (
		resp        T
		err         error
		tried       []*node    // this round
		failed      []endpoint // every node that failed with Unavailable, in order
		unavailable error      // the last Unavailable error
		deadline    time.Time
		wait        = p.backoff
	)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	} else if p.window > 0 {
		deadline = time.Now().Add(p.window)
	}
	for attempt := 1; ; attempt++ {
		var n *node
		n, err = r.pick(ctx, rt, tried, prefer)
		if n == nil && err == nil {
			// Every node was tried this round (only after a failure).
			tried = tried[:0]
			continue
		}
		if err == nil {
			resp, err = rpc(ctx, n)
			if err == nil {
				return resp, n, nil
			}
			if n.retired.Load() && status.Code(err) == codes.Canceled && ctx.Err() == nil {
				err = status.Errorf(codes.Unavailable, "the node left the address list: %v", status.Convert(err).Message())
			}
			if status.Code(err) != codes.Unavailable {
				if unavailable != nil && ctx.Err() != nil {
					// The caller's time ran out on a retry: why it
					// was retrying says more than its context does.
					err = unavailable
				}
				return resp, n, r.wrap(err, failed)
			}
			unavailable = err
			tried = append(tried, n)
			if !slices.Contains(failed, n.ep) {
				failed = append(failed, n.ep)
			}
		} else if status.Code(err) != codes.Unavailable {
			return resp, nil, err // the Client is closed
		}
		if p.attempts > 0 && attempt >= p.attempts {
			return resp, nil, r.wrap(err, failed)
		}
		if n != nil && r.untried(tried) {
			continue
		}
		// A round is over: every node failed. Look the names up again
		// (they may have moved), then wait.
		r.refresh()
		tried = tried[:0]
		if !sleep(ctx, deadline, jitter(wait)) {
			return resp, nil, r.wrap(err, failed)
		}
		wait = min(wait*2, maxRetryBackoff)
	}
}

// untried reports whether a node not in tried is left to try.
func (r *router) untried(tried []*node) bool {
	p := r.nodes.Load()
	if p == nil {
		return false
	}
	for _, n := range *p {
		if !containsNode(tried, n) {
			return true
		}
	}
	return false
}

// wrap returns err, the last error of a call, naming ordinal and the
// nodes that failed with Unavailable, when any did: "ordinal: no node
// could serve the call (tried a:1, b:2): <err's message>". The code and
// details stay err's. A Client from NewFromConn returns err unchanged.
func (r *router) wrap(err error, failed []endpoint) error {
	if err == nil || len(failed) == 0 || !r.named {
		return err
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
	default:
		return err
	}
	tried := make([]string, len(failed))
	for i, e := range failed {
		tried[i] = e.String()
	}
	pb := st.Proto()
	pb.Message = "ordinal: no node could serve the call (tried " + strings.Join(tried, ", ") + "): " + pb.GetMessage()
	return status.ErrorProto(pb)
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
// returns false at once when deadline (if set) comes before d has passed:
// there would be no time left for another try.
func sleep(ctx context.Context, deadline time.Time, d time.Duration) bool {
	if !deadline.IsZero() && time.Until(deadline) <= d {
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
