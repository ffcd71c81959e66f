package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/fsm"
)

// SnowflakeDecl declares one Snowflake store: its name and its layout's
// canonical text (snowflake.Layout.String) and worker bits.
type SnowflakeDecl struct {
	Store      string
	Layout     string
	WorkerBits uint8
}

// DefaultWorkerHold is the default Config.WorkerHold.
const DefaultWorkerHold = time.Minute

// AcquireWorker declares stores as Snowflake stores and returns this
// node's worker ID, both through the leader's log in one entry: the worker
// the node holds in this data directory's incarnation, or a new one. A
// node whose declarations and worker are already applied here answers
// without a round trip. A declaration that conflicts with the cluster's
// (another layout for the store, a store that holds counters, a worker ID
// too wide for the layout) fails with an error wrapping
// fsm.ErrSnowflakeConflict.
func (n *Node) AcquireWorker(ctx context.Context, stores []SnowflakeDecl) (uint64, error) {
	if !n.isStarted() {
		return 0, ErrNotReady
	}
	if w, ok := n.appliedWorker(stores); ok {
		return w, nil
	}
	if !n.IsLeader() {
		return n.acquireAtLeader(ctx, stores)
	}
	return n.AcquireWorkerFor(ctx, n.cfg.NodeID, n.incarnation, stores)
}

// appliedWorker returns the worker this node holds, when every store it
// declares is declared alike in the applied state.
func (n *Node) appliedWorker(stores []SnowflakeDecl) (uint64, bool) {
	declared := n.fsm.SnowflakeStores()
	for _, d := range stores {
		if s, ok := declared[d.Store]; !ok || s.Layout != d.Layout || s.WorkerBits != d.WorkerBits {
			return 0, false
		}
	}
	return n.fsm.WorkerOf(n.cfg.NodeID, n.incarnation)
}

// AcquireWorkerFor is AcquireWorker on the leader, for member nodeID in
// its data directory's incarnation (the peer server checks the caller is
// nodeID). A node that is not a member is refused with ErrUnknownNode.
func (n *Node) AcquireWorkerFor(ctx context.Context, nodeID, incarnation string, stores []SnowflakeDecl) (uint64, error) {
	if !n.isStarted() {
		return 0, ErrNotReady
	}
	if !n.IsLeader() {
		return 0, n.notLeader()
	}
	cfg, err := n.configuration()
	if err != nil {
		return 0, err
	}
	if !hasServer(cfg, raft.ServerID(nodeID)) {
		return 0, fmt.Errorf("%w: node %s is not a member; only members get worker IDs", ErrUnknownNode, nodeID)
	}
	ops := make([]fsm.Op, 0, len(stores)+1)
	for _, d := range stores {
		ops = append(ops, fsm.Op{Kind: fsm.OpDeclareSnowflake, Key: fsm.Key{Store: d.Store}, Layout: d.Layout, Value: uint64(d.WorkerBits)})
	}
	ops = append(ops, fsm.Op{Kind: fsm.OpAcquireWorker, NodeID: nodeID, Incarnation: incarnation,
		At: uint64(time.Now().UnixMilli()), Hold: uint64(n.workerHold() / time.Millisecond)})
	resp, err := n.apply(ctx, fsm.Command{Ops: ops})
	if err != nil {
		return 0, err
	}
	var errs []error
	for i, r := range resp.Results {
		if r.Err != nil {
			if i < len(stores) {
				errs = append(errs, fmt.Errorf("declare snowflake store %q: %w", stores[i].Store, r.Err))
			} else {
				errs = append(errs, fmt.Errorf("worker ID for %s: %w", nodeID, r.Err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	w := resp.Results[len(resp.Results)-1].Worker
	n.logger.Info("snowflake worker ID held", "node_id", nodeID, "worker", w)
	return w, nil
}

func (n *Node) workerHold() time.Duration {
	if n.cfg.WorkerHold > 0 {
		return n.cfg.WorkerHold
	}
	return DefaultWorkerHold
}

// releaseWorkerOp frees nodeID's worker IDs once the time last reserved
// for them and WorkerHold have passed; it goes into the command that
// removes the node.
func (n *Node) releaseWorkerOp(nodeID string) fsm.Op {
	return fsm.Op{Kind: fsm.OpReleaseWorker, NodeID: nodeID, At: uint64(time.Now().UnixMilli()), Hold: uint64(n.workerHold() / time.Millisecond)}
}

// SnowflakeStores returns the Snowflake stores the cluster declared, as
// this node applied them.
func (n *Node) SnowflakeStores() map[string]fsm.SnowflakeStore { return n.fsm.SnowflakeStores() }

// SetSnowflakeHook calls fn for every Snowflake store declaration this
// node applies (and, after a snapshot restore, for every declared store).
func (n *Node) SetSnowflakeHook(fn func(store string, s fsm.SnowflakeStore)) {
	n.fsm.SetSnowflakeHook(fn)
}

// MaxReservedTime returns the highest time (Unix milliseconds) reserved for
// any worker but except, as this node applied it.
func (n *Node) MaxReservedTime(except uint64) uint64 {
	skip := strconv.FormatUint(except, 10)
	var m uint64
	q := fsm.KeysQuery{Store: fsm.SnowflakeTimeStore, Limit: 1024}
	for {
		keys, more := n.fsm.Keys(q)
		for _, k := range keys {
			if k.Key.Name != skip {
				m = max(m, k.HighWater)
			}
		}
		if !more || len(keys) == 0 {
			return m
		}
		last := keys[len(keys)-1].Key
		q.After = &last
	}
}

// Workers lists the worker table as this node applied it, by worker ID.
func (n *Node) Workers() []fsm.Worker { return n.fsm.Workers() }

// acquireAtLeader asks the leader, over its peer port, for this node's
// worker ID.
func (n *Node) acquireAtLeader(ctx context.Context, stores []SnowflakeDecl) (uint64, error) {
	c, err := n.leaderConn()
	if err != nil {
		return 0, err
	}
	req := &ordinalv1.AcquireWorkerRequest{NodeId: n.cfg.NodeID, Incarnation: n.incarnation}
	for _, d := range stores {
		req.Stores = append(req.Stores, &ordinalv1.SnowflakeStoreDeclaration{StoreName: d.Store, Layout: d.Layout, WorkerBits: uint32(d.WorkerBits)})
	}
	resp, err := ordinalv1.NewWorkerServiceClient(c).AcquireWorker(ctx, req)
	if err != nil {
		if s, ok := status.FromError(err); ok {
			switch s.Code() {
			case codes.FailedPrecondition:
				return 0, fmt.Errorf("%w: %s", fsm.ErrSnowflakeConflict, s.Message())
			case codes.ResourceExhausted:
				return 0, fmt.Errorf("%w: %s", fsm.ErrNoWorker, s.Message())
			}
		}
		return 0, fromStatus(err)
	}
	return resp.GetWorker(), nil
}
