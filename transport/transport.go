package transport

import (
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

const (
	// DefaultMaxPool is the RaftConfig.MaxPool used when none is set.
	DefaultMaxPool = 3

	// DefaultRPCTimeout is the RaftConfig.Timeout used when none is set.
	DefaultRPCTimeout = 10 * time.Second
)

// RaftConfig configures the raft.NetworkTransport built by NewTransport.
type RaftConfig struct {
	// MaxPool is the number of idle outgoing connections kept per peer for
	// reuse. Zero or negative means DefaultMaxPool. More connections allow
	// more concurrent RPCs to one peer without re-dialing (and, with TLS,
	// re-handshaking) at the cost of file descriptors and memory; pooling
	// cannot be disabled through this package.
	MaxPool int

	// Timeout is the I/O deadline applied to each RPC on a connection, and
	// the timeout raft passes to StreamLayer.Dial (where Config.DialTimeout
	// still caps it). Zero or negative means DefaultRPCTimeout. It must
	// comfortably exceed the time a follower needs to persist and answer a
	// large AppendEntries batch; too low causes needless retries, too high
	// delays noticing a peer that stopped responding mid-RPC. InstallSnapshot
	// does not use it verbatim: raft scales it by the snapshot size (one
	// Timeout per raft.DefaultTimeoutScale bytes, never less than Timeout),
	// so large snapshots are not cut off.
	Timeout time.Duration

	// Logger receives the transport's log output. Nil means
	// hclog.NewNullLogger(), i.e. silence (raft itself would otherwise log
	// to stderr).
	Logger hclog.Logger
}

// NewTransport returns a raft.NetworkTransport that runs over sl, configured
// by cfg with defaults filled in. sl must not be nil. The transport takes
// ownership of sl: closing the transport closes sl.
func NewTransport(sl *StreamLayer, cfg RaftConfig) *raft.NetworkTransport {
	cfg = cfg.withDefaults()
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  sl,
		MaxPool: cfg.MaxPool,
		Timeout: cfg.Timeout,
		Logger:  cfg.Logger,
	})
}

// withDefaults returns a copy of c with unset fields replaced by defaults.
func (c RaftConfig) withDefaults() RaftConfig {
	if c.MaxPool <= 0 {
		c.MaxPool = DefaultMaxPool
	}
	c.Timeout = orDefault(c.Timeout, DefaultRPCTimeout)
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}
