package server

import (
	"context"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/snowflake"
	"github.com/ordinal-dev/ordinal/transport"
)

// WorkerServer serves ordinal.v1.WorkerService on the peer port: members
// declare their Snowflake stores and get their worker IDs from the
// leader.
type WorkerServer struct {
	ordinalv1.UnimplementedWorkerServiceServer
	node *cluster.Node
}

// NewWorkerServer returns the WorkerService of node.
func NewWorkerServer(node *cluster.Node) *WorkerServer { return &WorkerServer{node: node} }

// AcquireWorker implements ordinal.v1.WorkerService. Only the node itself
// may ask, as its peer certificate names it; the leader answers (a
// follower refuses with Unavailable, and the caller asks the leader).
func (w *WorkerServer) AcquireWorker(ctx context.Context, req *ordinalv1.AcquireWorkerRequest) (*ordinalv1.AcquireWorkerResponse, error) {
	if err := requireSelf(ctx, "WorkerService.AcquireWorker", "acquire a worker ID", req.GetNodeId()); err != nil {
		return nil, err
	}
	switch {
	case req.GetIncarnation() == "" || len(req.GetIncarnation()) > fsm.MaxNodeFieldLen:
		return nil, status.Error(codes.InvalidArgument, "incarnation must be 1 to 1024 bytes")
	}
	decls := make([]cluster.SnowflakeDecl, 0, len(req.GetStores()))
	for _, d := range req.GetStores() {
		l, err := snowflake.ParseLayout(d.GetLayout())
		switch {
		case err != nil:
			return nil, status.Errorf(codes.InvalidArgument, "store %q: %v", d.GetStoreName(), err)
		case l.String() != d.GetLayout() || uint32(l.WorkerBits) != d.GetWorkerBits():
			return nil, status.Errorf(codes.InvalidArgument, "store %q: layout %q is not in canonical form (%s) or its worker bits %d do not match", d.GetStoreName(), d.GetLayout(), l, d.GetWorkerBits())
		}
		if d.GetStoreName() == "" {
			// The API's empty store name is the default store: a
			// declaration names its store.
			return nil, invalid("a Snowflake store declaration needs a store_name")
		}
		if _, err := keyOf(d.GetStoreName(), "k"); err != nil {
			return nil, err
		}
		decls = append(decls, cluster.SnowflakeDecl{Store: d.GetStoreName(), Layout: d.GetLayout(), WorkerBits: l.WorkerBits})
	}
	worker, err := w.node.AcquireWorkerFor(ctx, req.GetNodeId(), req.GetIncarnation(), decls)
	if err != nil {
		// A conflicting declaration answers FailedPrecondition, no
		// free worker ResourceExhausted (toStatus).
		return nil, clusterStatus(err)
	}
	return &ordinalv1.AcquireWorkerResponse{Worker: worker}, nil
}

// SnowflakeServer serves ordinal.v1.SnowflakeService on the client port.
type SnowflakeServer struct {
	ordinalv1.UnimplementedSnowflakeServiceServer
	layout func(store string) (snowflake.Layout, bool)
}

// NewSnowflakeServer returns a SnowflakeService that decodes with the
// layouts layout returns.
func NewSnowflakeServer(layout func(store string) (snowflake.Layout, bool)) *SnowflakeServer {
	return &SnowflakeServer{layout: layout}
}

// DecodeId implements ordinal.v1.SnowflakeService.
func (s *SnowflakeServer) DecodeId(_ context.Context, req *ordinalv1.DecodeIdRequest) (*ordinalv1.DecodeIdResponse, error) {
	key, err := keyOf(req.GetStoreName(), "k")
	if err != nil {
		return nil, err
	}
	l, ok := s.layout(key.Store)
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "store %q is not a Snowflake store: its IDs are counters, with nothing to decode", key.Store)
	}
	if req.GetId() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "id %d is negative; Snowflake IDs are not", req.GetId())
	}
	p, err := l.Decode(uint64(req.GetId()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &ordinalv1.DecodeIdResponse{UnixMs: p.Time.UnixMilli(), Worker: p.Worker, Sequence: p.Seq, Layout: l.String()}, nil
}

// checkTimeReserve lets a node reserve time for the Snowflake worker it
// holds, and for no other: the key must name a worker the calling node
// (as its peer certificate names it) holds in this node's applied state.
// Time is reserved in milliseconds, far more at once than any counter
// range, so the size limits of counters do not apply.
func (p *PeerServer) checkTimeReserve(ctx context.Context, req *ordinalv1.ReserveRequest) (fsm.Key, error) {
	key := fsm.Key{Store: req.GetStoreName(), Name: req.GetKey()}
	info, ok := transport.PeerFromContext(ctx)
	if !ok {
		return key, status.Error(codes.PermissionDenied, "time for a Snowflake worker is reserved on the peer port only")
	}
	w, err := strconv.ParseUint(req.GetKey(), 10, 64)
	if err != nil || snowflake.TimeKey(w) != key {
		return key, status.Errorf(codes.PermissionDenied, "%q is not a Snowflake worker's time; a node reserves time for its own worker only", req.GetKey())
	}
	for _, held := range p.node.Workers() {
		if held.ID != w || held.FreeAt != 0 {
			continue
		}
		if held.NodeID == info.NodeID {
			return key, nil
		}
		return key, status.Errorf(codes.PermissionDenied, "node %q asked for the time of Snowflake worker %d, which node %q holds; a node reserves time for its own worker only", info.NodeID, w, held.NodeID)
	}
	// Nobody holds it as this node applied the log: a leader that has
	// just taken over may not have applied the caller's acquisition yet.
	return key, status.Errorf(codes.Unavailable, "no node holds Snowflake worker %d as this node applied the log; retry once it has (a node reserves time for its own worker only)", w)
}
