package etcdcompat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/ordinal-dev/ordinal/alloc"
)

// ErrNotStarted is returned by calls made before Start connected to etcd.
var ErrNotStarted = fmt.Errorf("%w: not connected to etcd yet", alloc.ErrUnavailable)

// errClosed is returned by calls made after Close.
var errClosed = fmt.Errorf("%w: etcd store closed", alloc.ErrUnavailable)

// Backoff between attempts to reach etcd.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = 2 * time.Second
)

// Operations: the op label of the requests a store makes to etcd
// (metrics.Etcd.Request). A fixed list, never a key or a store name.
// Watches are streams and are not counted; neither are the lease
// keepalives the client sends by itself.
const (
	opConnect  = "connect"  // the read that checks etcd answers, at start
	opReserve  = "reserve"  // a range reservation's compare-and-swap
	opGet      = "get"      // reading a counter (Layotto: a key's version)
	opConfirm  = "confirm"  // the STRONG fence: reading the election key
	opFloor    = "floor"    // SetFloor's transaction fenced by the election key
	opNext     = "next"     // Layotto: one ID's transaction
	opSession  = "session"  // opening a session: granting its lease
	opCampaign = "campaign" // campaigning, until this node leads
	opResign   = "resign"   // revoking the session's lease
	opLeader   = "leader"   // reading which node leads
	opTenure   = "tenure"   // reading this node's election key before watching it
	opFloors   = "floors"   // reading the floors before watching them

	// Snowflake stores (snowflake.go).
	opSnowflakeDeclare = "snowflake_declare" // declaring a Snowflake store
	opSnowflakeWorker  = "snowflake_worker"  // a worker session's lease, reading and taking worker keys
	opSnowflakeTime    = "snowflake_time"    // a time reservation's compare-and-swap
	opSnowflakeFloor   = "snowflake_floor"   // a Snowflake floor's compare-and-swap
	opSnowflakeRead    = "snowflake_read"    // reading time counters, floors or declarations
)

// conn is the etcd connection a store shares with its background loops.
type conn struct {
	cfg       Config
	clientCfg clientv3.Config
	logger    hclog.Logger
	endpoints string // for messages

	client    atomic.Pointer[clientv3.Client]
	connected chan struct{} // closed once Start reached etcd

	// sfKeys are the keys of Snowflake stores; snowflake is the store's
	// Snowflake backend, once made (Snowflake).
	sfKeys    snowflakeKeys
	snowflake atomic.Pointer[SnowflakeBackend]

	mu     sync.Mutex // guards creating the client against Close
	closed bool

	// ctx ends the background loops; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
}

func newConn(cfg Config) (*conn, error) {
	cc, err := cfg.clientConfig()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{
		cfg:       cfg,
		clientCfg: cc,
		logger:    cfg.Logger,
		endpoints: strings.Join(cfg.Endpoints, ","),
		connected: make(chan struct{}),
		sfKeys:    newSnowflakeKeys(cfg.Prefix, cfg.AppID),
		ctx:       ctx,
		cancel:    cancel,
	}, nil
}

// connect creates the client and waits until etcd answers a linearizable
// read, retrying until ctx ends. ordinal nodes may well start before etcd
// does (docker compose, a rolling restart), so an unreachable etcd is
// waited for, not fatal.
func (c *conn) connect(ctx context.Context) error {
	wait := minRetry
	warned := time.Time{}
	for {
		err := c.tryConnect(ctx)
		if err == nil {
			close(c.connected)
			c.logger.Info("connected to etcd", "endpoints", c.endpoints, "layout", c.cfg.Layout, "prefix", c.cfg.Prefix)
			return nil
		}
		if time.Since(warned) > 10*time.Second {
			c.logger.Warn("waiting for etcd", "endpoints", c.endpoints, "error", err)
			warned = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd at %s not reachable: %w (last error: %v)", c.endpoints, ctx.Err(), err)
		case <-c.ctx.Done():
			return errClosed
		case <-time.After(wait):
		}
		wait = min(wait*2, maxRetry)
	}
}

func (c *conn) tryConnect(ctx context.Context) error {
	cli := c.client.Load()
	if cli == nil {
		// clientv3.New does not block on the connection, except to
		// authenticate when a username is set.
		var err error
		if cli, err = clientv3.New(c.clientCfg); err != nil {
			return err
		}
		c.mu.Lock()
		closed := c.closed
		if !closed {
			c.client.Store(cli)
		}
		c.mu.Unlock()
		if closed {
			cli.Close()
			return errClosed
		}
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	start := time.Now()
	_, err := cli.Get(pctx, c.cfg.Prefix+"probe", clientv3.WithCountOnly())
	c.recordLoop(ctx, opConnect, start, err)
	return err
}

// cli returns the client, or an error before Start connected or after
// Close.
func (c *conn) cli() (*clientv3.Client, error) {
	select {
	case <-c.connected:
	default:
		return nil, ErrNotStarted
	}
	cli := c.client.Load()
	if cli == nil || c.ctx.Err() != nil {
		return nil, errClosed
	}
	return cli, nil
}

// cliForCall is cli for a call on behalf of a caller: it fails at once,
// with a message that says so, when no etcd endpoint accepts connections,
// rather than letting the call wait for its deadline.
func (c *conn) cliForCall() (*clientv3.Client, error) {
	cli, err := c.cli()
	if err != nil {
		return nil, err
	}
	if cli.ActiveConnection().GetState() == connectivity.TransientFailure {
		return nil, fmt.Errorf("%w: etcd at %s is unreachable (no endpoint accepts connections); retry", alloc.ErrUnavailable, c.endpoints)
	}
	return cli, nil
}

// requestContext bounds one etcd request made for a call by
// Config.RequestTimeout, within the caller's own deadline.
func (c *conn) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.RequestTimeout)
}

// record records one request of operation op to etcd, begun at start.
func (c *conn) record(op string, start time.Time, err error) {
	if m := c.cfg.Metrics; m != nil {
		m.Request(op, time.Since(start), err)
	}
}

// recordLoop is record for a request made in the background: one that
// failed because it was called off (ctx done, or the store closed) is not
// recorded, since etcd did not fail it.
func (c *conn) recordLoop(ctx context.Context, op string, start time.Time, err error) {
	if err != nil && (ctx.Err() != nil || c.ctx.Err() != nil) {
		return
	}
	c.record(op, start, err)
}

// waitConnected blocks until Start has reached etcd.
func (c *conn) waitConnected(ctx context.Context) error {
	select {
	case <-c.connected:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: etcd at %s not reached yet: %w", alloc.ErrUnavailable, c.endpoints, ctx.Err())
	}
}

// reachable reports whether the client's connection to etcd is up.
func (c *conn) reachable() bool {
	select {
	case <-c.connected:
	default:
		return false
	}
	cli := c.client.Load()
	if cli == nil || c.ctx.Err() != nil {
		return false
	}
	switch cli.ActiveConnection().GetState() {
	case connectivity.Ready, connectivity.Idle:
		return true
	}
	return false
}

// unavailable wraps an error from etcd so that the gRPC layer answers
// Unavailable with a message that names etcd.
func (c *conn) unavailable(what string, err error) error {
	if c.ctx.Err() != nil {
		return errClosed
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: etcd at %s did not answer in time (%s): %w", alloc.ErrUnavailable, c.endpoints, what, err)
	}
	return fmt.Errorf("%w: etcd at %s: %s: %w", alloc.ErrUnavailable, c.endpoints, what, err)
}

// close stops the background loops and closes the client.
func (c *conn) close(beforeClient func()) error {
	var err error
	c.closeOnce.Do(func() {
		// The Snowflake worker is given up first, so that it frees at
		// once rather than when its session's lease expires.
		if b := c.snowflake.Load(); b != nil {
			b.release()
		}
		if beforeClient != nil {
			beforeClient()
		}
		c.cancel()
		// The loops hand leadership over on their way out; give them a
		// moment, then close the client, which ends whatever still waits
		// on an unreachable etcd.
		done := make(chan struct{})
		go func() {
			c.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(resignTimeout + time.Second):
		}
		c.mu.Lock()
		c.closed = true
		cli := c.client.Load()
		c.mu.Unlock()
		if cli != nil {
			err = cli.Close()
			if errors.Is(err, context.Canceled) {
				err = nil
			}
		}
		<-done
	})
	return err
}

// goLoop runs fn in the background until Close.
func (c *conn) goLoop(fn func(ctx context.Context)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn(c.ctx)
	}()
}

// sleep waits d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
