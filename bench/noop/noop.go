// Package noop is the ceiling ordinal's benchmarks are measured against: a
// gRPC server implementing ordinal.v1.SequencerService's GetNextId, GetNextIds and
// NextIdStream on the same gRPC stack as ordinal, but handing out IDs from
// one in-memory atomic counter — no Raft, no leadership proof, no
// forwarding. Its IDs are unique and increasing across all keys, so the
// benchmark's verifier accepts them in every mode.
//
// ListenTLS serves the same over TLS, mutual when the configuration asks
// for client certificates: the ceiling that ordinal's client port with TLS
// on is measured against. Neither asks for credentials beyond the
// handshake: the ceiling is the cost of the RPC and its transport alone.
package noop

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
)

// Server is the no-op Sequencer.
type Server struct {
	ordinalv1.UnimplementedSequencerServiceServer
	last atomic.Int64
}

// take returns the first of count fresh IDs.
func (s *Server) take(key string, count int64) (int64, error) {
	if key == "" {
		return 0, status.Error(codes.InvalidArgument, "key is empty")
	}
	if count < 1 {
		return 0, status.Errorf(codes.InvalidArgument, "count is %d; it must be at least 1", count)
	}
	return s.last.Add(count) - count + 1, nil
}

// GetNextId implements ordinal.v1.SequencerService.
func (s *Server) GetNextId(_ context.Context, req *ordinalv1.GetNextIdRequest) (*ordinalv1.GetNextIdResponse, error) {
	id, err := s.take(req.GetKey(), 1)
	if err != nil {
		return nil, err
	}
	return &ordinalv1.GetNextIdResponse{NextId: id}, nil
}

// GetNextIds implements ordinal.v1.SequencerService.
func (s *Server) GetNextIds(_ context.Context, req *ordinalv1.GetNextIdsRequest) (*ordinalv1.GetNextIdsResponse, error) {
	first, err := s.take(req.GetKey(), req.GetCount())
	if err != nil {
		return nil, err
	}
	return &ordinalv1.GetNextIdsResponse{FirstId: first, Count: req.GetCount()}, nil
}

// NextIdStream implements ordinal.v1.SequencerService, answering each request in
// turn as it arrives.
func (s *Server) NextIdStream(stream ordinalv1.SequencerService_NextIdStreamServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := &ordinalv1.NextIdStreamResponse{Seq: req.GetSeq()}
		first, err := s.take(req.GetKey(), req.GetCount())
		if err != nil {
			st := status.Convert(err)
			resp.Code, resp.Message = int32(st.Code()), st.Message()
		} else {
			resp.FirstId, resp.Count = first, req.GetCount()
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// Listener is a running no-op server.
type Listener struct {
	grpc *grpc.Server
	lis  net.Listener
	done chan error
}

// Listen starts a no-op server on addr (port 0 picks a free port). It
// also serves gRPC health, SERVING from the start, so that the tools that
// wait for an ordinal node wait for it too.
func Listen(addr string) (*Listener, error) {
	return listen(addr)
}

// ListenTLS is Listen serving over TLS configured by cfg, for example
// tlsutil.ServerConfig's: with cfg.ClientAuth requiring a client
// certificate it is the ceiling of a node serving mutual TLS
// (serve --tls-client-ca-file). The certificate is checked once per
// connection, in the handshake, as on a node; every call then pays the
// record encryption both ways. cfg must hold a certificate
// (Certificates, GetCertificate or GetConfigForClient).
func ListenTLS(addr string, cfg *tls.Config) (*Listener, error) {
	if cfg == nil || len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil {
		return nil, errors.New("noop: ListenTLS needs a TLS configuration with a server certificate")
	}
	return listen(addr, grpc.Creds(credentials.NewTLS(cfg)))
}

func listen(addr string, opts ...grpc.ServerOption) (*Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	g := grpc.NewServer(opts...)
	ordinalv1.RegisterSequencerServiceServer(g, &Server{})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(ordinalv1.SequencerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	l := &Listener{grpc: g, lis: lis, done: make(chan error, 1)}
	go func() { l.done <- g.Serve(lis) }()
	return l, nil
}

// Addr is the address the server listens on.
func (l *Listener) Addr() string { return l.lis.Addr().String() }

// Done is sent the server's error, nil after Close, when it stops serving.
func (l *Listener) Done() <-chan error { return l.done }

// Close stops the server at once.
func (l *Listener) Close() { l.grpc.Stop() }
