// Package cluster runs one ordinal node's Raft instance: it opens the
// durable log, bootstraps or joins a cluster, applies commands to the
// replicated state machine, and proves leadership for STRONG calls. It
// implements alloc.Backend. See DESIGN.md for why it is built this way.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/ordinal-dev/ordinal/backup"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/metrics"
	"github.com/ordinal-dev/ordinal/transport"
)

const (
	raftDBFile       = "raft.db"
	retainSnapshots  = 2
	logCacheSize     = 512
	boltOpenTimeout  = time.Second
	readyPollPeriod  = 10 * time.Millisecond
	leaderNotifySize = 16
)

// Node is one member of an ordinal cluster.
type Node struct {
	cfg         Config
	logger      hclog.Logger
	incarnation string // of the data directory; see Incarnation

	fsm       *fsm.FSM
	boltStore *raftboltdb.BoltStore
	logs      raft.LogStore
	snapshots raft.SnapshotStore
	peerPort  *transport.Peer
	transport *raft.NetworkTransport
	peers     *peers
	prover    *prover
	hasState  bool // the data directory held Raft state when the node opened

	// rates measures reservation rates for backups (backup.go).
	rates *backup.Rates

	// metrics and forwardMetrics record what the node commits and
	// forwards; nil when the node runs without metrics.
	metrics        *metrics.Cluster
	forwardMetrics *metrics.Forward

	// raft is set once by startRaft and closes started; read it only after
	// started is closed (Raft() does that check).
	raft    *raft.Raft
	startMu sync.Mutex
	started chan struct{}

	// readyTerm is the term in which this node, as leader, finished a
	// barrier: from then on its state machine holds every entry committed
	// by earlier leaders, so reads from it are complete.
	readyTerm atomic.Uint64
	barrierMu sync.Mutex

	// quota counts the keys being created, for Config.MaxKeys (keys.go).
	quota keyQuota

	// commits groups the ops committed on the leader, forwards the
	// reservations a follower sends to the leader (group.go);
	// groupedEntries and groupedOps count what commits wrote.
	commits, forwards          *group
	groupedEntries, groupedOps atomic.Uint64

	// tenure is when this node last became leader; lastRemoval when it,
	// as leader, last saw a member leave or move (see HoldFloor).
	tenure      atomic.Pointer[tenure]
	lastRemoval atomic.Pointer[time.Time]

	notifyCh chan bool
	closeCh  chan struct{}
	wg       sync.WaitGroup
	closeMu  sync.Mutex
	closed   bool

	// failedCh is closed, and failure set, when the node stops itself
	// because its data turned out damaged (check.go, fail).
	failOnce sync.Once
	failedCh chan struct{}
	failure  error
}

// New opens the node's data directory and starts listening for Raft
// traffic. Raft itself starts in Start, once the node knows whether to
// bootstrap, join or resume.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	incarnation, err := claimDataDir(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:         cfg,
		incarnation: incarnation,
		logger:      cfg.Logger,
		fsm:         fsm.New(cfg.Logger.Named("fsm")),
		notifyCh:    make(chan bool, leaderNotifySize),
		closeCh:     make(chan struct{}),
		started:     make(chan struct{}),
		failedCh:    make(chan struct{}),
	}
	if m := cfg.Metrics; m != nil {
		n.metrics, n.forwardMetrics = m.Cluster, m.Forward
		m.GaugeFunc("fsm_keys", "Keys in the replicated state machine, all stores.", func() float64 { return float64(n.fsm.Len()) })
		n.registerRaftGauges(m)
		if cfg.MaxKeys > 0 {
			m.GaugeFunc("keys_limit", "The most keys the cluster may hold (--max-keys); absent when unlimited.", func() float64 { return float64(cfg.MaxKeys) })
		}
	}
	n.watchRates()
	if err := n.open(); err != nil {
		n.closeStores()
		return nil, err
	}
	n.peers = newPeers(n.peerPort)
	n.commits = &group{send: n.commitBatch}
	n.forwards = &group{send: n.forwardBatch}
	n.prover = newProver(cfg.NodeID, n.peers, cfg.Logger.Named("prover"))
	n.wg.Add(1)
	go n.watchFSM()
	return n, nil
}

func (n *Node) open() error {
	// Check the data directory before Raft reads it: a damaged raft.db
	// would crash the process, a damaged entry stop the node later.
	if err := checkOnOpen(n); err != nil {
		return err
	}
	var err error
	n.boltStore, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(n.cfg.DataDir, raftDBFile),
		BoltOptions: &bbolt.Options{Timeout: boltOpenTimeout},
	})
	if err != nil {
		return fmt.Errorf("open raft log in %s (is another ordinal using this data directory?): %w", n.cfg.DataDir, err)
	}
	n.snapshots, err = raft.NewFileSnapshotStoreWithLogger(n.cfg.DataDir, retainSnapshots, n.logger.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	n.logs, err = raft.NewLogCache(logCacheSize, n.boltStore)
	if err != nil {
		return fmt.Errorf("create log cache: %w", err)
	}
	n.hasState, err = raft.HasExistingState(n.logs, n.boltStore, n.snapshots)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	n.peerPort, err = transport.ListenPeer(n.cfg.RaftAddr, n.cfg.RaftAdvertise, transport.PeerConfig{
		NodeID:    n.cfg.NodeID,
		ClusterID: n.fsm.ClusterID,
		TLS:       n.cfg.PeerTLS,
		Token:     n.cfg.ClusterToken,
		Raft:      true,
		Dial:      n.cfg.PeerDial,
		Logger:    n.logger.Named("peer"),
	})
	if err != nil {
		return fmt.Errorf("open the peer port on %s: %w", n.cfg.RaftAddr, err)
	}
	n.transport = transport.NewTransport(n.peerPort.Raft(), transport.RaftConfig{Logger: n.logger.Named("transport")})
	return nil
}

// startRaft starts the Raft instance, first bootstrapping it with
// bootstrap when that is non-nil.
func (n *Node) startRaft(bootstrap *raft.Configuration) error {
	n.startMu.Lock()
	defer n.startMu.Unlock()
	select {
	case <-n.closeCh:
		return ErrShutdown // Close won the race with a late Start
	default:
	}
	if n.raft != nil {
		return nil
	}
	if err := n.Err(); err != nil {
		return err
	}
	if bootstrap != nil {
		n.logger.Info("bootstrapping a new cluster", "servers", fmt.Sprint(bootstrap.Servers))
		err := raft.BootstrapCluster(n.raftConfig(), n.logs, n.boltStore, n.snapshots, n.transport, *bootstrap)
		if err != nil {
			return fmt.Errorf("bootstrap cluster: %w", err)
		}
	}
	var sm raft.FSM = n.fsm
	if n.metrics != nil {
		sm = measuredFSM{FSM: n.fsm, m: n.metrics}
	}
	r, err := raft.NewRaft(n.raftConfig(), sm, n.logs, n.boltStore, n.snapshots, n.transport)
	if err != nil {
		// Raft restores the newest snapshot it can; the state machine
		// stops on one it cannot restore and refuses the older ones.
		if ferr := n.failFromFSM(); ferr != nil {
			return ferr
		}
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	peers := make(chan raft.Observation, 16)
	r.RegisterObserver(raft.NewObserver(peers, true, isPeerObservation))
	n.wg.Add(4)
	go n.watchLeadership()
	go n.promoteNonVoters()
	go n.publishSelf()
	go n.watchPeers(peers)
	close(n.started)
	return nil
}

func (n *Node) raftConfig() *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(n.cfg.NodeID)
	c.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	c.ElectionTimeout = n.cfg.ElectionTimeout
	c.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	c.SnapshotThreshold = n.cfg.SnapshotThreshold
	c.SnapshotInterval = n.cfg.SnapshotInterval
	c.TrailingLogs = n.cfg.TrailingLogs
	c.NotifyCh = n.notifyCh
	c.Logger = n.logger.Named("raft")
	return c
}

// Leader returns the leader's node ID and peer address, the address other
// nodes forward calls to, or empty strings when no leader is known.
func (n *Node) Leader() (id, peerAddr string) {
	if !n.isStarted() {
		return "", ""
	}
	addr, sid := n.raft.LeaderWithID()
	if sid == "" || addr == "" {
		return "", ""
	}
	return string(sid), string(addr)
}

// LeaderGRPC returns the leader's node ID and client gRPC address as it
// published it, for operators and clients; "" while unknown.
func (n *Node) LeaderGRPC() (id, grpcAddr string) {
	id, _ = n.Leader()
	if id == "" {
		return "", ""
	}
	return id, n.fsm.NodeAddr(id)
}

// PeerPort returns the node's peer port. The daemon serves the node's peer
// gRPC services on its GRPCListener.
func (n *Node) PeerPort() *transport.Peer { return n.peerPort }

// IsLeader reports whether this node currently believes it leads. Use
// Confirm where a stale belief would be unsafe.
func (n *Node) IsLeader() bool {
	return n.isStarted() && n.raft.State() == raft.Leader
}

// NodeID returns this node's ID.
func (n *Node) NodeID() string { return n.cfg.NodeID }

// Incarnation identifies this node's data directory: drawn at random when
// the directory was first used, so a node that lost its data comes back
// with another one. Leadership proofs carry it (see the prover).
func (n *Node) Incarnation() string { return n.incarnation }

// RaftAddr returns the peer address (Raft and node-to-node calls) other
// nodes reach this node on.
func (n *Node) RaftAddr() string { return n.peerPort.Addr().String() }

// FSM returns the node's state machine, for read-only inspection.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// WaitReady blocks until the node is part of a cluster with a leader and,
// when it leads, has caught up with every earlier leader's entries.
func (n *Node) WaitReady(ctx context.Context) error {
	t := time.NewTicker(readyPollPeriod)
	defer t.Stop()
	for {
		if n.ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
		case <-n.closeCh:
			return ErrShutdown
		case <-n.failedCh:
			return n.Err()
		case <-t.C:
		}
	}
}

func (n *Node) ready() bool {
	if !n.isStarted() || n.Err() != nil {
		return false
	}
	// The node's published gRPC address is not waited for: nodes reach
	// each other on their peer addresses, which Raft knows; publishSelf
	// records it for operators and clients in the background.
	_, leader := n.raft.LeaderWithID()
	switch {
	case leader == "":
		return false
	case n.raft.State() == raft.Leader:
		return n.readyTerm.Load() == n.raft.CurrentTerm()
	default:
		return n.raft.AppliedIndex() >= n.raft.CommitIndex()
	}
}

// SetFloorHook registers fn to be called for every floor applied from the
// log, on every node. Call it before Start.
func (n *Node) SetFloorHook(fn func(key fsm.Key, floor uint64)) {
	n.fsm.SetFloorHook(fn)
}

// Healthy reports whether the node knows a leader and is a member of the
// cluster's configuration. A removed node, one cut off from a quorum for
// longer than an election, or one stopped because its data is damaged
// (Err), is not healthy.
func (n *Node) Healthy() bool {
	if !n.isStarted() || n.Err() != nil {
		return false
	}
	if id, _ := n.Leader(); id == "" {
		return false
	}
	cfg, err := n.configuration()
	return err == nil && hasServer(cfg, raft.ServerID(n.cfg.NodeID))
}

// Close shuts Raft down and closes the data directory. Unused IDs of
// reserved ranges are abandoned.
func (n *Node) Close() error {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	// Raft first: it may block writing a last leadership change to notifyCh,
	// which watchLeadership keeps draining until closeCh closes.
	n.startMu.Lock()
	var err error
	if n.raft != nil {
		err = n.raft.Shutdown().Error()
	}
	close(n.closeCh)
	n.startMu.Unlock()
	n.wg.Wait()
	n.prover.close()
	return errors.Join(err, n.closeStores())
}

func (n *Node) closeStores() error {
	var errs []error
	if n.transport != nil {
		errs = append(errs, n.transport.Close())
	}
	if n.peerPort != nil {
		errs = append(errs, n.peerPort.Close())
	}
	if n.boltStore != nil {
		errs = append(errs, n.boltStore.Close())
	}
	return errors.Join(errs...)
}

// Snapshot takes a snapshot of the state machine now and compacts the log.
func (n *Node) Snapshot() error {
	if !n.isStarted() {
		return ErrNotReady
	}
	return n.mapRaftError(n.raft.Snapshot().Error())
}

// isStarted reports whether Raft runs; n.raft may be read once it does.
func (n *Node) isStarted() bool {
	select {
	case <-n.started:
		return true
	default:
		return false
	}
}
