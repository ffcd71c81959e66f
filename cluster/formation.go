package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/transport"
)

const (
	discoveryTimeout = time.Second
	minRetryWait     = 100 * time.Millisecond
	maxRetryWait     = 2 * time.Second
)

// errNoWayToStart means the node has no state and was told neither to
// bootstrap nor to join.
var errNoWayToStart = errors.New("cluster: the data directory is empty and there is nothing to bootstrap or join: " +
	"start a single node with bootstrap on, or give join addresses (and bootstrap-expect for a new cluster)")

// Start brings the node into a cluster and starts Raft. A node with state
// resumes; a node without state bootstraps a single-node cluster, forms a
// new cluster with BootstrapExpect peers, or joins a running one through
// Join. It blocks until Raft runs or ctx ends, retrying with backoff while
// peers are unreachable.
func (n *Node) Start(ctx context.Context) error {
	switch {
	case n.hasState:
		n.logger.Info("resuming from existing state", "data_dir", n.cfg.DataDir)
		return n.startRaft(nil)
	case n.cfg.BootstrapExpect > 0:
		return n.formOrJoin(ctx)
	case len(n.cfg.Join) > 0:
		return n.joinThenStart(ctx)
	case n.cfg.Bootstrap:
		return n.startRaft(&raft.Configuration{Servers: []raft.Server{n.self()}})
	}
	return errNoWayToStart
}

func (n *Node) self() raft.Server {
	return raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.NodeID), Address: n.transport.LocalAddr()}
}

// formOrJoin waits until BootstrapExpect nodes without state see each
// other and bootstraps them all with the same configuration, which
// hashicorp/raft allows. Exactly one cluster forms: a node that finds a
// cluster which already committed anything beyond its bootstrap
// configuration joins it instead of bootstrapping a second one.
func (n *Node) formOrJoin(ctx context.Context) error {
	for wait := minRetryWait; ; wait = nextWait(wait) {
		plan, err := n.discover(ctx)
		switch {
		case err != nil:
			return err
		case plan.join:
			return n.joinThenStart(ctx)
		case plan.bootstrap != nil:
			return n.startRaft(plan.bootstrap)
		}
		n.logger.Info("waiting for peers to form a cluster", "expect", n.cfg.BootstrapExpect, "seen", plan.seen)
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

type formationPlan struct {
	join      bool
	bootstrap *raft.Configuration
	seen      int
}

// discover asks every join address for its status once and decides.
// Addresses that refuse this node's credentials, or belong to another
// cluster, are left out with a warning: a node only ever forms or joins
// the cluster whose peer CA or cluster token it shares.
func (n *Node) discover(ctx context.Context) (formationPlan, error) {
	fresh := map[string]raft.Server{n.cfg.NodeID: n.self()}
	refused := 0
	for _, addr := range n.cfg.Join {
		if addr == n.RaftAddr() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
		st, err := n.peers.status(sctx, "", addr)
		cancel()
		if err != nil && n.refusedBy(ctx, addr) {
			refused++
		}
		if ctx.Err() != nil {
			return formationPlan{}, ctx.Err()
		}
		if err != nil {
			n.logger.Debug("peer not reachable yet", "addr", addr, "error", err)
			continue
		}
		if st.GetNodeId() == n.cfg.NodeID {
			continue
		}
		if st.GetHasState() {
			return n.planWithRunningPeer(st), nil
		}
		fresh[st.GetNodeId()] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(st.GetNodeId()), Address: raft.ServerAddress(st.GetRaftAddr())}
	}
	if refused > 0 && refused == len(n.others()) {
		return formationPlan{}, fmt.Errorf("%w: %v", ErrPeerRefused, n.cfg.Join)
	}
	plan := formationPlan{seen: len(fresh)}
	if len(fresh) >= n.cfg.BootstrapExpect {
		if len(fresh) > n.cfg.BootstrapExpect {
			n.logger.Warn("more nodes without state than bootstrap-expect; bootstrapping all of them",
				"expect", n.cfg.BootstrapExpect, "seen", len(fresh))
		}
		plan.bootstrap = &raft.Configuration{Servers: sortedServers(fresh)}
	}
	return plan, nil
}

// planWithRunningPeer decides what to do on meeting a node with state. If
// that node bootstrapped with us in its configuration and its cluster has
// committed nothing since (no leader yet), bootstrapping with the same
// configuration is safe and avoids a deadlock where it waits for our vote
// while we wait for a leader to admit us. Otherwise a leader exists or will,
// and we join through it: if it already lists us, it re-admits us as new.
func (n *Node) planWithRunningPeer(st *ordinalv1.StatusResponse) formationPlan {
	servers := make(map[string]raft.Server, len(st.GetServers()))
	for _, m := range st.GetServers() {
		suffrage := raft.Nonvoter
		if m.GetVoter() {
			suffrage = raft.Voter
		}
		servers[m.GetNodeId()] = raft.Server{Suffrage: suffrage, ID: raft.ServerID(m.GetNodeId()), Address: raft.ServerAddress(m.GetRaftAddr())}
	}
	me, listed := servers[n.cfg.NodeID]
	if st.GetLastIndex() <= 1 && listed && me.Address == n.transport.LocalAddr() {
		return formationPlan{bootstrap: &raft.Configuration{Servers: sortedServers(servers)}}
	}
	return formationPlan{join: true}
}

func sortedServers(m map[string]raft.Server) []raft.Server {
	out := make([]raft.Server, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b raft.Server) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// joinThenStart asks the cluster to admit this node and starts Raft once
// it has. Raft must not run before: a node that lost its data directory
// would otherwise answer vote requests under an identity whose votes and log
// the cluster still counts on.
func (n *Node) joinThenStart(ctx context.Context) error {
	req := &ordinalv1.PeerServiceJoinRequest{
		NodeId:   n.cfg.NodeID,
		RaftAddr: n.RaftAddr(),
		GrpcAddr: n.cfg.GRPCAdvertise,
		HasState: n.hasState,
	}
	for wait := minRetryWait; ; wait = nextWait(wait) {
		refused := 0
		for _, addr := range n.others() {
			err := n.joinVia(ctx, addr, req)
			if err == nil {
				n.logger.Info("admitted to the cluster", "via", addr)
				return n.startRaft(nil)
			}
			if isFinal(err) {
				return fmt.Errorf("join via %s: %w", addr, err)
			}
			if n.refusedBy(ctx, addr) {
				refused++
				continue
			}
			n.logger.Info("join attempt failed, will retry", "via", addr, "error", err)
		}
		if refused > 0 && refused == len(n.others()) {
			return fmt.Errorf("%w: %v", ErrPeerRefused, n.cfg.Join)
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return fmt.Errorf("join %v: %w", n.cfg.Join, err)
		}
	}
}

// others returns the join addresses other than this node's own.
func (n *Node) others() []string {
	var out []string
	for _, addr := range n.cfg.Join {
		if addr != n.RaftAddr() {
			out = append(out, addr)
		}
	}
	return out
}

// refusedBy reports, after a failed call to addr, whether the node there
// refuses this node for good: it has other peer credentials or belongs to
// another cluster, or is no peer port at all. It probes the address, so
// that the log says why; a node that is merely down is not refused.
func (n *Node) refusedBy(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	_, err := n.peerPort.Probe(ctx, addr, "")
	switch {
	case err == nil:
		return false
	case errors.Is(err, transport.ErrPermissionDenied), errors.Is(err, transport.ErrForeignCluster):
		n.logger.Error("a join address refuses this node or belongs to another cluster; ignoring it", "addr", addr, "error", err)
		return true
	case errors.Is(err, transport.ErrNotPeer):
		n.logger.Error("a join address is not an ordinal peer port: --join takes the other nodes' peer (--raft-addr) addresses", "addr", addr, "error", err)
		return true
	}
	return false
}

func (n *Node) joinVia(ctx context.Context, addr string, req *ordinalv1.PeerServiceJoinRequest) error {
	c, err := n.peers.client("", addr)
	if err != nil {
		return err
	}
	jctx, cancel := context.WithTimeout(ctx, 2*n.cfg.ApplyTimeout)
	defer cancel()
	_, err = c.Join(jctx, req)
	return err
}

func nextWait(d time.Duration) time.Duration {
	d *= 2
	if d > maxRetryWait {
		d = maxRetryWait
	}
	// Jitter keeps nodes started together from polling in lock step.
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
