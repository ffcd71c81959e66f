package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/transport"
)

const (
	// promoteInterval is how often the leader checks whether non-voters
	// have caught up.
	promoteInterval = 250 * time.Millisecond
	// promoteMaxLag is how many entries a non-voter may trail the leader's
	// commit index and still be promoted.
	promoteMaxLag = 16
	statusTimeout = 500 * time.Millisecond
)

// isFinal reports whether a membership error will not go away by retrying.
func isFinal(err error) bool {
	for _, final := range []error{ErrForeignCluster, ErrUnknownNode, ErrAddressInUse, ErrInvalidRequest, ErrLastVoter, ErrMoveLeader} {
		if errors.Is(err, final) {
			return true
		}
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.NotFound,
		codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// Join admits a node, forwarding to the leader when this node does not
// lead. A new node enters as a non-voter; promoteNonVoters makes it a voter
// once it caught up. A member that comes back without state is removed
// first and then re-admitted as a new non-voter: it forgot its log and its
// votes, so it must not count towards any quorum until it has caught up
// again. Callers authenticate the request first: the API admits a node only
// for an admin, or for the node itself over the peer port.
func (n *Node) Join(ctx context.Context, req *ordinalv1.JoinRequest) (*ordinalv1.JoinResponse, error) {
	if err := validateJoin(req); err != nil {
		return nil, err
	}
	if !n.isStarted() {
		return nil, ErrNotReady
	}
	if !n.IsLeader() {
		c, err := n.leaderConn()
		if err != nil {
			return nil, err
		}
		return ordinalv1.NewClusterServiceClient(c).Join(ctx, req)
	}
	if id := req.GetClusterId(); id != "" && id != n.fsm.ClusterID() {
		return nil, fmt.Errorf("%w: node %s belongs to cluster %s, this is cluster %s; clusters never merge: wipe its data directory to move it",
			ErrForeignCluster, req.GetNodeId(), id, n.fsm.ClusterID())
	}
	// The request's grpc_addr is not recorded: the node publishes its own
	// address once it runs (Publish), so that no call but the node's own
	// can change where operators and clients find it.
	if err := n.admit(ctx, req); err != nil {
		return nil, err
	}
	return &ordinalv1.JoinResponse{ClusterId: n.fsm.ClusterID()}, nil
}

// maxAddrLen bounds the addresses a Join may record.
const maxAddrLen = 255

// validateJoin refuses node IDs and addresses the cluster could not use or
// that do not belong in its configuration.
func validateJoin(req *ordinalv1.JoinRequest) error {
	if err := transport.ValidateNodeID(req.GetNodeId()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if err := validateAddr("raft_addr", req.GetRaftAddr()); err != nil {
		return err
	}
	if req.GetGrpcAddr() != "" {
		return validateAddr("grpc_addr", req.GetGrpcAddr())
	}
	return nil
}

// validateAddr checks that addr is host:port with a port in 1-65535 and
// no more than maxAddrLen printable characters.
func validateAddr(field, addr string) error {
	if addr == "" || len(addr) > maxAddrLen {
		return fmt.Errorf("%w: %s must be host:port of at most %d characters", ErrInvalidRequest, field, maxAddrLen)
	}
	for _, c := range addr {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("%w: %s %q has a character that is not printable ASCII", ErrInvalidRequest, field, addr)
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("%w: %s %q is not host:port", ErrInvalidRequest, field, addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%w: %s %q has no valid port", ErrInvalidRequest, field, addr)
	}
	return nil
}

// Publish records the client gRPC address of member nodeID, as the node
// itself reports it: the leader asks the node, at its address in the Raft
// configuration, for its Status. So only the node can change what the
// cluster records for it, whoever asks for the refresh. Forwarded to the
// leader.
func (n *Node) Publish(ctx context.Context, nodeID string) (string, error) {
	if err := transport.ValidateNodeID(nodeID); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if !n.isStarted() {
		return "", ErrNotReady
	}
	if !n.IsLeader() {
		c, err := n.leaderConn()
		if err != nil {
			return "", err
		}
		resp, err := ordinalv1.NewPeerServiceClient(c).Publish(ctx, &ordinalv1.PublishRequest{NodeId: nodeID})
		return resp.GetGrpcAddr(), err
	}
	if nodeID == n.cfg.NodeID {
		return n.cfg.GRPCAdvertise, n.ensureMetadata(ctx)
	}
	cfg, err := n.configuration()
	if err != nil {
		return "", err
	}
	s, ok := findServer(cfg, raft.ServerID(nodeID))
	if !ok {
		return "", fmt.Errorf("%w: node %s (was it removed? wipe its data directory and start it with --join to add it again)", ErrUnknownNode, nodeID)
	}
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := n.peers.status(sctx, nodeID, string(s.Address))
	if err != nil {
		return "", fmt.Errorf("ask %s for its address: %w", nodeID, fromStatus(err))
	}
	addr := st.GetGrpcAddr()
	if addr == "" {
		return "", nil
	}
	if err := validateAddr("grpc_addr", addr); err != nil {
		return "", err
	}
	if n.fsm.NodeAddr(nodeID) != addr {
		op := fsm.Op{Kind: fsm.OpSetNode, NodeID: nodeID, Addr: addr}
		if _, err := n.apply(ctx, fsm.Command{Ops: []fsm.Op{op}}); err != nil {
			return "", err
		}
	}
	return addr, nil
}

func (n *Node) admit(ctx context.Context, req *ordinalv1.JoinRequest) error {
	id, addr := raft.ServerID(req.GetNodeId()), raft.ServerAddress(req.GetRaftAddr())
	cfg, err := n.configuration()
	if err != nil {
		return err
	}
	var existing *raft.Server
	for i, s := range cfg.Servers {
		if s.ID != id && s.Address == addr {
			return fmt.Errorf("%w: raft address %s belongs to member %s; remove %s first if it is gone", ErrAddressInUse, addr, s.ID, s.ID)
		}
		if s.ID == id {
			existing = &cfg.Servers[i]
		}
	}
	switch {
	case existing != nil && id == raft.ServerID(n.cfg.NodeID) && (existing.Address != addr || !req.GetHasState()):
		// This node runs, and leads, at its address with its data: a
		// request to move it or to re-admit it as a node that lost its
		// data does not come from it. A node that really moved or lost
		// its data restarts and is then not the leader.
		return fmt.Errorf("%w: node %s leads this cluster at %s with its data; a node moves or is replaced by restarting", ErrMoveLeader, id, existing.Address)
	case existing == nil:
		n.logger.Info("adding node as non-voter", "node_id", id, "raft_addr", addr)
		return n.await(ctx, n.raft.AddNonvoter(id, addr, 0, n.cfg.ApplyTimeout))
	case !req.GetHasState():
		n.logger.Warn("member came back with an empty data directory; re-admitting it as a new non-voter",
			"node_id", id, "raft_addr", addr)
		if err := n.await(ctx, n.raft.RemoveServer(id, 0, n.cfg.ApplyTimeout)); err != nil {
			return err
		}
		return n.await(ctx, n.raft.AddNonvoter(id, addr, 0, n.cfg.ApplyTimeout))
	case existing.Address != addr && existing.Suffrage == raft.Voter:
		n.logger.Info("member moved", "node_id", id, "from", existing.Address, "to", addr)
		n.noteRemoval()
		return n.await(ctx, n.raft.AddVoter(id, addr, 0, n.cfg.ApplyTimeout))
	case existing.Address != addr:
		return n.await(ctx, n.raft.AddNonvoter(id, addr, 0, n.cfg.ApplyTimeout))
	}
	return nil
}

// Remove takes a member out of the cluster, forwarding to the leader when
// this node does not lead. Removing the leader first hands leadership to
// another voter, which then removes it.
func (n *Node) Remove(ctx context.Context, nodeID string) error {
	if !n.isStarted() {
		return ErrNotReady
	}
	if !n.IsLeader() {
		c, err := n.leaderConn()
		if err != nil {
			return err
		}
		_, err = ordinalv1.NewClusterServiceClient(c).Remove(ctx, &ordinalv1.RemoveRequest{NodeId: nodeID})
		return err
	}
	cfg, err := n.configuration()
	if err != nil {
		return err
	}
	if !hasServer(cfg, raft.ServerID(nodeID)) {
		return fmt.Errorf("%w: node %s", ErrUnknownNode, nodeID)
	}
	if nodeID == n.cfg.NodeID {
		return n.removeSelf(ctx, cfg)
	}
	n.logger.Info("removing member", "node_id", nodeID)
	n.noteRemoval()
	if err := n.await(ctx, n.raft.RemoveServer(raft.ServerID(nodeID), 0, n.cfg.ApplyTimeout)); err != nil {
		return err
	}
	// Its Snowflake worker ID is freed once the time reserved for it and
	// WorkerHold have passed (fsm/DESIGN.md, "Release and reuse").
	_, err = n.apply(ctx, fsm.Command{Ops: []fsm.Op{{Kind: fsm.OpRemoveNode, NodeID: nodeID}, n.releaseWorkerOp(nodeID)}})
	return err
}

func (n *Node) removeSelf(ctx context.Context, cfg raft.Configuration) error {
	if countVoters(cfg) < 2 {
		return fmt.Errorf("%w: the cluster would have no members left", ErrLastVoter)
	}
	n.logger.Info("transferring leadership before removing this node")
	if err := n.await(ctx, n.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("transfer leadership before removal: %w", err)
	}
	for {
		if id, _ := n.Leader(); id != "" && id != n.cfg.NodeID {
			return n.Remove(ctx, n.cfg.NodeID)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for the new leader: %w", err)
		}
	}
}

// TransferLeadership moves leadership to nodeID, or to the most up-to-date
// voter when nodeID is empty, and returns the new leader's ID.
func (n *Node) TransferLeadership(ctx context.Context, nodeID string) (string, error) {
	if !n.isStarted() {
		return "", ErrNotReady
	}
	if !n.IsLeader() {
		c, err := n.leaderConn()
		if err != nil {
			return "", err
		}
		resp, err := ordinalv1.NewClusterServiceClient(c).TransferLeadership(ctx, &ordinalv1.TransferLeadershipRequest{NodeId: nodeID})
		return resp.GetNodeId(), err
	}
	cfg, err := n.configuration()
	if err != nil {
		return "", err
	}
	var f raft.Future
	if nodeID == "" {
		if countVoters(cfg) < 2 {
			return "", fmt.Errorf("%w: there is no other voter to hand leadership to", ErrNoOtherVoter)
		}
		f = n.raft.LeadershipTransfer()
	} else {
		s, ok := findServer(cfg, raft.ServerID(nodeID))
		if !ok || s.Suffrage != raft.Voter {
			return "", fmt.Errorf("%w: node %s is not a voter of this cluster", ErrUnknownNode, nodeID)
		}
		if nodeID == n.cfg.NodeID {
			return nodeID, nil
		}
		f = n.raft.LeadershipTransferToServer(s.ID, s.Address)
	}
	if err := n.await(ctx, f); err != nil {
		return "", err
	}
	for {
		if id, _ := n.Leader(); id != "" && id != n.cfg.NodeID {
			return id, nil
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// Members lists the members with how far each trails the leader,
// forwarding to the leader when this node does not lead.
func (n *Node) Members(ctx context.Context) (*ordinalv1.MembersResponse, error) {
	if !n.isStarted() {
		return nil, ErrNotReady
	}
	if !n.IsLeader() {
		c, err := n.leaderConn()
		if err != nil {
			return nil, err
		}
		return ordinalv1.NewClusterServiceClient(c).Members(ctx, &ordinalv1.MembersRequest{})
	}
	cfg, err := n.configuration()
	if err != nil {
		return nil, err
	}
	commit := n.raft.CommitIndex()
	nodes := n.fsm.Nodes()
	members := make([]*ordinalv1.Member, len(cfg.Servers))
	var wg sync.WaitGroup
	for i, s := range cfg.Servers {
		m := &ordinalv1.Member{
			NodeId:   string(s.ID),
			RaftAddr: string(s.Address),
			GrpcAddr: nodes[string(s.ID)],
			Voter:    s.Suffrage == raft.Voter,
			Leader:   string(s.ID) == n.cfg.NodeID,
		}
		members[i] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			applied, ok := n.appliedIndexOf(ctx, m.NodeId, m.RaftAddr)
			m.Reachable, m.AppliedIndex = ok, applied
			if ok && applied < commit {
				m.Lag = commit - applied
			}
		}()
	}
	wg.Wait()
	return &ordinalv1.MembersResponse{Members: members, ClusterId: n.fsm.ClusterID(), CommitIndex: commit}, nil
}

// appliedIndexOf asks a member, at its peer address, how far it has
// applied the log.
func (n *Node) appliedIndexOf(ctx context.Context, id, raftAddr string) (uint64, bool) {
	if id == n.cfg.NodeID {
		return n.raft.AppliedIndex(), true
	}
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := n.peers.status(sctx, id, raftAddr)
	if err != nil || st.GetNodeId() != id {
		return 0, false
	}
	return st.GetAppliedIndex(), true
}

// Status describes this node; it answers before Raft runs, for discovery.
func (n *Node) Status() *ordinalv1.StatusResponse {
	st := &ordinalv1.StatusResponse{
		NodeId:          n.cfg.NodeID,
		RaftAddr:        n.RaftAddr(),
		GrpcAddr:        n.cfg.GRPCAdvertise,
		HasState:        n.hasState || n.isStarted(),
		ClusterId:       n.fsm.ClusterID(),
		BootstrapExpect: int32(n.cfg.BootstrapExpect),
		State:           "starting",
	}
	if !n.isStarted() {
		return st
	}
	st.LeaderId, st.LeaderGrpcAddr = n.LeaderGRPC()
	st.Term = n.raft.CurrentTerm()
	st.AppliedIndex = n.raft.AppliedIndex()
	st.CommitIndex = n.raft.CommitIndex()
	st.LastIndex = n.raft.LastIndex()
	st.State = n.raft.State().String()
	if cfg, err := n.configuration(); err == nil {
		for _, s := range cfg.Servers {
			st.Servers = append(st.Servers, &ordinalv1.Member{NodeId: string(s.ID), RaftAddr: string(s.Address), Voter: s.Suffrage == raft.Voter})
		}
	}
	return st
}

// promoteNonVoters runs for the node's lifetime; while it leads, it makes
// every non-voter that has caught up a voter.
func (n *Node) promoteNonVoters() {
	defer n.wg.Done()
	t := time.NewTicker(promoteInterval)
	defer t.Stop()
	for {
		select {
		case <-n.closeCh:
			return
		case <-t.C:
		}
		if !n.IsLeader() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
		n.promoteCaughtUp(ctx)
		cancel()
	}
}

func (n *Node) promoteCaughtUp(ctx context.Context) {
	cfg, err := n.configuration()
	if err != nil {
		return
	}
	for _, s := range cfg.Servers {
		if s.Suffrage != raft.Nonvoter {
			continue
		}
		applied, ok := n.appliedIndexOf(ctx, string(s.ID), string(s.Address))
		if !ok || applied+promoteMaxLag < n.raft.CommitIndex() {
			continue
		}
		n.logger.Info("promoting caught-up non-voter", "node_id", s.ID, "applied_index", applied)
		if err := n.await(ctx, n.raft.AddVoter(s.ID, s.Address, 0, n.cfg.ApplyTimeout)); err != nil {
			n.logger.Warn("promotion failed", "node_id", s.ID, "error", err)
		}
	}
}

func (n *Node) configuration() (raft.Configuration, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, n.mapRaftError(err)
	}
	return f.Configuration(), nil
}

func findServer(cfg raft.Configuration, id raft.ServerID) (raft.Server, bool) {
	for _, s := range cfg.Servers {
		if s.ID == id {
			return s, true
		}
	}
	return raft.Server{}, false
}

func hasServer(cfg raft.Configuration, id raft.ServerID) bool {
	_, ok := findServer(cfg, id)
	return ok
}

func countVoters(cfg raft.Configuration) int {
	c := 0
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			c++
		}
	}
	return c
}
