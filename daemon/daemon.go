// Package daemon assembles one ordinal node: the Raft node, the ID
// allocator on top of it, and the gRPC server in front of both. The
// `ordinal serve` command and the multi-node tests both start nodes through
// it, so what the tests exercise is what runs in production.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/server"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/fsm"
)

// DefaultGRPCAddr is Layotto's default gRPC port, so Layotto clients work
// with no configuration.
const DefaultGRPCAddr = "127.0.0.1:34904"

// DefaultRaftAddr is the default Raft port, next to the gRPC one.
const DefaultRaftAddr = "127.0.0.1:34905"

// gracefulStopTimeout bounds how long Close waits for calls in flight.
const gracefulStopTimeout = 5 * time.Second

// Config configures a Daemon.
type Config struct {
	// Cluster configures the Raft node. Its GRPCAdvertise defaults to the
	// address the gRPC server listens on.
	Cluster cluster.Config

	// GRPCAddr is the address the gRPC server listens on; port 0 picks a
	// free port. Default DefaultGRPCAddr.
	GRPCAddr string

	// NewStore, when set, opens the store the node keeps its counters in,
	// instead of a Raft node configured by Cluster; the etcd-backed
	// deployment sets it. grpcAdvertise is this node's advertised gRPC
	// address, which the store publishes for forwarding.
	NewStore func(grpcAdvertise string, logger hclog.Logger) (Store, error)

	// Alloc tunes the ID allocator.
	Alloc alloc.Config

	// MaxCount is the largest block GetNextIds hands out. Default
	// server.DefaultMaxCount.
	MaxCount uint64

	// Logger is the root logger; subsystems log through named children.
	Logger hclog.Logger
}

// Store is where a node keeps its counters: a Raft cluster
// (*cluster.Node) or etcd. The allocator and the gRPC handlers see only this.
// A Store that also implements server.Sequencer serves the gRPC calls
// itself, in place of the allocator.
type Store interface {
	alloc.Backend

	// Start brings the store up: resumes, forms or joins a cluster, or
	// connects. It blocks until the store runs or ctx ends.
	Start(ctx context.Context) error

	// WaitReady blocks until the store can serve calls.
	WaitReady(ctx context.Context) error

	// Leader returns the node ID and gRPC address of the node that serves
	// STRONG calls, or empty strings when none is known.
	Leader() (id, grpcAddr string)

	// Healthy reports whether the node should receive traffic.
	Healthy() bool

	// SetFloorHook registers fn to be called for every floor any node
	// sets, so this node drops IDs below it from the ranges it holds.
	SetFloorHook(fn func(key fsm.Key, floor uint64))

	// Close releases the store.
	Close() error
}

var _ Store = (*cluster.Node)(nil)

// Daemon is a running node.
type Daemon struct {
	logger hclog.Logger
	store  Store
	alloc  *alloc.Allocator
	api    *server.Server
	// clusterAPI serves ordinal.v1.Cluster; nil for stores without one.
	clusterAPI *server.ClusterServer
	grpc       *grpc.Server
	lis        net.Listener
	served     chan error

	stopStart context.CancelFunc // ends a Start still looking for peers
	startErr  chan error         // Start's result

	healthOnce sync.Once
	closeOnce  sync.Once
	closeErr   error
	closing    chan struct{}
	wg         sync.WaitGroup
}

// Start opens the node and starts serving gRPC. Calls answer Unavailable
// until WaitReady has returned nil.
func Start(cfg Config) (*Daemon, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = DefaultGRPCAddr
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for gRPC on %s: %w", cfg.GRPCAddr, err)
	}
	if cfg.Cluster.GRPCAdvertise == "" {
		cfg.Cluster.GRPCAdvertise = advertisable(lis.Addr().String())
	}
	if cfg.Cluster.RaftAdvertise == "" {
		cfg.Cluster.RaftAdvertise = advertisable(cfg.Cluster.RaftAddr)
	}
	store, err := openStore(cfg)
	if err != nil {
		lis.Close()
		return nil, err
	}
	d := &Daemon{logger: cfg.Logger, store: store, lis: lis, served: make(chan error, 1), startErr: make(chan error, 1), closing: make(chan struct{})}
	cfg.Alloc.Logger = cfg.Logger.Named("alloc")
	d.alloc = alloc.New(store, cfg.Alloc)
	store.SetFloorHook(d.alloc.RaiseFloor)
	// A store that hands out IDs itself, with no ranges to allocate from
	// (etcd's Layotto layout: one Put per ID), serves the calls directly.
	var seq server.Sequencer = d.alloc
	if direct, ok := store.(server.Sequencer); ok {
		seq = direct
	}
	d.api = server.New(server.Config{
		Sequencer: seq,
		Leader:    store.Leader,
		SelfAddr:  cfg.Cluster.GRPCAdvertise,
		// Forwarded calls go to other nodes' gRPC ports, like the
		// cluster's own peer calls: same credentials, same dialer.
		DialOptions: cfg.Cluster.PeerDialOptions,
		MaxCount:    cfg.MaxCount,
		Logger:      cfg.Logger.Named("api"),
	})
	d.grpc = grpc.NewServer()
	d.api.Register(d.grpc)
	if node, ok := store.(*cluster.Node); ok {
		d.clusterAPI = server.NewClusterServer(node)
		ordinalv1.RegisterClusterServer(d.grpc, d.clusterAPI)
	}
	go func() { d.served <- d.grpc.Serve(lis) }()

	// Peers must be able to ask this node's status while it looks for them,
	// so the gRPC server runs before the node joins or forms a cluster.
	var ctx context.Context
	ctx, d.stopStart = context.WithCancel(context.Background())
	go func() { d.startErr <- store.Start(ctx) }()
	return d, nil
}

func openStore(cfg Config) (Store, error) {
	if cfg.NewStore != nil {
		return cfg.NewStore(cfg.Cluster.GRPCAdvertise, cfg.Logger)
	}
	cfg.Cluster.Logger = cfg.Logger
	return cluster.New(cfg.Cluster)
}

// advertisable turns a listen address into one other nodes can dial: an
// unspecified host (0.0.0.0, ::, empty) becomes this machine's hostname,
// which is what resolves between containers. Port 0 gives "": the
// listener's own address is advertised once it has bound.
func advertisable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	switch {
	case err != nil:
		return addr
	case port == "0":
		return "" // the transport advertises the port it bound
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return addr
	}
	name, err := os.Hostname()
	if err != nil {
		return ""
	}
	return net.JoinHostPort(name, port)
}

// WaitReady blocks until the node has joined a cluster with a leader, then
// opens it for calls.
func (d *Daemon) WaitReady(ctx context.Context) error {
	select {
	case err := <-d.startErr:
		d.startErr <- err // keep it for later callers
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", cluster.ErrNotReady, ctx.Err())
	}
	if err := d.store.WaitReady(ctx); err != nil {
		return err
	}
	d.api.SetReady(true)
	d.healthOnce.Do(func() {
		d.wg.Add(1)
		go d.watchHealth()
	})
	return nil
}

// healthInterval is how often the health service is brought up to date.
const healthInterval = 500 * time.Millisecond

// watchHealth keeps the health service saying whether the node is a
// healthy member, so that a removed or partitioned node stops attracting
// traffic from load balancers and container orchestrators.
func (d *Daemon) watchHealth() {
	defer d.wg.Done()
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		select {
		case <-d.closing:
			return
		case <-t.C:
			d.api.SetHealth(d.store.Healthy())
		}
	}
}

// GRPCAddr returns the address the gRPC server listens on.
func (d *Daemon) GRPCAddr() string { return d.lis.Addr().String() }

// RaftAddr returns the Raft address of the node, or "" for a node whose
// store is not Raft.
func (d *Daemon) RaftAddr() string {
	if n := d.Node(); n != nil {
		return n.RaftAddr()
	}
	return ""
}

// Node returns the Raft node, or nil when the store is not Raft.
func (d *Daemon) Node() *cluster.Node {
	n, _ := d.store.(*cluster.Node)
	return n
}

// Close stops serving, waiting briefly for calls in flight, then shuts the
// node down. Later calls return the first call's result.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.close() })
	return d.closeErr
}

func (d *Daemon) close() error {
	d.stopStart()
	close(d.closing)
	d.wg.Wait()
	d.api.SetReady(false)
	d.api.Drain()
	if d.clusterAPI != nil {
		d.clusterAPI.Drain()
	}
	stopped := make(chan struct{})
	go func() {
		d.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(gracefulStopTimeout):
		d.grpc.Stop()
	}
	serveErr := <-d.served
	if errors.Is(serveErr, grpc.ErrServerStopped) {
		serveErr = nil
	}
	d.alloc.Close()
	return errors.Join(serveErr, d.api.Close(), d.store.Close())
}
