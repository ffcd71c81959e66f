package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// drainingHealth is grpc-go's health service with Watch streams that end
// when the node drains (Server.Drain). A Watch stream never ends by
// itself, so without this a client that watches a node's health (as
// package client does, to find the leader) would hold the node's graceful
// stop for its whole timeout, while Raft still counted the node as the
// leader.
type drainingHealth struct {
	*health.Server
	draining <-chan struct{}
}

// Watch implements grpc.health.v1.Health/Watch: health.Server's, until
// the client goes away or the node drains; then it answers Unavailable,
// which says to ask another node.
func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.draining:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := h.Server.Watch(req, &watchStream{Health_WatchServer: stream, ctx: ctx})
	select {
	case <-h.draining:
		return status.Error(codes.Unavailable, "the node is stopping")
	default:
		return err
	}
}

// watchStream is a Watch stream with a context of its own.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (s *watchStream) Context() context.Context { return s.ctx }
