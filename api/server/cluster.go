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
	"github.com/ordinal-dev/ordinal/snowflake"
	"github.com/ordinal-dev/ordinal/transport"
)

// ClusterServer implements ordinal.v1.ClusterService, the operators' service, over
// a cluster.Node. The daemon registers it on the client port, where the
// authorization interceptor admits only admins once security is
// configured, and on the peer port, where followers forward these calls to
// the leader.
type ClusterServer struct {
	ordinalv1.UnimplementedClusterServiceServer
	node *cluster.Node
}

// NewClusterServer returns the ClusterService of node.
func NewClusterServer(node *cluster.Node) *ClusterServer {
	return &ClusterServer{node: node}
}

// Join implements ordinal.v1.ClusterService.
func (c *ClusterServer) Join(ctx context.Context, req *ordinalv1.JoinRequest) (*ordinalv1.JoinResponse, error) {
	resp, err := c.node.Join(ctx, req)
	return resp, clusterStatus(err)
}

// Remove implements ordinal.v1.ClusterService.
func (c *ClusterServer) Remove(ctx context.Context, req *ordinalv1.RemoveRequest) (*ordinalv1.RemoveResponse, error) {
	if req.GetNodeId() == "" {
		return nil, invalid("node_id is required")
	}
	if err := c.node.Remove(ctx, req.GetNodeId()); err != nil {
		return nil, clusterStatus(err)
	}
	return &ordinalv1.RemoveResponse{}, nil
}

// Members implements ordinal.v1.ClusterService.
func (c *ClusterServer) Members(ctx context.Context, _ *ordinalv1.MembersRequest) (*ordinalv1.MembersResponse, error) {
	resp, err := c.node.Members(ctx)
	return resp, clusterStatus(err)
}

// Leader implements ordinal.v1.ClusterService.
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

// TransferLeadership implements ordinal.v1.ClusterService.
func (c *ClusterServer) TransferLeadership(ctx context.Context, req *ordinalv1.TransferLeadershipRequest) (*ordinalv1.TransferLeadershipResponse, error) {
	id, err := c.node.TransferLeadership(ctx, req.GetNodeId())
	if err != nil {
		return nil, clusterStatus(err)
	}
	return &ordinalv1.TransferLeadershipResponse{NodeId: id}, nil
}

// Backup implements ordinal.v1.ClusterService: the leader streams a backup (the
// file format of package backup) in chunks of at most backupChunk bytes;
// a follower relays the leader's. A call that arrived on the peer port
// was forwarded by a follower already and is not forwarded again.
func (c *ClusterServer) Backup(_ *ordinalv1.BackupRequest, stream ordinalv1.ClusterService_BackupServer) error {
	_, forwarded := transport.PeerFromContext(stream.Context())
	w := &chunkSender{send: stream.Send}
	if err := c.node.Backup(stream.Context(), w, !forwarded); err != nil {
		return clusterStatus(err)
	}
	return clusterStatus(w.flush())
}

// backupChunk is the most bytes one BackupResponse carries, well below
// gRPC's default 4 MiB message limit.
const backupChunk = 256 << 10

// chunkSender collects a stream of bytes into BackupResponses of backupChunk
// bytes. gRPC encodes a message before Send returns, so the buffer is
// reused.
type chunkSender struct {
	send func(*ordinalv1.BackupResponse) error
	buf  []byte
}

func (s *chunkSender) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if s.buf == nil {
			s.buf = make([]byte, 0, backupChunk)
		}
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf, p = s.buf[:len(s.buf)+k], p[k:]
		if len(s.buf) == cap(s.buf) {
			if err := s.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// flush sends what is buffered.
func (s *chunkSender) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	err := s.send(&ordinalv1.BackupResponse{Data: s.buf})
	s.buf = s.buf[:0]
	return err
}

// Keys implements ordinal.v1.ClusterService: a page of keys with their
// high-water marks, from this node's state machine as it applied the log
// (a follower's may trail the leader's). Never forwarded, so that an
// operator can list any node's keys; see cluster.Node.Keys.
func (c *ClusterServer) Keys(ctx context.Context, req *ordinalv1.KeysRequest) (*ordinalv1.KeysResponse, error) {
	resp, err := c.node.Keys(ctx, req)
	return resp, clusterStatus(err)
}

// PeerServer implements ordinal.v1.PeerService, the calls nodes make to each
// other. The daemon registers it only on the peer port, so every caller
// passed the peer handshake: it holds a peer certificate naming its node,
// or the cluster token, or security is off.
type PeerServer struct {
	ordinalv1.UnimplementedPeerServiceServer
	node     *cluster.Node
	maxCount uint64
	draining chan struct{} // closed by Drain
	drain    sync.Once
}

// MaxReserve bounds the IDs one forwarded reservation may take, whatever
// the calling node asks for: it is above the allocator's largest adaptive
// range (alloc.Config.MaxReservation, 4M by default), so no legitimate
// node reaches it, and it keeps a misbehaving one from exhausting a key.
const MaxReserve = 1 << 24

// NewPeerServer returns the PeerService of node. maxCount is the largest
// block a caller may need (server.Config.MaxCount; 0 means
// DefaultMaxCount).
func NewPeerServer(node *cluster.Node, maxCount uint64) *PeerServer {
	if maxCount == 0 {
		maxCount = DefaultMaxCount
	}
	return &PeerServer{node: node, maxCount: maxCount, draining: make(chan struct{})}
}

// Status implements ordinal.v1.PeerService.
func (p *PeerServer) Status(context.Context, *ordinalv1.StatusRequest) (*ordinalv1.StatusResponse, error) {
	return p.node.Status(), nil
}

// Join implements ordinal.v1.PeerService: a node asks to be admitted. It may ask
// only for itself: the node ID must be the one the peer handshake
// established (with peer TLS, the one its certificate names).
func (p *PeerServer) Join(ctx context.Context, req *ordinalv1.PeerServiceJoinRequest) (*ordinalv1.PeerServiceJoinResponse, error) {
	if err := requireSelf(ctx, "PeerService.Join", "ask to join", req.GetNodeId()); err != nil {
		return nil, err
	}
	resp, err := p.node.Join(ctx, clusterJoinRequest(req))
	if err != nil {
		return nil, clusterStatus(err)
	}
	return &ordinalv1.PeerServiceJoinResponse{ClusterId: resp.GetClusterId()}, nil
}

// requireSelf refuses a peer-port call of method about node nodeID unless
// the connection comes from that node, as the peer handshake identified
// it: a node may only do what to do for itself.
func requireSelf(ctx context.Context, method, what, nodeID string) error {
	info, ok := transport.PeerFromContext(ctx)
	switch {
	case !ok:
		return status.Errorf(codes.PermissionDenied, "%s is served on the peer port only", method)
	case nodeID != info.NodeID:
		return status.Errorf(codes.PermissionDenied,
			"a node may only %s as itself: this connection is from node %q, the request is for %q", what, info.NodeID, nodeID)
	}
	return nil
}

// clusterJoinRequest is a PeerService.Join request as the
// ClusterService.Join request the node serves (and forwards to the leader):
// the two messages have the same fields (TestRenamedMessagesMatch).
func clusterJoinRequest(req *ordinalv1.PeerServiceJoinRequest) *ordinalv1.JoinRequest {
	return &ordinalv1.JoinRequest{
		NodeId:    req.GetNodeId(),
		RaftAddr:  req.GetRaftAddr(),
		GrpcAddr:  req.GetGrpcAddr(),
		HasState:  req.GetHasState(),
		ClusterId: req.GetClusterId(),
	}
}

// Publish implements ordinal.v1.PeerService. Anyone on the peer port may ask: the
// leader takes the address from the member itself.
func (p *PeerServer) Publish(ctx context.Context, req *ordinalv1.PublishRequest) (*ordinalv1.PublishResponse, error) {
	addr, err := p.node.Publish(ctx, req.GetNodeId())
	if err != nil {
		return nil, clusterStatus(err)
	}
	return &ordinalv1.PublishResponse{GrpcAddr: addr}, nil
}

// ConfirmTerm implements ordinal.v1.PeerService: the answer is this node's
// term, read when the request arrives, and its ID; a node that is not a
// voter in its own configuration refuses (FailedPrecondition). The
// leader's proof holds only if a majority answers with a term no newer
// than its own.
func (p *PeerServer) ConfirmTerm(context.Context, *ordinalv1.ConfirmTermRequest) (*ordinalv1.ConfirmTermResponse, error) {
	term, err := p.confirmableTerm()
	if err != nil {
		return nil, err
	}
	return &ordinalv1.ConfirmTermResponse{Term: term, NodeId: p.node.NodeID(), Incarnation: p.node.Incarnation()}, nil
}

// confirmableTerm is the node's answer to a proof request, or the gRPC
// error that refuses it.
func (p *PeerServer) confirmableTerm() (uint64, error) {
	term, err := p.node.ConfirmableTerm()
	switch {
	case errors.Is(err, cluster.ErrNotVoter):
		return 0, status.Errorf(codes.FailedPrecondition, "%v: it cannot confirm a leader's term", err)
	case err != nil:
		return 0, status.Errorf(codes.Unavailable, "%v", err)
	}
	return term, nil
}

// ConfirmTermStream implements ordinal.v1.PeerService: ConfirmTerm for every
// request on the stream, each answer read after its request arrived. The
// stream ends when the server drains, so that a leader's open proof stream
// does not hold this node's shutdown; the leader asks with unary calls
// until it reconnects.
func (p *PeerServer) ConfirmTermStream(stream ordinalv1.PeerService_ConfirmTermStreamServer) error {
	requests := receiveAll(stream)
	for {
		req, err := requests.next(p.draining)
		if req == nil {
			return err
		}
		term, err := p.confirmableTerm()
		if err != nil {
			return err
		}
		resp := &ordinalv1.ConfirmTermStreamResponse{Term: term, Seq: req.GetSeq(), NodeId: p.node.NodeID(), Incarnation: p.node.Incarnation()}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// Drain ends every ConfirmTermStream; the daemon calls it before stopping
// the peer gRPC server.
func (p *PeerServer) Drain() {
	p.drain.Do(func() { close(p.draining) })
}

// WaitApplied implements ordinal.v1.PeerService: it answers once this node
// applied the log up to the index asked for, within the caller's deadline.
func (p *PeerServer) WaitApplied(ctx context.Context, req *ordinalv1.WaitAppliedRequest) (*ordinalv1.WaitAppliedResponse, error) {
	applied, err := p.node.WaitApplied(ctx, req.GetIndex())
	if err != nil {
		return nil, clusterStatus(err)
	}
	return &ordinalv1.WaitAppliedResponse{AppliedIndex: applied, NodeId: p.node.NodeID()}, nil
}

// Reserve implements ordinal.v1.PeerService. It is never forwarded: a node
// that forwarded a reservation to a node that no longer leads retries with
// its own, newer view of the leader.
func (p *PeerServer) Reserve(ctx context.Context, req *ordinalv1.ReserveRequest) (*ordinalv1.ReserveResponse, error) {
	key, err := p.checkReserve(ctx, req)
	if err != nil {
		return nil, err
	}
	r, err := p.node.ReserveLocal(ctx, key, req.GetWant(), req.GetNeed())
	if err != nil {
		return nil, toStatus(err, key)
	}
	return &ordinalv1.ReserveResponse{First: r.First, Last: r.Last}, nil
}

// checkReserve validates one reservation a node asks for.
func (p *PeerServer) checkReserve(ctx context.Context, req *ordinalv1.ReserveRequest) (fsm.Key, error) {
	need, want := req.GetNeed(), req.GetWant()
	if need == 0 || need > want {
		return fsm.Key{}, invalid("reserve needs 1 <= need <= want, got need %d, want %d", need, want)
	}
	if req.GetStoreName() == snowflake.TimeStore {
		// A node reserving time for its Snowflake worker (snowflake.go).
		return p.checkTimeReserve(ctx, req)
	}
	key, err := keyOf(req.GetStoreName(), req.GetKey())
	if err != nil {
		return key, err
	}
	switch {
	case need > p.maxCount:
		return key, invalid("reserve: need is %d; it must be at most %d, as for GetNextIds", need, p.maxCount)
	case want > max(need, MaxReserve):
		return key, invalid("reserve: want is %d; a reservation takes at most %d ids", want, uint64(MaxReserve))
	}
	return key, nil
}

// maxReserveBatch bounds the reservations of one ReserveBatch call.
const maxReserveBatch = 4096

// ReserveBatch implements ordinal.v1.PeerService: every valid reservation is
// committed through this node's log together with whatever else waits;
// each answer carries its own code. Never forwarded, as Reserve.
func (p *PeerServer) ReserveBatch(ctx context.Context, req *ordinalv1.ReserveBatchRequest) (*ordinalv1.ReserveBatchResponse, error) {
	rs := req.GetReservations()
	if len(rs) > maxReserveBatch {
		return nil, invalid("reserve batch of %d; at most %d", len(rs), maxReserveBatch)
	}
	out := &ordinalv1.ReserveBatchResponse{Results: make([]*ordinalv1.ReserveResult, len(rs))}
	var ops []fsm.Op
	var at []int // index in rs of each op
	for i, r := range rs {
		key, err := p.checkReserve(ctx, r)
		if err != nil {
			st := status.Convert(err)
			out.Results[i] = &ordinalv1.ReserveResult{Code: int32(st.Code()), Message: st.Message()}
			continue
		}
		ops = append(ops, fsm.Op{Kind: fsm.OpReserve, Key: key, Want: r.GetWant(), Need: r.GetNeed()})
		at = append(at, i)
	}
	if len(ops) > 0 {
		results, err := p.node.ReserveBatch(ctx, ops)
		if err != nil {
			return nil, toStatus(err, fsm.Key{})
		}
		for j, res := range results {
			rr := &ordinalv1.ReserveResult{First: res.First, Last: res.Last}
			if res.Err != nil {
				st := status.Convert(toStatus(res.Err, ops[j].Key))
				rr = &ordinalv1.ReserveResult{Code: int32(st.Code()), Message: st.Message()}
			}
			out.Results[at[j]] = rr
		}
	}
	return out, nil
}

// clusterStatus maps the cluster package's errors to status codes: the one
// place where membership errors become gRPC codes.
func clusterStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, cluster.ErrInvalidRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, cluster.ErrForeignCluster), errors.Is(err, cluster.ErrLastVoter), errors.Is(err, cluster.ErrMoveLeader),
		errors.Is(err, cluster.ErrNoOtherVoter):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, cluster.ErrUnknownNode):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, cluster.ErrAddressInUse):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, transport.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, alloc.ErrNotLeader), errors.Is(err, alloc.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "cluster cannot serve this call now, retry: %v", err)
	}
	return toStatus(err, fsm.Key{})
}
