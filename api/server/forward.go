package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/fsm"
)

// forwardedHeader marks a call forwarded by another node. A node that gets
// a forwarded call it cannot serve answers Unavailable instead of forwarding
// again, so a stale view of who leads can never loop a call between nodes.
const forwardedHeader = "ordinal-forwarded"

// leaderBackoff reconnects quickly to a leader that restarted; gRPC's
// default backoff grows to two minutes.
var leaderBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
})

func forwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedHeader)) > 0
}

// forwarder sends calls only the leader may answer to the leader, within
// the caller's deadline.
type forwarder struct {
	leader   LeaderFunc
	self     string
	dialOpts []grpc.DialOption

	mu      sync.Mutex
	clients map[string]*client.Client // by leader address
}

func newForwarder(leader LeaderFunc, self string, dialOpts []grpc.DialOption) *forwarder {
	if len(dialOpts) == 0 {
		dialOpts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &forwarder{leader: leader, self: self, dialOpts: dialOpts, clients: map[string]*client.Client{}}
}

// client returns a client of the leader. It streams and coalesces: the
// STRONG calls a follower forwards concurrently for one key travel to the
// leader as one request, whose block is split among them in arrival order.
// Every call joined a batch not yet sent, so its IDs are allocated after it
// started, as linearizability requires. It marks its calls as forwarded and
// does not retry: the caller's own client decides that.
func (f *forwarder) client(ctx context.Context) (*client.Client, error) {
	if f.leader == nil {
		return nil, status.Error(codes.Unavailable, "this node is not the leader and forwarding is off: retry")
	}
	addr, err := f.awaitLeader(ctx)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.clients[addr]; c != nil {
		return c, nil
	}
	c, err := client.New(addr,
		client.WithDialOptions(append([]grpc.DialOption{leaderBackoff}, f.dialOpts...)...),
		client.WithStreaming(),
		client.WithRetry(1, 0),
		client.WithMetadata(forwardedHeader, "1"))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connect to leader at %s: %v", addr, err)
	}
	f.clients[addr] = c
	return c, nil
}

// leaderPollInterval is how often a call waiting for an election checks
// whether a leader is known.
const leaderPollInterval = 10 * time.Millisecond

// awaitLeader returns the gRPC address of a leader other than this node,
// waiting while an election runs, but answering Unavailable before the
// caller's deadline rather than letting it expire.
func (f *forwarder) awaitLeader(ctx context.Context) (string, error) {
	ctx, cancel := withMargin(ctx)
	defer cancel()
	for {
		id, addr := f.leader()
		var why string
		switch {
		case id == "":
			why = "no leader is elected (election in progress or quorum lost): retry"
		case addr == "":
			why = fmt.Sprintf("leader %s has not published its gRPC address yet: retry", id)
		case addr == f.self:
			why = "leadership is changing: retry"
		default:
			return addr, nil
		}
		select {
		case <-ctx.Done():
			return "", status.Error(codes.Unavailable, why)
		case <-time.After(leaderPollInterval):
		}
	}
}

func (f *forwarder) next(ctx context.Context, key fsm.Key, count uint64) (int64, error) {
	return forward(ctx, f, func(c *client.Client, fctx context.Context) (int64, error) {
		return c.Store(key.Store).NextIDs(fctx, key.Name, client.Strong, int64(count))
	})
}

func (f *forwarder) highWater(ctx context.Context, key fsm.Key) (*ordinalv1.GetHighWaterResponse, error) {
	return forward(ctx, f, func(c *client.Client, fctx context.Context) (*ordinalv1.GetHighWaterResponse, error) {
		hw, err := c.Store(key.Store).HighWater(fctx, key.Name)
		return &ordinalv1.GetHighWaterResponse{HighWater: hw}, err
	})
}

func (f *forwarder) setFloor(ctx context.Context, key fsm.Key, floor int64) (*ordinalv1.SetFloorResponse, error) {
	return forward(ctx, f, func(c *client.Client, fctx context.Context) (*ordinalv1.SetFloorResponse, error) {
		hw, err := c.Store(key.Store).SetFloor(fctx, key.Name, floor)
		return &ordinalv1.SetFloorResponse{HighWater: hw}, err
	})
}

// forward makes one call to the leader with part of the caller's deadline
// kept back: a leader that is unreachable but still believed in (a
// partition the follower has not noticed yet) answers Unavailable, which
// says retry, before the caller's deadline expires.
func forward[T any](ctx context.Context, f *forwarder, call func(*client.Client, context.Context) (T, error)) (T, error) {
	var zero T
	c, err := f.client(ctx)
	if err != nil {
		return zero, err
	}
	fctx, cancel := withMargin(ctx)
	defer cancel()
	resp, err := call(c, fctx)
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil {
			return zero, status.Errorf(codes.Unavailable, "the leader did not answer in time, retry: %v", err)
		}
		return zero, err
	}
	return resp, nil
}

func (f *forwarder) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for addr, c := range f.clients {
		errs = append(errs, c.Close())
		delete(f.clients, addr)
	}
	return errors.Join(errs...)
}
