package server

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/fsm"
)

// ClusterServer implements ordinal.v1.Cluster over a cluster.Node.
type ClusterServer struct {
	ordinalv1.UnimplementedClusterServer
	node     *cluster.Node
	draining chan struct{} // closed by Drain
	drain    sync.Once
}

// NewClusterServer returns the Cluster service of node.
func NewClusterServer(node *cluster.Node) *ClusterServer {
	return &ClusterServer{node: node, draining: make(chan struct{})}
}

// Join implements ordinal.v1.Cluster.
func (c *ClusterServer) Join(ctx context.Context, req *ordinalv1.JoinRequest) (*ordinalv1.JoinResponse, error) {
	resp, err := c.node.Join(ctx, req)
	return resp, clusterStatus(err)
}

// Remove implements ordinal.v1.Cluster.
func (c *ClusterServer) Remove(ctx context.Context, req *ordinalv1.RemoveRequest) (*ordinalv1.RemoveResponse, error) {
	if req.GetNodeId() == "" {
		return nil, invalid("node_id is required")
	}
	if err := c.node.Remove(ctx, req.GetNodeId()); err != nil {
		return nil, clusterStatus(err)
	}
	return &ordinalv1.RemoveResponse{}, nil
}

// Members implements ordinal.v1.Cluster.
func (c *ClusterServer) Members(ctx context.Context, _ *ordinalv1.MembersRequest) (*ordinalv1.MembersResponse, error) {
	resp, err := c.node.Members(ctx)
	return resp, clusterStatus(err)
}

// Leader implements ordinal.v1.Cluster.
func (c *ClusterServer) Leader(_ context.Context, _ *ordinalv1.LeaderRequest) (*ordinalv1.LeaderResponse, error) {
	st := c.node.Status()
	if st.GetLeaderId() == "" {
		return nil, status.Error(codes.Unavailable, "no leader is elected (election in progress or quorum lost): retry")
	}
	resp := &ordinalv1.LeaderResponse{NodeId: st.GetLeaderId(), GrpcAddr: st.GetLeaderGrpcAddr(), Term: st.GetTerm()}
	for _, s := range st.GetServers() {
		if s.GetNodeId() == st.GetLeaderId() {
			resp.RaftAddr = s.GetRaftAddr()
		}
	}
	return resp, nil
}

// TransferLeadership implements ordinal.v1.Cluster.
func (c *ClusterServer) TransferLeadership(ctx context.Context, req *ordinalv1.TransferLeadershipRequest) (*ordinalv1.TransferLeadershipResponse, error) {
	id, err := c.node.TransferLeadership(ctx, req.GetNodeId())
	if err != nil {
		return nil, clusterStatus(err)
	}
	return &ordinalv1.TransferLeadershipResponse{NodeId: id}, nil
}

// Status implements ordinal.v1.Cluster.
func (c *ClusterServer) Status(context.Context, *ordinalv1.StatusRequest) (*ordinalv1.StatusResponse, error) {
	return c.node.Status(), nil
}

// ConfirmTerm implements ordinal.v1.Cluster: the answer is this node's
// term, read when the request arrives, and its ID; a node that is not a
// voter in its own configuration refuses (FailedPrecondition). The
// leader's proof holds only if a majority answers with a term no newer
// than its own.
func (c *ClusterServer) ConfirmTerm(context.Context, *ordinalv1.ConfirmTermRequest) (*ordinalv1.ConfirmTermResponse, error) {
	term, err := c.confirmableTerm()
	if err != nil {
		return nil, err
	}
	return &ordinalv1.ConfirmTermResponse{Term: term, NodeId: c.node.NodeID(), Incarnation: c.node.Incarnation()}, nil
}

// confirmableTerm is the node's answer to a proof request, or the gRPC
// error that refuses it.
func (c *ClusterServer) confirmableTerm() (uint64, error) {
	term, err := c.node.ConfirmableTerm()
	switch {
	case errors.Is(err, cluster.ErrNotVoter):
		return 0, status.Errorf(codes.FailedPrecondition, "%v: it cannot confirm a leader's term", err)
	case err != nil:
		return 0, status.Errorf(codes.Unavailable, "%v", err)
	}
	return term, nil
}

// ConfirmTermStream implements ordinal.v1.Cluster: ConfirmTerm for every
// request on the stream, each answer read after its request arrived. The
// stream ends when the server drains, so that a leader's open proof stream
// does not hold this node's shutdown; the leader asks with unary calls
// until it reconnects.
func (c *ClusterServer) ConfirmTermStream(stream ordinalv1.Cluster_ConfirmTermStreamServer) error {
	requests := receiveAll(stream)
	for {
		req, err := requests.next(c.draining)
		if req == nil {
			return err
		}
		term, err := c.confirmableTerm()
		if err != nil {
			return err
		}
		resp := &ordinalv1.ConfirmTermResponse{Term: term, Seq: req.GetSeq(), NodeId: c.node.NodeID(), Incarnation: c.node.Incarnation()}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// Drain ends every ConfirmTermStream; the daemon calls it before stopping
// the gRPC server.
func (c *ClusterServer) Drain() {
	c.drain.Do(func() { close(c.draining) })
}

// Reserve implements ordinal.v1.Cluster. It is never forwarded: a node
// that forwarded a reservation to a node that no longer leads retries with
// its own, newer view of the leader.
func (c *ClusterServer) Reserve(ctx context.Context, req *ordinalv1.ReserveRequest) (*ordinalv1.ReserveResponse, error) {
	key, err := keyOf(req.GetStoreName(), req.GetKey())
	if err != nil {
		return nil, err
	}
	if req.GetNeed() == 0 || req.GetNeed() > req.GetWant() {
		return nil, invalid("reserve needs 1 <= need <= want, got need %d, want %d", req.GetNeed(), req.GetWant())
	}
	r, err := c.node.ReserveLocal(ctx, key, req.GetWant(), req.GetNeed())
	if err != nil {
		return nil, toStatus(err, key)
	}
	return &ordinalv1.ReserveResponse{First: r.First, Last: r.Last}, nil
}

// clusterStatus maps membership errors to status codes.
func clusterStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, cluster.ErrForeignCluster):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, cluster.ErrUnknownNode):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, cluster.ErrAddressInUse):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, alloc.ErrNotLeader), errors.Is(err, alloc.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "cluster cannot serve this call now, retry: %v", err)
	}
	return toStatus(err, fsm.Key{})
}
