// Package server implements ordinal's gRPC services: ordinal.v1.SequencerService,
// the Layotto-compatible spec.proto.runtime.v1.Runtime/GetNextId, health and
// reflection. Handlers validate requests, call the Sequencer, forward calls
// only the leader may answer, and map errors to gRPC status codes.
package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/runtimev1"
	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/metrics"
)

// Sequencer is what the handlers serve IDs from: the allocator, or a store
// that hands out IDs itself.
type Sequencer = alloc.Sequencer

// LeaderFunc returns the current leader's node ID and peer address (where
// other nodes forward calls to it), or empty strings when no leader is
// known.
type LeaderFunc func() (id, peerAddr string)

// Config configures a Server.
type Config struct {
	// Sequencer serves the IDs. Required.
	Sequencer Sequencer

	// Leader locates the leader for forwarding. Nil means calls are never
	// forwarded (a single-node deployment).
	Leader LeaderFunc

	// SelfID is this node's ID; a call is never forwarded to it.
	SelfID string

	// PeerConn returns the connection to the leader nodeID's peer port at
	// addr, where calls are forwarded: transport.Peer.Conn, the node's one
	// pool of node-to-node connections, each of which only node nodeID of
	// this cluster can answer. The server does not close it. Nil means
	// calls are never forwarded.
	PeerConn func(nodeID, addr string) (*grpc.ClientConn, error)

	// ForwardMetrics counts the calls forwarded to the leader, by code.
	// Nil records nothing.
	ForwardMetrics *metrics.Forward

	// MaxCount is the largest block GetNextIds hands out. Larger blocks
	// make bigger batches possible but let one caller burn through a key's
	// ID space faster. Default DefaultMaxCount.
	MaxCount uint64

	// Logger receives warnings about forwarding. Nil means none.
	Logger hclog.Logger
}

// Server implements the gRPC services of one node.
type Server struct {
	ordinalv1.UnimplementedSequencerServiceServer

	seq       Sequencer
	maxCount  uint64
	logger    hclog.Logger
	fwd       *forwarder
	health    *health.Server
	ready     atomic.Bool
	draining  chan struct{} // closed by Drain
	drain     sync.Once
	closed    chan struct{} // closed by Close: stops watchLeader
	closeOnce sync.Once

	// LeaderHealthService: leaderOf and self say who leads; leads is
	// what the health service says now.
	leaderOf LeaderFunc
	self     string
	leaderMu sync.Mutex
	leads    bool
}

// LeaderHealthService is the health service name (grpc.health.v1.Health,
// Check and Watch) that is SERVING on the node that serves STRONG calls
// itself, without forwarding them, and NOT_SERVING on every other node.
// Health needs only the ids role, so a client with any credentials can
// send its STRONG calls straight to the leader (package client does):
// which node leads is not a secret, and this says no more than that.
const LeaderHealthService = client.LeaderHealthService

// leaderCheckInterval is how often a node checks whether it leads, to
// keep LeaderHealthService current. A client that has not heard of a new
// leader yet sends its STRONG calls to any node, which forwards them, so a
// late update costs a hop, never a failed call.
const leaderCheckInterval = 20 * time.Millisecond

// New returns a Server that answers Unavailable until SetReady(true).
func New(cfg Config) *Server {
	if cfg.MaxCount == 0 {
		cfg.MaxCount = DefaultMaxCount
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	s := &Server{
		seq:      cfg.Sequencer,
		maxCount: min(cfg.MaxCount, math.MaxInt64),
		logger:   cfg.Logger,
		fwd:      newForwarder(cfg.Leader, cfg.SelfID, cfg.PeerConn, cfg.ForwardMetrics),
		health:   health.NewServer(),
		draining: make(chan struct{}),
		closed:   make(chan struct{}),
		leaderOf: cfg.Leader,
		self:     cfg.SelfID,
	}
	s.SetReady(false)
	s.health.SetServingStatus(LeaderHealthService, healthpb.HealthCheckResponse_NOT_SERVING)
	go s.watchLeader()
	return s
}

// watchLeader keeps LeaderHealthService current until Close.
func (s *Server) watchLeader() {
	t := time.NewTicker(leaderCheckInterval)
	defer t.Stop()
	for {
		s.updateLeader()
		select {
		case <-s.closed:
			return
		case <-t.C:
		}
	}
}

// updateLeader reports LeaderHealthService SERVING while this node is
// ready and leads (with no LeaderFunc, a single node that never forwards:
// while it is ready), NOT_SERVING otherwise.
func (s *Server) updateLeader() {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	leads := s.ready.Load()
	if leads && s.leaderOf != nil {
		id, _ := s.leaderOf()
		leads = id != "" && id == s.self
	}
	if leads == s.leads {
		return
	}
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if leads {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(LeaderHealthService, st)
	s.leads = leads
}

// Register adds every service to g.
func (s *Server) Register(g *grpc.Server) {
	ordinalv1.RegisterSequencerServiceServer(g, s)
	runtimev1.RegisterRuntimeServer(g, &runtimeServer{s: s})
	healthpb.RegisterHealthServer(g, &drainingHealth{Server: s.health, draining: s.draining})
	reflection.Register(g)
}

// RegisterForwarded adds the SequencerService to g, the node's peer gRPC
// server: other nodes forward the calls only the leader may answer to it.
// Every call that arrives there counts as forwarded and is never forwarded
// again.
func (s *Server) RegisterForwarded(g *grpc.Server) {
	ordinalv1.RegisterSequencerServiceServer(g, s)
}

// SetReady opens or closes the node for calls and reports it through the
// health service.
func (s *Server) SetReady(ready bool) {
	s.ready.Store(ready)
	s.SetHealth(ready)
	// At once, not at watchLeader's next look: a closing node must not
	// draw STRONG calls.
	s.updateLeader()
}

// Ready reports whether the node is open for calls (SetReady).
func (s *Server) Ready() bool { return s.ready.Load() }

// SetHealth reports through the health service whether the node is a
// healthy member (it knows a leader and is in the configuration) without
// closing it for calls: a node cut off from the leader still serves WEAK
// IDs from the ranges it holds, but load balancers should prefer others.
func (s *Server) SetHealth(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, svc := range []string{"", ordinalv1.SequencerService_ServiceDesc.ServiceName, runtimev1.Runtime_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(svc, st)
	}
}

// Drain ends every NextIdStream once its requests in flight are answered,
// and every health Watch stream, so that a graceful stop does not wait for
// clients that keep streams open.
func (s *Server) Drain() {
	s.drain.Do(func() { close(s.draining) })
}

// Close releases connections to other nodes and reports NOT_SERVING.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	s.health.Shutdown()
	s.ready.Store(false)
	return s.fwd.close()
}

// GetNextId implements ordinal.v1.SequencerService.
func (s *Server) GetNextId(ctx context.Context, req *ordinalv1.GetNextIdRequest) (*ordinalv1.GetNextIdResponse, error) {
	id, err := s.nextFromRequest(ctx, req.GetStoreName(), req.GetKey(), req.GetOptions().GetIncrement(), 1)
	if err != nil {
		return nil, err
	}
	return &ordinalv1.GetNextIdResponse{NextId: id}, nil
}

// GetNextIds implements ordinal.v1.SequencerService.
func (s *Server) GetNextIds(ctx context.Context, req *ordinalv1.GetNextIdsRequest) (*ordinalv1.GetNextIdsResponse, error) {
	count, err := s.countOf(req.GetCount())
	if err != nil {
		return nil, err
	}
	first, err := s.nextFromRequest(ctx, req.GetStoreName(), req.GetKey(), req.GetOptions().GetIncrement(), count)
	if err != nil {
		return nil, err
	}
	return &ordinalv1.GetNextIdsResponse{FirstId: first, Count: int64(count)}, nil
}

// GetHighWater implements ordinal.v1.SequencerService.
func (s *Server) GetHighWater(ctx context.Context, req *ordinalv1.GetHighWaterRequest) (*ordinalv1.GetHighWaterResponse, error) {
	key, err := s.checkKey(req.GetStoreName(), req.GetKey())
	if err != nil {
		return nil, err
	}
	return serveOrForward(ctx, s, key, func(inner context.Context) (*ordinalv1.GetHighWaterResponse, error) {
		hw, err := s.seq.HighWater(inner, key)
		return &ordinalv1.GetHighWaterResponse{HighWater: int64(hw)}, err
	}, func() (*ordinalv1.GetHighWaterResponse, error) {
		return s.fwd.highWater(ctx, key)
	})
}

// SetFloor implements ordinal.v1.SequencerService.
func (s *Server) SetFloor(ctx context.Context, req *ordinalv1.SetFloorRequest) (*ordinalv1.SetFloorResponse, error) {
	key, err := s.checkKey(req.GetStoreName(), req.GetKey())
	if err != nil {
		return nil, err
	}
	if req.GetFloor() < 0 {
		return nil, invalid("floor is %d; it must not be negative", req.GetFloor())
	}
	return serveOrForward(ctx, s, key, func(inner context.Context) (*ordinalv1.SetFloorResponse, error) {
		hw, err := s.seq.SetFloor(inner, key, uint64(req.GetFloor()))
		return &ordinalv1.SetFloorResponse{HighWater: int64(hw)}, err
	}, func() (*ordinalv1.SetFloorResponse, error) {
		return s.fwd.setFloor(ctx, key, req.GetFloor())
	})
}

// serveOrForward serves a call only the leader may answer: here, or, when
// this node does not lead, on the leader (forward). A node that became the
// leader while the call waited to be forwarded serves it after all, within
// the caller's deadline, instead of waiting for a leader other than
// itself. Forwarded calls are never forwarded again.
func serveOrForward[T any](ctx context.Context, s *Server, key fsm.Key, local func(context.Context) (T, error), forward func() (T, error)) (T, error) {
	inner, cancel := withMargin(ctx)
	defer cancel()
	for {
		v, err := local(inner)
		if isNotLeader(err) && !forwarded(ctx) {
			v, err = forward()
			if errors.Is(err, errLeadsNow) && inner.Err() == nil {
				// Give the new leader a moment to finish taking over.
				select {
				case <-inner.Done():
				case <-time.After(leaderPollInterval):
				}
				continue
			}
			return v, err
		}
		if err != nil {
			var zero T
			return zero, toStatus(marginError(ctx, err), key)
		}
		return v, nil
	}
}

func (s *Server) nextFromRequest(ctx context.Context, store, name string, inc ordinalv1.SequencerOptions_AutoIncrement, count uint64) (int64, error) {
	key, err := s.checkKey(store, name)
	if err != nil {
		return 0, err
	}
	mode, err := modeOf(inc)
	if err != nil {
		return 0, err
	}
	if mode == alloc.Weak {
		inner, cancel := withMargin(ctx)
		defer cancel()
		first, err := s.seq.Next(inner, key, mode, count)
		if err != nil {
			return 0, toStatus(marginError(ctx, err), key)
		}
		return int64(first), nil
	}
	return serveOrForward(ctx, s, key, func(inner context.Context) (int64, error) {
		first, err := s.seq.Next(inner, key, mode, count)
		return int64(first), err
	}, func() (int64, error) {
		return s.fwd.next(ctx, key, count)
	})
}

// deadlineMargin is the share of a caller's remaining time kept back so
// that a call that cannot complete (no quorum, no leader) answers
// Unavailable, which says "retry elsewhere or later", before the caller's
// own deadline turns it into an uninformative DeadlineExceeded.
const (
	deadlineMargin    = 20 // percent
	maxDeadlineMargin = 250 * time.Millisecond
)

// marginError reports running out of the inner deadline, while the caller
// still has time, as the store being unavailable.
func marginError(caller context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && caller.Err() == nil {
		return fmt.Errorf("%w: no leader or quorum answered in time: %w", alloc.ErrUnavailable, err)
	}
	return err
}

// checkKey validates a key and that the node is ready to serve.
func (s *Server) checkKey(store, name string) (fsm.Key, error) {
	key, err := keyOf(store, name)
	if err != nil {
		return key, err
	}
	if !s.ready.Load() {
		return key, status.Error(codes.Unavailable, "node is starting and not yet part of a cluster with a leader: retry")
	}
	return key, nil
}

func isNotLeader(err error) bool { return errors.Is(err, alloc.ErrNotLeader) }

// runtimeServer serves Layotto's Runtime service; only GetNextId is
// implemented, every other method answers Unimplemented.
type runtimeServer struct {
	runtimev1.UnimplementedRuntimeServer
	s *Server
}

// GetNextId implements spec.proto.runtime.v1.Runtime/GetNextId.
func (r *runtimeServer) GetNextId(ctx context.Context, req *runtimev1.GetNextIdRequest) (*runtimev1.GetNextIdResponse, error) {
	inc, err := incrementOfLayotto(req.GetOptions().GetIncrement())
	if err != nil {
		return nil, err
	}
	id, err := r.s.nextFromRequest(ctx, req.GetStoreName(), req.GetKey(), inc, 1)
	if err != nil {
		return nil, err
	}
	return &runtimev1.GetNextIdResponse{NextId: id}, nil
}
