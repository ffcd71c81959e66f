package client

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
)

// route says which node a call should go to.
type route int

const (
	// anyNode: a healthy node, in turn (WEAK calls).
	anyNode route = iota
	// leaderNode: the leader when the Client knows it, otherwise any
	// node, which forwards the call (STRONG calls, SetFloor, HighWater).
	leaderNode
)

// health of a node, as its health service last said.
const (
	healthUnknown int32 = iota
	healthServing
	healthNotServing
)

// node is one node the Client talks to, over its own connection.
type node struct {
	ep   endpoint
	conn *grpc.ClientConn
	seq  ordinalv1.SequencerServiceClient

	health  atomic.Int32 // healthUnknown, healthServing, healthNotServing
	leader  atomic.Bool  // LeaderHealthService said SERVING, last
	retired atomic.Bool  // dropped from the Client's nodes: its calls may fail Canceled

	strmMu sync.Mutex
	strm   *streamer // WithStreaming: made on first use

	stop context.CancelFunc // ends the watchers
}

// streamer returns the node's stream of NextIdStream calls.
func (n *node) streamer() *streamer {
	n.strmMu.Lock()
	defer n.strmMu.Unlock()
	if n.strm == nil {
		n.strm = newStreamer(n.seq)
	}
	return n.strm
}

// usable ranks a node for a call: 0 is best. A node whose connection is
// ready and that does not say it is unhealthy comes first, then one that
// is connecting (or idle, connecting on the call), then one that says it
// is not a healthy member (it may still serve WEAK IDs from what it
// holds), then one whose connection failed.
func (n *node) rank() int {
	switch n.conn.GetState() {
	case connectivity.TransientFailure, connectivity.Shutdown:
		return 3
	case connectivity.Ready:
		if n.health.Load() == healthNotServing {
			return 2
		}
		return 0
	default:
		if n.health.Load() == healthNotServing {
			return 2
		}
		return 1
	}
}

// router keeps the Client's nodes: one connection per node, resolved from
// the address list, with the health and leadership each node reports.
type router struct {
	targets []target
	opts    *options
	lookup  lookupFunc
	names   bool // some targets are DNS names, looked up again from time to time
	owned   bool // the connections are the router's to close (not NewFromConn)
	named   bool // errors name the addresses tried (not NewFromConn)

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	nodes atomic.Pointer[[]*node]
	rr    atomic.Uint64 // round robin among equal nodes

	resolvedAt atomic.Int64 // when names were last looked up, in UnixNano
	watching   atomic.Bool  // watchers run on every node; set under mu
	closed     atomic.Bool  // set under mu

	firstMu   sync.Mutex // held by the first call while it looks names up
	mu        sync.Mutex // guards resolving, and changing nodes
	resolving bool
	wg        sync.WaitGroup // watchers and lookups
}

func newRouter(targets []target, o *options) (*router, error) {
	r := &router{targets: targets, opts: o, lookup: o.lookupFunc(), owned: true, named: true}
	for _, t := range targets {
		r.names = r.names || t.name
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if !r.names {
		eps, _ := resolve(r.ctx, targets, nil, nil)
		if err := r.update(eps); err != nil {
			r.close()
			return nil, err
		}
	}
	return r, nil
}

// newConnRouter is the router of NewFromConn: one node, the caller's
// connection, which it never closes, and errors returned as they are.
func newConnRouter(conn *grpc.ClientConn) *router {
	r := &router{opts: &options{}}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	n := &node{ep: endpoint{name: conn.Target()}, conn: conn, seq: ordinalv1.NewSequencerServiceClient(conn)}
	r.nodes.Store(&[]*node{n})
	return r
}

// current returns the nodes, looking names up first if that has not
// been done yet, and again in the background when it is time.
func (r *router) current(ctx context.Context) ([]*node, error) {
	if p := r.nodes.Load(); p != nil {
		if r.names && time.Since(time.Unix(0, r.resolvedAt.Load())) >= resolveEvery {
			r.refresh()
		}
		r.startWatching()
		return *p, nil
	}
	// The first call: look the names up, once for all the callers.
	r.firstMu.Lock()
	if r.nodes.Load() == nil {
		if err := r.resolveNow(ctx); err != nil {
			r.firstMu.Unlock()
			return nil, err
		}
	}
	r.firstMu.Unlock()
	r.startWatching()
	return *r.nodes.Load(), nil
}

// resolveNow looks the names up and waits for the answer: the first call
// of a Client given DNS names.
func (r *router) resolveNow(ctx context.Context) error {
	r.mu.Lock()
	if r.closed.Load() {
		r.mu.Unlock()
		return errClosed
	}
	r.mu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	eps, err := resolve(lctx, r.targets, r.lookup, nil)
	r.resolvedAt.Store(time.Now().UnixNano())
	if err != nil {
		return status.Errorf(codes.Unavailable, "ordinal: no address for %s: %v", strings.Join(names(r.targets), ", "), err)
	}
	return r.update(eps)
}

// refresh looks the names up again in the background, at most once per
// minResolveInterval: after every node failed a call, and every
// resolveEvery.
func (r *router) refresh() {
	if !r.names {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() || r.resolving || time.Since(time.Unix(0, r.resolvedAt.Load())) < minResolveInterval {
		return
	}
	r.resolving = true
	r.resolvedAt.Store(time.Now().UnixNano())
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		var prev []endpoint
		if p := r.nodes.Load(); p != nil {
			for _, n := range *p {
				prev = append(prev, n.ep)
			}
		}
		ctx, cancel := context.WithTimeout(r.ctx, resolveTimeout)
		eps, err := resolve(ctx, r.targets, r.lookup, prev)
		cancel()
		if err == nil {
			_ = r.update(eps)
		}
		r.mu.Lock()
		r.resolving = false
		r.mu.Unlock()
	}()
}

// update makes the nodes those of eps: it keeps the nodes it has, dials
// the new ones and retires the others. A retired node's connection is
// closed; a call on it that fails Canceled is retried on another node.
func (r *router) update(eps []endpoint) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return errClosed
	}
	var old []*node
	if p := r.nodes.Load(); p != nil {
		old = *p
	}
	byName := map[endpoint]*node{}
	for _, n := range old {
		byName[n.ep] = n
	}
	nodes := make([]*node, 0, len(eps))
	for _, e := range eps {
		if n := byName[e]; n != nil {
			nodes = append(nodes, n)
			delete(byName, e)
			continue
		}
		_, local := targetEndpoint(e.name)
		conn, err := dialEndpoint(e, r.opts, local)
		if err != nil {
			for _, n := range nodes {
				if !containsNode(old, n) {
					_ = n.conn.Close()
				}
			}
			return fmt.Errorf("client: connect to %q: %w", e.name, err)
		}
		nodes = append(nodes, &node{ep: e, conn: conn, seq: ordinalv1.NewSequencerServiceClient(conn)})
	}
	if r.watching.Load() {
		for _, n := range nodes {
			if !containsNode(old, n) {
				r.watch(n)
			}
		}
	}
	r.nodes.Store(&nodes)
	for _, n := range byName {
		r.retire(n)
	}
	return nil
}

func containsNode(nodes []*node, n *node) bool {
	for _, m := range nodes {
		if m == n {
			return true
		}
	}
	return false
}

// retire closes a node that left the list. The caller holds r.mu.
func (r *router) retire(n *node) {
	n.retired.Store(true)
	if n.stop != nil {
		n.stop()
	}
	n.strmMu.Lock()
	if n.strm != nil {
		n.strm.close()
	}
	n.strmMu.Unlock()
	_ = n.conn.Close()
}

// startWatching starts the health and leadership watchers of every node,
// once there is more than one node to choose from.
func (r *router) startWatching() {
	if !r.owned {
		return
	}
	p := r.nodes.Load()
	if p == nil || len(*p) < 2 || r.watching.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watching.Load() || r.closed.Load() {
		return
	}
	r.watching.Store(true)
	for _, n := range *r.nodes.Load() {
		r.watch(n)
	}
}

// watch starts n's watchers. The caller holds r.mu.
func (r *router) watch(n *node) {
	ctx, cancel := context.WithCancel(r.ctx)
	n.stop = cancel
	hc := healthpb.NewHealthClient(n.conn)
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		watchHealth(ctx, hc, sequencerHealthService, func(st healthpb.HealthCheckResponse_ServingStatus) {
			switch st {
			case healthpb.HealthCheckResponse_SERVING:
				n.health.Store(healthServing)
			case healthpb.HealthCheckResponse_NOT_SERVING:
				n.health.Store(healthNotServing)
			default:
				n.health.Store(healthUnknown)
			}
		})
	}()
	go func() {
		defer r.wg.Done()
		watchHealth(ctx, hc, LeaderHealthService, func(st healthpb.HealthCheckResponse_ServingStatus) {
			n.leader.Store(st == healthpb.HealthCheckResponse_SERVING)
		})
	}()
}

// Backoff of a watcher between two streams that failed without an answer.
const (
	watchBackoff    = 100 * time.Millisecond
	maxWatchBackoff = 5 * time.Second
)

// watchHealth follows service's status on one node through
// grpc.health.v1.Health/Watch until ctx ends, reporting every status to
// set, and UNKNOWN whenever the stream breaks: a node that cannot be
// asked is neither known healthy nor known to lead. The stream waits for
// the connection to be ready, so a node that is down costs nothing but
// gRPC's own reconnect attempts. A node without a health service
// (Unimplemented) stays UNKNOWN; one that refuses the caller (no ids
// role) is asked again after a while, and calls find out for themselves.
func watchHealth(ctx context.Context, hc healthpb.HealthClient, service string, set func(healthpb.HealthCheckResponse_ServingStatus)) {
	wait := watchBackoff
	for ctx.Err() == nil {
		answered := false
		stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.WaitForReady(true))
		if err == nil {
			for {
				resp, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				answered = true
				set(resp.GetStatus())
			}
		}
		set(healthpb.HealthCheckResponse_UNKNOWN)
		if status.Code(err) == codes.Unimplemented {
			return
		}
		if answered {
			wait = watchBackoff
		}
		t := time.NewTimer(jitter(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, maxWatchBackoff)
	}
}

// errClosed is the error of calls on a closed Client.
var errClosed = status.Error(codes.Canceled, "ordinal: client closed")

// pick returns the node for an attempt of a call on route rt: the leader
// for leaderNode when one is known, else the best node by rank, taking
// turns among equals, preferring prefer among them. Nodes in tried are
// skipped; pick returns nil when every node was tried.
func (r *router) pick(ctx context.Context, rt route, tried []*node, prefer *node) (*node, error) {
	if r.closed.Load() {
		return nil, errClosed
	}
	nodes, err := r.current(ctx)
	if err != nil {
		return nil, err
	}
	if len(nodes) == 1 {
		if len(tried) > 0 {
			return nil, nil
		}
		return nodes[0], nil
	}
	if rt == leaderNode {
		for _, n := range nodes {
			if n.leader.Load() && n.rank() < 3 && !containsNode(tried, n) {
				return n, nil
			}
		}
	}
	best, bestRank := (*node)(nil), 4
	start := int((r.rr.Add(1) - 1) % uint64(len(nodes)))
	for i := range nodes {
		n := nodes[(start+i)%len(nodes)]
		if containsNode(tried, n) {
			continue
		}
		rank := n.rank()
		if rank < bestRank || (rank == bestRank && n == prefer) {
			best, bestRank = n, rank
		}
	}
	return best, nil
}

// close ends the watchers, the streams and, when they are the router's,
// the connections.
func (r *router) close() error {
	r.mu.Lock()
	if r.closed.Load() {
		r.mu.Unlock()
		return nil
	}
	r.closed.Store(true)
	r.cancel()
	var nodes []*node
	if p := r.nodes.Load(); p != nil {
		nodes = *p
	}
	r.mu.Unlock()
	for _, n := range nodes {
		n.strmMu.Lock()
		if n.strm != nil {
			n.strm.close()
		}
		n.strmMu.Unlock()
	}
	var err error
	if r.owned {
		for _, n := range nodes {
			if cerr := n.conn.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}
	}
	r.wg.Wait()
	return err
}
