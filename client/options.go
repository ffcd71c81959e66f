package client

import (
	"fmt"
	"time"

	"google.golang.org/grpc"
)

const (
	// DefaultRetryAttempts is how many times a call is tried, the first
	// try included, when WithRetry is not given.
	DefaultRetryAttempts = 3

	// DefaultRetryBackoff is the wait before the first retry when WithRetry
	// is not given; it doubles before each further retry.
	DefaultRetryBackoff = 50 * time.Millisecond
)

// Option configures a Client.
type Option func(*options)

type options struct {
	dial     []grpc.DialOption
	store    string
	attempts int
	backoff  time.Duration
	stream   bool
	metadata []string // key, value pairs sent with every call
	err      error    // the first invalid option, reported by New
}

func defaultOptions() options {
	return options{attempts: DefaultRetryAttempts, backoff: DefaultRetryBackoff}
}

// WithDialOptions adds gRPC dial options, for example
// grpc.WithTransportCredentials with TLS credentials. They are applied after
// the default plain-TCP credentials, so they override them.
func WithDialOptions(o ...grpc.DialOption) Option {
	return func(opts *options) { opts.dial = append(opts.dial, o...) }
}

// WithStore sets the store the Client's own methods use. The default, "",
// means the server's default store. Use Client.Store for calls to other
// stores.
func WithStore(name string) Option {
	return func(opts *options) { opts.store = name }
}

// WithRetry sets how calls failing with codes.Unavailable are retried: up to
// attempts tries in all, the first retry after about backoff and each
// further one after twice the previous wait, with random jitter so that
// clients failed by the same event do not retry in lockstep. Retries stop
// early rather than wait past the context's deadline. attempts 1 turns
// retries off. The default is DefaultRetryAttempts and DefaultRetryBackoff.
//
// Only Unavailable is retried: the server answers it when it cannot serve
// the call now (no connection, no leader, the node is starting or stopping).
// Retrying is safe even for NextID, whose failed call may have consumed IDs:
// the server never hands an ID out twice, so a retry can only leave a gap in
// the sequence, never a duplicate.
func WithRetry(attempts int, backoff time.Duration) Option {
	return func(opts *options) {
		if attempts < 1 || backoff < 0 {
			opts.err = fmt.Errorf("%w: WithRetry(%d, %v): attempts must be at least 1 and backoff not negative",
				ErrInvalidOption, attempts, backoff)
			return
		}
		opts.attempts, opts.backoff = attempts, backoff
	}
}

// WithStreaming sends NextID and NextIDs over one bidirectional stream and
// coalesces concurrent callers of the same key and mode into one request:
// with thousands of goroutines taking IDs, a batch costs one message and one
// leadership proof on the server instead of one per caller. Each caller's
// IDs are still allocated after its call started, so STRONG stays
// linearizable; the price is that a caller may wait for the batch before
// its own to come back. Use it for many concurrent callers in one process.
func WithStreaming() Option {
	return func(opts *options) { opts.stream = true }
}

// WithMetadata sends the given key, value pairs as gRPC metadata with every
// call and stream of the Client. An odd number of arguments is an invalid
// option.
func WithMetadata(kv ...string) Option {
	return func(opts *options) {
		if len(kv)%2 != 0 {
			opts.err = fmt.Errorf("%w: WithMetadata needs key, value pairs, got %d strings", ErrInvalidOption, len(kv))
			return
		}
		opts.metadata = append(opts.metadata, kv...)
	}
}
