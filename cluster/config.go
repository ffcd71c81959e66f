package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ordinal-dev/ordinal/metrics"
	"github.com/ordinal-dev/ordinal/transport"
)

// Config configures a Node. Zero durations mean their defaults.
type Config struct {
	// NodeID is this node's Raft server ID. It is stored in the data
	// directory on first start; starting again with another ID fails with
	// ErrIdentityMismatch rather than joining under a second identity.
	NodeID string

	// DataDir holds the Raft log (raft.db), snapshots and node identity.
	DataDir string

	// RaftAddr is the TCP address of the node's peer port, which carries
	// Raft and every call between nodes (transport.Peer).
	RaftAddr string

	// RaftAdvertise is the peer address other nodes dial; empty means
	// RaftAddr, which then must not be an unspecified address (0.0.0.0).
	// It is the node's address in the Raft configuration.
	RaftAdvertise string

	// GRPCAdvertise is the node's client gRPC address. It is recorded in
	// the replicated metadata for operators and clients (members, leader);
	// nodes never use it to reach each other.
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

	// Join lists the peer addresses (RaftAdvertise) of other nodes. A node
	// without state asks them to admit it, retrying with backoff until one
	// does.
	Join []string

	// PeerTLS, when set, runs Raft and every call between nodes over
	// mutual TLS: each node presents a certificate of the peer CA naming
	// its node ID and accepts only such certificates. Nil means plain TCP,
	// which is safe only where every host that can reach the peer port is
	// trusted (see DESIGN.md, "Security").
	PeerTLS *transport.PeerTLS

	// ClusterToken, when set, is a secret every node of the cluster shares:
	// nodes prove to each other that they hold it on every peer connection
	// (the token is never sent), so a node only ever talks to nodes of its
	// own cluster and a process without it cannot join, vote or append
	// entries. Without PeerTLS the traffic is still not encrypted.
	ClusterToken []byte

	// PeerDial, when set, opens the TCP connections of the node's peer
	// traffic (Raft and gRPC) in place of a plain dial. Fault-injection
	// tests use it to cut, delay or drop the traffic between chosen pairs
	// of nodes; the peer handshake and TLS run on top.
	PeerDial func(ctx context.Context, address string) (net.Conn, error)

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

	// WorkerHold is how long a removed node's Snowflake worker ID stays
	// taken after the last time reserved for it, before another node may
	// get it. Safety does not depend on it (a worker's time never
	// overlaps, snowflake/DESIGN.md); it keeps IDs decodable to one node
	// for a while after it left. Default DefaultWorkerHold (1m).
	WorkerHold time.Duration

	// SnapshotThreshold is how many log entries trigger a snapshot, and
	// SnapshotInterval how often the threshold is checked. A node reserves
	// ranges rather than single IDs, so the log grows slowly. Defaults 8192
	// and 2m.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration

	// MaxKeys bounds the number of keys (of all stores together): a
	// reservation or floor that would create a key while the cluster
	// holds MaxKeys fails with a *KeyLimitError (ErrKeyLimit), and keys
	// that exist keep working. The leader's value applies; give every
	// node the same. Zero means no limit. See DESIGN.md, "Key quota".
	MaxKeys int

	// TrailingLogs is how many entries stay in the log after a snapshot,
	// so that a briefly lagging follower catches up without a snapshot.
	// Default 10240.
	TrailingLogs uint64

	// Logger receives the node's and Raft's logs. Nil means none.
	Logger hclog.Logger

	// Metrics records the node's reservation entries, snapshots and
	// forwarded reservations. Nil records nothing. (Raft's own metrics go
	// through go-metrics' process-wide global; see package metrics.)
	Metrics *metrics.Metrics
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
	if err := transport.ValidateNodeID(c.NodeID); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	switch {
	case c.DataDir == "":
		return errors.New("cluster: data directory is required")
	case c.RaftAddr == "":
		return errors.New("cluster: raft address is required")
	case c.BootstrapExpect < 0:
		return errors.New("cluster: bootstrap-expect must not be negative")
	case c.MaxKeys < 0:
		return errors.New("cluster: max-keys must not be negative (0 means no limit)")
	case c.BootstrapExpect > 0 && len(c.Join) == 0 && c.BootstrapExpect > 1:
		return errors.New("cluster: bootstrap-expect needs the other nodes' addresses in join")
	}
	return nil
}
