package client

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
)

const (
	// DefaultRetryWindow is how long a call whose context has no deadline
	// keeps retrying, when WithRetryWindow is not given: long enough to
	// ride out a leader failover (about 1.3 s in make bench) with room to
	// spare. A call whose context has a deadline retries until that
	// deadline instead.
	DefaultRetryWindow = 5 * time.Second

	// DefaultRetryBackoff is the wait before the second round of attempts
	// (after every node failed once) when WithRetry is not given; it
	// doubles before each further round, up to half a second.
	DefaultRetryBackoff = 25 * time.Millisecond

	// MaxWeakPrefetch is the largest block WithWeakPrefetch takes, the
	// server's largest GetNextIds block.
	MaxWeakPrefetch = maxBatchCount
)

// Option configures a Client.
type Option func(*options)

type options struct {
	dial     []grpc.DialOption
	store    string
	attempts int // 0: no limit but the time
	backoff  time.Duration
	window   time.Duration
	stream   bool
	prefetch int64    // WithWeakPrefetch's block size; 0: off
	metadata []string // key, value pairs sent with every call
	tls      *tls.Config
	token    tokenSource // nil unless WithToken or WithTokenFile
	lookup   lookupFunc  // nil: net.DefaultResolver.LookupHost; tests set it
	err      error       // the first invalid option, reported by New
}

// fail records err unless an earlier option already failed: New reports
// the first invalid option.
func (o *options) fail(err error) {
	if o.err == nil {
		o.err = err
	}
}

func defaultOptions() options {
	return options{backoff: DefaultRetryBackoff, window: DefaultRetryWindow}
}

// lookupFunc returns the function that looks names up.
func (o *options) lookupFunc() lookupFunc {
	if o.lookup != nil {
		return o.lookup
	}
	return net.DefaultResolver.LookupHost
}

// WithDialOptions adds gRPC dial options. They are applied after the
// Client's own transport credentials (plain TCP, or TLS with WithTLS), so a
// grpc.WithTransportCredentials among them overrides both.
func WithDialOptions(o ...grpc.DialOption) Option {
	return func(opts *options) { opts.dial = append(opts.dial, o...) }
}

// WithStore sets the store the Client's own methods use. The default, "",
// means the server's default store. Use Client.Store for calls to other
// stores.
func WithStore(name string) Option {
	return func(opts *options) { opts.store = name }
}

// WithRetry sets how calls failing with codes.Unavailable are retried: up
// to attempts tries in all, on the nodes in turn. A failed attempt is
// followed at once by one on a node not tried yet; once every node failed,
// the next round starts after about backoff, each further round after
// twice the previous wait (at most half a second), with random jitter so
// that clients failed by the same event do not retry in lockstep. Retries
// stop early rather than wait past the context's deadline or, for a
// context without one, past the retry window (WithRetryWindow). attempts
// 1 turns retries off. By default the number of attempts has no limit but
// the time, and backoff is DefaultRetryBackoff.
//
// Only Unavailable is retried: a node answers it when it cannot serve the
// call now (no leader, the node is starting or stopping), and gRPC when
// it cannot reach the node. Retrying is safe even for NextID, whose failed
// call may have consumed IDs: the server never hands an ID out twice, so a
// retry can only leave a gap in the sequence, never a duplicate.
func WithRetry(attempts int, backoff time.Duration) Option {
	return func(opts *options) {
		if attempts < 1 || backoff < 0 {
			opts.fail(fmt.Errorf("%w: WithRetry(%d, %v): attempts must be at least 1 and backoff not negative",
				ErrInvalidOption, attempts, backoff))
			return
		}
		opts.attempts, opts.backoff = attempts, backoff
	}
}

// WithRetryWindow sets how long a call whose context has no deadline keeps
// retrying (see WithRetry) before it returns its last error; the default
// is DefaultRetryWindow. It bounds the retries, not an attempt in flight:
// give the context a deadline to bound that too. A context's own deadline
// always wins. window must be positive.
func WithRetryWindow(window time.Duration) Option {
	return func(opts *options) {
		if window <= 0 {
			opts.fail(fmt.Errorf("%w: WithRetryWindow(%v): the window must be positive", ErrInvalidOption, window))
			return
		}
		opts.window = window
	}
}

// WithWeakPrefetch serves WEAK IDs from memory: per store and key, the
// Client takes a block of n IDs with one GetNextIds call and hands them out
// one by one (NextID) or a few at a time (NextIDs of at most n/2), taking
// the next block in the background once half of the current one is used
// (Leaf's double buffer), so that callers do not wait for a refill while
// blocks come back faster than half of one is used. STRONG calls are not
// affected.
//
// The guarantees stay those of WEAK IDs, and are stronger per Client: the
// IDs are unique across every client and node, and each key's IDs increase
// in the order this Client hands them out. A block comes from one node
// (the one the previous block came from, while it answers); should a
// block from another node lie below IDs already handed out, the Client
// skips past them. IDs the Client took but did not hand out (when it is
// closed or the process ends) are never handed out by anyone: a gap. n
// must be between 2 and MaxWeakPrefetch; a few thousand suits most
// programs: larger blocks mean fewer calls and larger gaps.
func WithWeakPrefetch(n int) Option {
	return func(opts *options) {
		if n < 2 || n > MaxWeakPrefetch {
			opts.fail(fmt.Errorf("%w: WithWeakPrefetch(%d): the block size must be between 2 and %d", ErrInvalidOption, n, MaxWeakPrefetch))
			return
		}
		opts.prefetch = int64(n)
	}
}

// WithStreaming sends NextID and NextIDs over one bidirectional stream per
// node and coalesces concurrent callers of the same key and mode into one
// request: with thousands of goroutines taking IDs, a batch costs one
// message and one leadership proof on the server instead of one per caller. Each caller's
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
			opts.fail(fmt.Errorf("%w: WithMetadata needs key, value pairs, got %d strings", ErrInvalidOption, len(kv)))
			return
		}
		opts.metadata = append(opts.metadata, kv...)
	}
}

// WithTLS connects over TLS configured by cfg instead of plain TCP. Set
// cfg.RootCAs to the pool of the CA that signed the nodes' certificates
// (nil means the system's roots) and, when the nodes require client
// certificates (mTLS), cfg.Certificates to the client's certificate.
// cfg.ServerName, when set, is the name verified in the node's certificate
// instead of the host of the address given to New. The Client uses a copy
// of cfg; a nil cfg is an invalid option.
func WithTLS(cfg *tls.Config) Option {
	return func(opts *options) {
		if cfg == nil {
			opts.fail(fmt.Errorf("%w: WithTLS(nil): pass a *tls.Config, for example with RootCAs set to the cluster's CA", ErrInvalidOption))
			return
		}
		opts.tls = cfg.Clone()
	}
}

// WithToken sends token as a bearer token ("authorization: Bearer
// <token>") with every call and stream of the Client, for nodes that
// authorize callers by token.
//
// The token is a secret, so the Client refuses to send it in clear text:
// over a connection without TLS (see WithTLS), calls fail with
// codes.Unauthenticated before anything is sent, unless the address given
// to New is a loopback one (127.0.0.0/8, ::1, localhost) or a Unix socket,
// as for a development node or a command run on the node's own host. An
// empty token, or one with spaces, control or non-ASCII characters, is an
// invalid option; WithToken and WithTokenFile exclude each other.
func WithToken(token string) Option {
	return func(opts *options) {
		if err := checkToken(token); err != nil {
			opts.fail(fmt.Errorf("%w: WithToken: %w", ErrInvalidOption, err))
			return
		}
		opts.setToken("WithToken", staticToken(bearer(token)))
	}
}

// WithTokenFile is WithToken with the token read from the file at path,
// without surrounding white space. The file is checked again at most once
// a second, on the next call, and the token re-read when the file changed,
// so that a long-running process picks up a rotated token without a
// restart; while the file is missing, empty or unreadable the Client keeps
// sending the last token it read. A stream (WithStreaming) carries the
// token it was opened with; streams opened later carry the new one. New
// fails, with an error wrapping ErrInvalidOption and the file system's
// error, when the file cannot be read or holds no token.
func WithTokenFile(path string) Option {
	return func(opts *options) {
		t, err := newFileToken(path)
		if err != nil {
			opts.fail(fmt.Errorf("%w: WithTokenFile: %w", ErrInvalidOption, err))
			return
		}
		opts.setToken("WithTokenFile", t)
	}
}

// setToken sets the Client's token source, which only one option may do.
func (o *options) setToken(option string, t tokenSource) {
	if o.token != nil {
		o.fail(fmt.Errorf("%w: %s: a token is already set; pass one of WithToken and WithTokenFile, once", ErrInvalidOption, option))
		return
	}
	o.token = t
}

// checkToken rejects tokens that cannot travel in an HTTP/2 header as
// "Bearer <token>".
func checkToken(token string) error {
	if token == "" {
		return fmt.Errorf("the token is empty")
	}
	if i := strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r >= 0x7f }); i >= 0 {
		return fmt.Errorf("the token has a space, control or non-ASCII character at byte %d; a bearer token is one word of printable ASCII", i)
	}
	return nil
}
