package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/metrics"
	"github.com/ordinal-dev/ordinal/transport"
)

// forwarded reports whether the call in ctx was forwarded by another node:
// every call that arrives on the peer port was. A node that gets a
// forwarded call it cannot serve answers Unavailable instead of forwarding
// again, so a stale view of who leads can never loop a call between nodes.
// No client can mark its call as forwarded: only the peer port does.
func forwarded(ctx context.Context) bool {
	_, ok := transport.PeerFromContext(ctx)
	return ok
}

// forwarder sends calls only the leader may answer to the leader's peer
// port, within the caller's deadline.
type forwarder struct {
	leader   LeaderFunc
	self     string
	peerConn func(nodeID, addr string) (*grpc.ClientConn, error)
	metrics  *metrics.Forward

	mu      sync.Mutex
	clients map[leaderKey]*client.Client
}

// leaderKey names a leader's connection: its ID and peer address.
type leaderKey struct{ id, addr string }

func newForwarder(leader LeaderFunc, self string, peerConn func(nodeID, addr string) (*grpc.ClientConn, error), m *metrics.Forward) *forwarder {
	return &forwarder{leader: leader, self: self, peerConn: peerConn, metrics: m, clients: map[leaderKey]*client.Client{}}
}

// client returns a client of the leader. It streams and coalesces: the
// STRONG calls a follower forwards concurrently for one key travel to the
// leader as one request, whose block is split among them in arrival order.
// Every call joined a batch not yet sent, so its IDs are allocated after it
// started, as linearizability requires. Its connection, from the node's
// one pool of peer connections (Config.PeerConn), goes to the leader's
// peer port and runs the peer handshake, which refuses any node
// but the leader it was made for (with peer TLS, any node without a
// certificate naming it) and any node of another cluster, so an ID is only
// ever taken from the node this node's Raft says leads, which serves it
// only after proving it still leads. It does not retry: the caller's own
// client decides that.
func (f *forwarder) client(ctx context.Context) (*client.Client, error) {
	if f.leader == nil || f.peerConn == nil {
		return nil, status.Error(codes.Unavailable, "this node is not the leader and forwarding is off: retry")
	}
	k, err := f.awaitLeader(ctx)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.clients[k]; c != nil {
		return c, nil
	}
	conn, err := f.peerConn(k.id, k.addr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connect to leader %s at %s: %v", k.id, k.addr, err)
	}
	c, err := client.NewFromConn(conn, client.WithStreaming(), client.WithRetry(1, 0))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connect to leader %s at %s: %v", k.id, k.addr, err)
	}
	f.clients[k] = c
	return c, nil
}

// errLeadsNow tells a caller waiting to forward that this node leads now:
// it serves the call itself (serveOrForward).
var errLeadsNow = errors.New("this node leads now")

// leaderPollInterval is how often a call waiting for an election checks
// whether a leader is known.
const leaderPollInterval = 10 * time.Millisecond

// awaitLeader returns the ID and peer address of a leader other than this
// node, waiting while an election runs, but answering Unavailable before
// the caller's deadline rather than letting it expire.
func (f *forwarder) awaitLeader(ctx context.Context) (leaderKey, error) {
	ctx, cancel := withMargin(ctx)
	defer cancel()
	for {
		id, addr := f.leader()
		var why string
		switch {
		case id == "":
			why = "no leader is elected (election in progress or quorum lost): retry"
		case addr == "":
			why = fmt.Sprintf("leader %s has no known peer address yet: retry", id)
		case id == f.self:
			return leaderKey{}, errLeadsNow
		default:
			return leaderKey{id: id, addr: addr}, nil
		}
		select {
		case <-ctx.Done():
			return leaderKey{}, status.Error(codes.Unavailable, why)
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
	f.metrics.Forwarded("call", status.Code(err).String())
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil {
			return zero, status.Errorf(codes.Unavailable, "the leader did not answer in time, retry: %v", err)
		}
		return zero, err
	}
	return resp, nil
}

// close ends the forwarding streams; the connections are the pool's.
func (f *forwarder) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for k, c := range f.clients {
		errs = append(errs, c.Close())
		delete(f.clients, k)
	}
	return errors.Join(errs...)
}
