package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/fsm"
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
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.NotFound:
		return true
	}
	return false
}

// Join admits a node, forwarding to the leader when this node does not
// lead. A new node enters as a non-voter; promoteNonVoters makes it a voter
// once it caught up. A member that comes back without state is removed
// first and then re-admitted as a new non-voter: it forgot its log and its
// votes, so it must not count towards any quorum until it has caught up
// again.
func (n *Node) Join(ctx context.Context, req *ordinalv1.JoinRequest) (*ordinalv1.JoinResponse, error) {
	if req.GetNodeId() == "" || req.GetRaftAddr() == "" {
		return nil, status.Error(codes.InvalidArgument, "join needs node_id and raft_addr")
	}
	if !n.isStarted() {
		return nil, ErrNotReady
	}
	if !n.IsLeader() {
		c, err := n.leaderClient()
		if err != nil {
			return nil, err
		}
		return c.Join(ctx, req)
	}
	if id := req.GetClusterId(); id != "" && id != n.fsm.ClusterID() {
		return nil, status.Errorf(codes.FailedPrecondition,
			"node %s belongs to cluster %s, this is cluster %s; clusters never merge: wipe its data directory to move it",
			req.GetNodeId(), id, n.fsm.ClusterID())
	}
	if req.GetPublishOnly() {
		cfg, err := n.configuration()
		if err != nil {
			return nil, err
		}
		if !hasServer(cfg, raft.ServerID(req.GetNodeId())) {
			return nil, status.Errorf(codes.FailedPrecondition,
				"node %s is not a member of this cluster (was it removed?); wipe its data directory and start it with --join to add it again",
				req.GetNodeId())
		}
	} else if err := n.admit(ctx, req); err != nil {
		return nil, err
	}
	if req.GetGrpcAddr() != "" {
		op := fsm.Op{Kind: fsm.OpSetNode, NodeID: req.GetNodeId(), Addr: req.GetGrpcAddr()}
		if _, err := n.apply(ctx, fsm.Command{Ops: []fsm.Op{op}}); err != nil {
			return nil, err
		}
	}
	return &ordinalv1.JoinResponse{ClusterId: n.fsm.ClusterID()}, nil
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
			return status.Errorf(codes.AlreadyExists,
				"raft address %s belongs to member %s; remove %s first if it is gone", addr, s.ID, s.ID)
		}
		if s.ID == id {
			existing = &cfg.Servers[i]
		}
	}
	switch {
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
		c, err := n.leaderClient()
		if err != nil {
			return err
		}
		_, err = c.Remove(ctx, &ordinalv1.RemoveRequest{NodeId: nodeID})
		return err
	}
	cfg, err := n.configuration()
	if err != nil {
		return err
	}
	if !hasServer(cfg, raft.ServerID(nodeID)) {
		return status.Errorf(codes.NotFound, "node %s is not a member of this cluster", nodeID)
	}
	if nodeID == n.cfg.NodeID {
		return n.removeSelf(ctx, cfg)
	}
	n.logger.Info("removing member", "node_id", nodeID)
	if err := n.await(ctx, n.raft.RemoveServer(raft.ServerID(nodeID), 0, n.cfg.ApplyTimeout)); err != nil {
		return err
	}
	_, err = n.apply(ctx, fsm.Command{Ops: []fsm.Op{{Kind: fsm.OpRemoveNode, NodeID: nodeID}}})
	return err
}

func (n *Node) removeSelf(ctx context.Context, cfg raft.Configuration) error {
	if countVoters(cfg) < 2 {
		return status.Error(codes.FailedPrecondition, "cannot remove the only voter: the cluster would have no members left")
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
		c, err := n.leaderClient()
		if err != nil {
			return "", err
		}
		resp, err := c.TransferLeadership(ctx, &ordinalv1.TransferLeadershipRequest{NodeId: nodeID})
		return resp.GetNodeId(), err
	}
	var f raft.Future
	if nodeID == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		cfg, err := n.configuration()
		if err != nil {
			return "", err
		}
		s, ok := findServer(cfg, raft.ServerID(nodeID))
		if !ok || s.Suffrage != raft.Voter {
			return "", status.Errorf(codes.NotFound, "node %s is not a voter of this cluster", nodeID)
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
		c, err := n.leaderClient()
		if err != nil {
			return nil, err
		}
		return c.Members(ctx, &ordinalv1.MembersRequest{})
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
			applied, ok := n.appliedIndexOf(ctx, m.NodeId, m.GrpcAddr)
			m.Reachable, m.AppliedIndex = ok, applied
			if ok && applied < commit {
				m.Lag = commit - applied
			}
		}()
	}
	wg.Wait()
	return &ordinalv1.MembersResponse{Members: members, ClusterId: n.fsm.ClusterID(), CommitIndex: commit}, nil
}

// appliedIndexOf asks a member how far it has applied the log.
func (n *Node) appliedIndexOf(ctx context.Context, id, grpcAddr string) (uint64, bool) {
	if id == n.cfg.NodeID {
		return n.raft.AppliedIndex(), true
	}
	if grpcAddr == "" {
		return 0, false
	}
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := n.peers.status(sctx, grpcAddr)
	if err != nil || st.GetNodeId() != id {
		return 0, false
	}
	return st.GetAppliedIndex(), true
}

// Status describes this node; it answers before Raft runs, for discovery.
func (n *Node) Status() *ordinalv1.StatusResponse {
	st := &ordinalv1.StatusResponse{
		NodeId:          n.cfg.NodeID,
		RaftAddr:        string(n.transport.LocalAddr()),
		GrpcAddr:        n.cfg.GRPCAdvertise,
		HasState:        n.hasState || n.isStarted(),
		ClusterId:       n.fsm.ClusterID(),
		BootstrapExpect: int32(n.cfg.BootstrapExpect),
		State:           "starting",
	}
	if !n.isStarted() {
		return st
	}
	st.LeaderId, st.LeaderGrpcAddr = n.Leader()
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
	nodes := n.fsm.Nodes()
	for _, s := range cfg.Servers {
		if s.Suffrage != raft.Nonvoter {
			continue
		}
		applied, ok := n.appliedIndexOf(ctx, string(s.ID), nodes[string(s.ID)])
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
