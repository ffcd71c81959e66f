package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
)

// Config configures a Node. Zero durations mean their defaults.
type Config struct {
	// NodeID is this node's Raft server ID. It is stored in the data
	// directory on first start; starting again with another ID fails with
	// ErrIdentityMismatch rather than joining under a second identity.
	NodeID string

	// DataDir holds the Raft log (raft.db), snapshots and node identity.
	DataDir string

	// RaftAddr is the TCP address the Raft transport listens on.
	RaftAddr string

	// RaftAdvertise is the Raft address other nodes dial; empty means
	// RaftAddr, which then must not be an unspecified address (0.0.0.0).
	RaftAdvertise string

	// GRPCAdvertise is the gRPC address other nodes use to forward calls
	// to this one. It is recorded in the replicated cluster metadata.
	GRPCAdvertise string

	// Bootstrap makes a node that has no Raft state, and neither Join nor
	// BootstrapExpect, bootstrap a single-node cluster with itself as the
	// only voter. Use it for one-node deployments and laptops.
	Bootstrap bool

	// BootstrapExpect, when above zero, makes a node without state wait
	// until it sees that many nodes (itself included) through Join, all
	// without state, and then bootstrap a cluster of exactly those nodes.
	// Every node of the initial cluster must be started with the same value
	// and the others' gRPC addresses. If a cluster already runs, the node
	// joins it instead.
	BootstrapExpect int

	// Join lists gRPC addresses of other nodes. A node without state asks
	// them to admit it, retrying with backoff until one does.
	Join []string

	// PeerDialOptions are used for gRPC connections to other nodes.
	// Default: plain TCP.
	PeerDialOptions []grpc.DialOption

	// RaftDial, when set, opens the node's outgoing Raft connections in
	// place of a plain TCP dial. Fault-injection tests use it (with a
	// grpc.WithContextDialer in PeerDialOptions) to cut, delay or drop the
	// traffic between chosen pairs of nodes.
	RaftDial func(ctx context.Context, address string) (net.Conn, error)

	// HeartbeatTimeout and ElectionTimeout bound how long followers wait
	// for the leader before starting an election. Lower values fail over
	// faster after a leader dies but risk needless elections on a loaded or
	// slow network. Defaults 500ms each.
	HeartbeatTimeout, ElectionTimeout time.Duration

	// LeaderLeaseTimeout is how long a leader stays leader without
	// hearing from a quorum. It is not a read lease: STRONG calls are fenced
	// by a quorum round trip instead (see alloc/DESIGN.md). Default 250ms.
	LeaderLeaseTimeout time.Duration

	// ApplyTimeout bounds how long a command may wait to be accepted by
	// Raft. Default 5s.
	ApplyTimeout time.Duration

	// SnapshotThreshold is how many log entries trigger a snapshot, and
	// SnapshotInterval how often the threshold is checked. A node reserves
	// ranges rather than single IDs, so the log grows slowly. Defaults 8192
	// and 2m.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration

	// TrailingLogs is how many entries stay in the log after a snapshot,
	// so that a briefly lagging follower catches up without a snapshot.
	// Default 10240.
	TrailingLogs uint64

	// ServerTLS and ClientTLS, when set, encrypt Raft traffic between
	// nodes. Nil means plain TCP.
	ServerTLS, ClientTLS *tls.Config

	// Logger receives the node's and Raft's logs. Nil means none.
	Logger hclog.Logger
}

func (c Config) withDefaults() Config {
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defDur(&c.HeartbeatTimeout, 500*time.Millisecond)
	defDur(&c.ElectionTimeout, 500*time.Millisecond)
	defDur(&c.LeaderLeaseTimeout, 250*time.Millisecond)
	defDur(&c.ApplyTimeout, 5*time.Second)
	defDur(&c.SnapshotInterval, 2*time.Minute)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("cluster: node ID is required")
	case c.DataDir == "":
		return errors.New("cluster: data directory is required")
	case c.RaftAddr == "":
		return errors.New("cluster: raft address is required")
	case c.BootstrapExpect < 0:
		return errors.New("cluster: bootstrap-expect must not be negative")
	case c.BootstrapExpect > 0 && len(c.Join) == 0 && c.BootstrapExpect > 1:
		return errors.New("cluster: bootstrap-expect needs the other nodes' addresses in join")
	}
	return nil
}
