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

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newForwarder(leader LeaderFunc, self string, dialOpts []grpc.DialOption) *forwarder {
	if len(dialOpts) == 0 {
		dialOpts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &forwarder{leader: leader, self: self, dialOpts: dialOpts, conns: map[string]*grpc.ClientConn{}}
}

// client returns a Sequencer client connected to the leader and a context
// that marks the call as forwarded.
func (f *forwarder) client(ctx context.Context) (ordinalv1.SequencerClient, context.Context, error) {
	if f.leader == nil {
		return nil, nil, status.Error(codes.Unavailable, "this node is not the leader and forwarding is off: retry")
	}
	addr, err := f.awaitLeader(ctx)
	if err != nil {
		return nil, nil, err
	}
	conn, err := f.conn(addr)
	if err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "connect to leader at %s: %v", addr, err)
	}
	return ordinalv1.NewSequencerClient(conn), metadata.AppendToOutgoingContext(ctx, forwardedHeader, "1"), nil
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

func (f *forwarder) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.conns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, append([]grpc.DialOption{leaderBackoff}, f.dialOpts...)...)
	if err != nil {
		return nil, err
	}
	f.conns[addr] = c
	return c, nil
}

func (f *forwarder) next(ctx context.Context, key fsm.Key, count uint64) (int64, error) {
	return forward(ctx, f, func(c ordinalv1.SequencerClient, fctx context.Context) (int64, error) {
		resp, err := c.GetNextIds(fctx, &ordinalv1.GetNextIdsRequest{
			StoreName: key.Store,
			Key:       key.Name,
			Options:   &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_STRONG},
			Count:     int64(count),
		})
		return resp.GetFirstId(), err
	})
}

func (f *forwarder) highWater(ctx context.Context, key fsm.Key) (*ordinalv1.GetHighWaterResponse, error) {
	return forward(ctx, f, func(c ordinalv1.SequencerClient, fctx context.Context) (*ordinalv1.GetHighWaterResponse, error) {
		return c.GetHighWater(fctx, &ordinalv1.GetHighWaterRequest{StoreName: key.Store, Key: key.Name})
	})
}

func (f *forwarder) setFloor(ctx context.Context, key fsm.Key, floor int64) (*ordinalv1.SetFloorResponse, error) {
	return forward(ctx, f, func(c ordinalv1.SequencerClient, fctx context.Context) (*ordinalv1.SetFloorResponse, error) {
		return c.SetFloor(fctx, &ordinalv1.SetFloorRequest{StoreName: key.Store, Key: key.Name, Floor: floor})
	})
}

// forward makes one call to the leader with part of the caller's deadline
// kept back: a leader that is unreachable but still believed in (a
// partition the follower has not noticed yet) answers Unavailable, which
// says retry, before the caller's deadline expires.
func forward[T any](ctx context.Context, f *forwarder, call func(ordinalv1.SequencerClient, context.Context) (T, error)) (T, error) {
	var zero T
	c, fctx, err := f.client(ctx)
	if err != nil {
		return zero, err
	}
	fctx, cancel := withMargin(fctx)
	defer cancel()
	resp, err := call(c, fctx)
	if status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil {
		return zero, status.Errorf(codes.Unavailable, "the leader did not answer in time, retry: %v", err)
	}
	return resp, err
}

func (f *forwarder) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for addr, c := range f.conns {
		errs = append(errs, c.Close())
		delete(f.conns, addr)
	}
	return errors.Join(errs...)
}
