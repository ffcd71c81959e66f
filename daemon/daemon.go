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

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/server"
	"github.com/ordinal-dev/ordinal/auth"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/internal/grpccodec"
	"github.com/ordinal-dev/ordinal/keyspace"
	"github.com/ordinal-dev/ordinal/metrics"
	"github.com/ordinal-dev/ordinal/snowflake"
	"github.com/ordinal-dev/ordinal/tlsutil"
	"github.com/ordinal-dev/ordinal/transport"
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
	// deployment sets it. self names this node: its ID and the peer
	// address the store publishes for forwarding. The node then still has
	// a peer port (Cluster.RaftAddr, with Cluster's peer security), which
	// carries forwarded calls only.
	NewStore func(self Self, logger hclog.Logger) (Store, error)

	// Security configures the client port: TLS and who may call what. The
	// peer port's security is in Cluster (PeerTLS, ClusterToken).
	Security Security

	// MaxConcurrentStreams bounds the concurrent calls (HTTP/2 streams) of
	// one client connection, on both ports. A client that opens more waits
	// for one to finish. Default DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32

	// Alloc tunes the ID allocator.
	Alloc alloc.Config

	// Snowflake declares this node's Snowflake stores and tunes them
	// (Raft store only).
	Snowflake Snowflake

	// MaxCount is the largest block GetNextIds hands out. Default
	// server.DefaultMaxCount.
	MaxCount uint64

	// Logger is the root logger; subsystems log through named children.
	Logger hclog.Logger

	// AccessLog logs every call on both ports when it finishes (method,
	// code, duration, peer address) at debug level, through Logger. It
	// costs a log line per call; meant for debugging, not for production
	// load.
	AccessLog bool

	// Metrics, when set, records the node's metrics: gRPC calls on both
	// ports, the allocator, the Raft store (Cluster.Metrics is set from
	// it) and forwarding. A store opened by NewStore records its own
	// through whatever the caller gave it. Nil records nothing.
	Metrics *metrics.Metrics
}

// DefaultMaxConcurrentStreams is the default Config.MaxConcurrentStreams:
// far above what a client's own concurrency needs (the Go client shares
// one connection among all its callers and streams coalesce them), low
// enough that one connection cannot make the node hold unbounded calls.
const DefaultMaxConcurrentStreams = 1024

// Self names a node to its store.
type Self struct {
	// NodeID is the node's ID.
	NodeID string
	// PeerAddr is the advertised address of the node's peer port.
	PeerAddr string
	// GRPCAddr is the advertised address of the node's client port.
	GRPCAddr string
}

// Security configures the client port. The zero value serves plain gRPC
// and, with Auth.Open, lets every caller make every call: the development
// mode.
type Security struct {
	// TLSCert, when set, serves the client port over TLS (1.2 or later)
	// with this certificate, re-read when its files change.
	TLSCert *tlsutil.KeyPair

	// ClientCAs, when set with TLSCert, verifies client certificates
	// against these CAs (mutual TLS). A client without a certificate is
	// refused at the handshake unless Auth.AnonymousIDs lets it make ids
	// calls.
	ClientCAs *tlsutil.CAPool

	// Auth decides which caller may make which call (roles ids, admin;
	// see package auth).
	Auth auth.Config
}

// Store is where a node keeps its counters: a Raft cluster
// (*cluster.Node) or etcd (package etcdcompat). It is the part every store
// has: a lifecycle and, for forwarding, a leader. How a store hands out
// IDs is a capability of its own: a RangeStore reserves ranges for the
// allocator; a DirectStore hands out IDs itself. A store is one or the
// other, and implements nothing it cannot do.
type Store interface {
	// Start brings the store up: resumes, forms or joins a cluster, or
	// connects. It blocks until the store runs or ctx ends.
	Start(ctx context.Context) error

	// WaitReady blocks until the store can serve calls.
	WaitReady(ctx context.Context) error

	// Leader returns the node ID and peer address of the node that serves
	// STRONG calls, or empty strings when none is known (or none exists).
	Leader() (id, peerAddr string)

	// Healthy reports whether the node should receive traffic.
	Healthy() bool

	// Close releases the store.
	Close() error
}

// RangeStore is a Store the allocator serves IDs from: it reserves ranges
// and proves leadership (alloc.Backend), and tells the allocator of every
// floor any node sets, so that this node drops IDs below it from the
// ranges it holds.
type RangeStore interface {
	Store
	alloc.Backend
	SetFloorHook(fn func(key keyspace.Key, floor uint64))
}

// DirectStore is a Store that hands out IDs itself, with no ranges
// (etcd's Layotto layout: one write per ID); the API serves from it in
// place of the allocator.
type DirectStore interface {
	Store
	alloc.Sequencer
}

var _ RangeStore = (*cluster.Node)(nil)

// Daemon is a running node.
type Daemon struct {
	logger hclog.Logger
	store  Store
	alloc  *alloc.Allocator
	api    *server.Server
	authz  *auth.Authorizer
	// snowflake serves the Snowflake stores of a Raft store; nil otherwise.
	// snowflakeDeclares says this node declares stores of its own, which
	// WaitReady records in the log before opening.
	snowflake         *snowflake.Service
	snowflakeDeclares bool
	// peerAPI serves ordinal.v1.PeerService; nil for stores without one.
	peerAPI *server.PeerServer
	grpc    *grpc.Server
	lis     net.Listener
	served  chan error

	// peerPort carries Raft (a Raft store's) and the calls between nodes;
	// peerGRPC serves those calls on it. ownPeer says the daemon opened the
	// port itself (a store without Raft) and closes it.
	peerPort   *transport.Peer
	ownPeer    bool
	peerGRPC   *grpc.Server
	peerServed chan error

	stopStart context.CancelFunc // ends a Start still looking for peers
	startErr  chan error         // Start's result
	fatal     chan error         // see Err

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
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.Security.Auth.Logger == nil {
		cfg.Security.Auth.Logger = cfg.Logger.Named("auth")
	}
	authz, err := auth.New(cfg.Security.Auth)
	if err != nil {
		return nil, fmt.Errorf("authorization: %w", err)
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
	d := &Daemon{logger: cfg.Logger, authz: authz, lis: lis, served: make(chan error, 1), peerServed: make(chan error, 1),
		startErr: make(chan error, 1), fatal: make(chan error, 1), closing: make(chan struct{})}
	if err := d.openStore(cfg); err != nil {
		lis.Close()
		return nil, err
	}
	var seq alloc.Sequencer
	fail := func(err error) (*Daemon, error) {
		if d.alloc != nil {
			d.alloc.Close()
		}
		_ = d.store.Close()
		if d.ownPeer {
			_ = d.peerPort.Close()
		}
		lis.Close()
		return nil, err
	}
	var confirm func(context.Context) (alloc.Epoch, error)
	switch st := d.store.(type) {
	case DirectStore:
		seq = st
	case RangeStore:
		cfg.Alloc.Logger = cfg.Logger.Named("alloc")
		if cfg.Metrics != nil {
			cfg.Alloc.Metrics = cfg.Metrics.Alloc
		}
		d.alloc = alloc.New(st, cfg.Alloc)
		cfg.Metrics.GaugeFunc("alloc_pools", "Keys with ranges in this node's memory, per mode (a key used in both modes counts twice).",
			func() float64 { return float64(d.alloc.Pools()) })
		seq, confirm = d.alloc, d.alloc.Confirm
	default:
		return fail(fmt.Errorf("daemon: store %T neither reserves ranges (RangeStore) nor hands out IDs (DirectStore)", d.store))
	}
	// Snowflake stores: a Raft node serves them from its log, the etcd
	// store from a backend of its own (SnowflakeSourcer).
	sfLogger, sfMetrics := cfg.Logger.Named("snowflake"), (*metrics.Alloc)(nil)
	if cfg.Metrics != nil {
		sfMetrics = cfg.Metrics.Alloc
	}
	var sf *snowflake.Service
	switch st := d.store.(type) {
	case *cluster.Node:
		if sf, err = openSnowflake(st, confirm, cfg.Snowflake, sfLogger, sfMetrics); err != nil {
			return fail(err)
		}
		st.SetFloorHook(func(key keyspace.Key, floor uint64) {
			d.alloc.RaiseFloor(key, floor)
			sf.RaiseFloor(key, floor)
		})
	case SnowflakeSourcer:
		if sf, err = openSnowflakeSource(st, confirm, cfg.Snowflake, sfLogger, sfMetrics); err != nil {
			return fail(err)
		}
	default:
		if len(cfg.Snowflake.Stores) > 0 {
			return fail(fmt.Errorf("daemon: store %T does not serve Snowflake stores", st))
		}
	}
	if rs, ok := d.store.(RangeStore); ok {
		if _, isRaft := d.store.(*cluster.Node); !isRaft {
			rs.SetFloorHook(d.alloc.RaiseFloor)
		}
	}
	if sf != nil {
		d.snowflake, d.snowflakeDeclares = sf, len(cfg.Snowflake.Stores) > 0
		registerSnowflakeMetrics(cfg.Metrics, sf)
		seq = router{counters: seq, sf: sf}
	}
	scfg := server.Config{
		Sequencer: seq,
		Leader:    d.store.Leader,
		SelfID:    cfg.Cluster.NodeID,
		PeerConn:  d.peerPort.Conn,
		MaxCount:  cfg.MaxCount,
		Logger:    cfg.Logger.Named("api"),
	}
	if cfg.Metrics != nil {
		scfg.ForwardMetrics = cfg.Metrics.Forward
	}
	d.api = server.New(scfg)
	d.grpc = grpc.NewServer(d.clientServerOptions(cfg)...)
	d.api.Register(d.grpc)
	unary, stream := []grpc.UnaryServerInterceptor{grpccodec.UnaryServerInterceptor()}, []grpc.StreamServerInterceptor{grpccodec.StreamServerInterceptor()}
	if cfg.AccessLog {
		l := accessLogger(cfg.Logger.Named("access").With("port", "peer"))
		unary = append([]grpc.UnaryServerInterceptor{logging.UnaryServerInterceptor(l, accessLogEvents)}, unary...)
		stream = append([]grpc.StreamServerInterceptor{logging.StreamServerInterceptor(l, accessLogEvents)}, stream...)
	}
	if m := cfg.Metrics; m != nil {
		unary = append([]grpc.UnaryServerInterceptor{m.PeerGRPC.UnaryServerInterceptor()}, unary...)
		stream = append([]grpc.StreamServerInterceptor{m.PeerGRPC.StreamServerInterceptor()}, stream...)
	}
	d.peerGRPC = grpc.NewServer(d.peerPort.ServerOption(), grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.ForceServerCodecV2(grpccodec.Lenient()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...))
	d.api.RegisterForwarded(d.peerGRPC)
	if d.snowflake != nil {
		ordinalv1.RegisterSnowflakeServiceServer(d.grpc, server.NewSnowflakeServer(d.snowflake.Layout))
	}
	if node, ok := d.store.(*cluster.Node); ok {
		clusterAPI := server.NewClusterServer(node)
		ordinalv1.RegisterClusterServiceServer(d.grpc, clusterAPI)
		ordinalv1.RegisterClusterServiceServer(d.peerGRPC, clusterAPI)
		d.peerAPI = server.NewPeerServer(node, cfg.MaxCount)
		ordinalv1.RegisterPeerServiceServer(d.peerGRPC, d.peerAPI)
		ordinalv1.RegisterWorkerServiceServer(d.peerGRPC, server.NewWorkerServer(node))
	}
	if m := cfg.Metrics; m != nil {
		self := cfg.Cluster.NodeID
		m.GaugeFunc("leader", "1 while this node is the one that serves STRONG calls (the Raft leader, or the etcd store's elected node), else 0.",
			func() float64 {
				if id, _ := d.store.Leader(); id != "" && id == self {
					return 1
				}
				return 0
			})
		m.GaugeFunc("ready", "1 while /readyz answers 200 (see Daemon.Ready), else 0. Evaluated at each scrape.",
			func() float64 {
				ctx, cancel := context.WithTimeout(context.Background(), readyGaugeTimeout)
				defer cancel()
				if d.Ready(ctx) != nil {
					return 0
				}
				return 1
			})
		// Every method's series exist from the start, at zero.
		m.GRPC.InitializeMetrics(d.grpc)
		m.PeerGRPC.InitializeMetrics(d.peerGRPC)
	}
	go func() { d.served <- d.grpc.Serve(lis) }()
	go func() { d.peerServed <- d.peerGRPC.Serve(d.peerPort.GRPCListener()) }()
	if f, ok := d.store.(failingStore); ok {
		d.wg.Add(1)
		go d.watchFailure(f)
	}

	// Peers must be able to ask this node's status while it looks for them,
	// so the gRPC servers run before the node joins or forms a cluster.
	var ctx context.Context
	ctx, d.stopStart = context.WithCancel(context.Background())
	go func() { d.startErr <- d.store.Start(ctx) }()
	return d, nil
}

// clientServerOptions are the client port's gRPC server options: TLS when
// configured, and authorization of every call.
func (d *Daemon) clientServerOptions(cfg Config) []grpc.ServerOption {
	// Authorization first: a caller without the role learns nothing, not
	// even whether its request was well-formed. Then strings that are not
	// UTF-8 answer InvalidArgument (grpc-go's own codec would make them
	// Internal before any handler runs).
	unary := []grpc.UnaryServerInterceptor{d.authz.UnaryInterceptor(), grpccodec.UnaryServerInterceptor()}
	stream := []grpc.StreamServerInterceptor{d.authz.StreamInterceptor(), grpccodec.StreamServerInterceptor()}
	if cfg.AccessLog {
		// Before authorization too, so refused calls are logged.
		l := accessLogger(cfg.Logger.Named("access").With("port", "client"))
		unary = append([]grpc.UnaryServerInterceptor{logging.UnaryServerInterceptor(l, accessLogEvents)}, unary...)
		stream = append([]grpc.StreamServerInterceptor{logging.StreamServerInterceptor(l, accessLogEvents)}, stream...)
	}
	if m := cfg.Metrics; m != nil {
		// Metrics before authorization, so refused calls are counted.
		unary = append([]grpc.UnaryServerInterceptor{m.GRPC.UnaryServerInterceptor()}, unary...)
		stream = append([]grpc.StreamServerInterceptor{m.GRPC.StreamServerInterceptor()}, stream...)
	}
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.ForceServerCodecV2(grpccodec.Lenient()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
	sec := cfg.Security
	if sec.TLSCert != nil {
		require := sec.ClientCAs != nil && !sec.Auth.AnonymousIDs
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsutil.ServerConfig(sec.TLSCert, sec.ClientCAs, require))))
	}
	return opts
}

// readyGaugeTimeout bounds the readiness check a scrape of ordinal_ready
// makes (a follower asks its leader), well within a scrape's timeout.
const readyGaugeTimeout = time.Second

// accessLogEvents logs a call once, when it finishes.
var accessLogEvents = logging.WithLogOnEvents(logging.FinishCall)

// accessLogger writes go-grpc-middleware's call logs to l at debug level,
// whatever level the interceptor picked from the code: the access log is
// a debugging aid, and errors worth an operator's attention are logged
// where they happen.
func accessLogger(l hclog.Logger) logging.Logger {
	return logging.LoggerFunc(func(_ context.Context, _ logging.Level, msg string, fields ...any) {
		l.Debug(msg, fields...)
	})
}

// openStore opens the node's store and its peer port: a Raft node owns its
// peer port; for other stores the daemon opens one that carries forwarded
// calls only.
func (d *Daemon) openStore(cfg Config) error {
	if cfg.NewStore == nil {
		cfg.Cluster.Logger = cfg.Logger
		cfg.Cluster.Metrics = cfg.Metrics
		node, err := cluster.New(cfg.Cluster)
		if err != nil {
			return err
		}
		d.store, d.peerPort = node, node.PeerPort()
		return nil
	}
	c := cfg.Cluster
	peerPort, err := transport.ListenPeer(c.RaftAddr, c.RaftAdvertise, transport.PeerConfig{
		NodeID: c.NodeID,
		TLS:    c.PeerTLS,
		Token:  c.ClusterToken,
		Dial:   c.PeerDial,
		Logger: cfg.Logger.Named("peer"),
	})
	if err != nil {
		return fmt.Errorf("open the peer port on %s: %w", c.RaftAddr, err)
	}
	self := Self{NodeID: c.NodeID, PeerAddr: peerPort.Addr().String(), GRPCAddr: c.GRPCAdvertise}
	store, err := cfg.NewStore(self, cfg.Logger)
	if err != nil {
		peerPort.Close()
		return err
	}
	d.store, d.peerPort, d.ownPeer = store, peerPort, true
	return nil
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
	if d.snowflake != nil && d.snowflakeDeclares {
		// The node's Snowflake stores are recorded in the log before it
		// opens: a conflicting declaration refuses to start.
		if err := declareSnowflake(ctx, d.snowflake, d.logger.Named("snowflake")); err != nil {
			return err
		}
	}
	d.api.SetReady(true)
	if f, ok := d.store.(failingStore); ok && f.Err() != nil {
		// The node stopped while this call opened it for calls.
		d.api.SetReady(false)
		return f.Err()
	}
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

// failingStore is a store that can stop itself because its data is
// damaged (a *cluster.Node).
type failingStore interface {
	Failed() <-chan struct{}
	Err() error
}

// watchFailure closes the node for calls as soon as its store stops itself,
// and hands the reason to Err.
func (d *Daemon) watchFailure(f failingStore) {
	defer d.wg.Done()
	select {
	case <-d.closing:
		return
	case <-f.Failed():
	}
	d.api.SetReady(false)
	d.fatal <- f.Err()
}

// readyStore is a store that can say in detail whether the node should
// receive traffic (*cluster.Node: caught up with its leader).
type readyStore interface {
	Ready(ctx context.Context) error
}

// ErrNotServing is wrapped by Ready's error while the node is not open for
// calls: starting, stopped because its data is damaged, or closing.
var ErrNotServing = errors.New("daemon: not serving calls")

// Ready returns nil when the node should receive traffic: it has opened for
// calls (WaitReady), its store is sound, and the store says it is ready —
// for a Raft node, a member of a cluster with a leader whose log it has
// applied to within cluster.ReadyMaxLag entries; for other stores, their
// Healthy (the etcd store: etcd reachable, its session and leader known).
// Otherwise the error says why. /readyz serves it.
func (d *Daemon) Ready(ctx context.Context) error {
	if !d.api.Ready() {
		return fmt.Errorf("%w: the node is starting, stopping or stopped", ErrNotServing)
	}
	if f, ok := d.store.(failingStore); ok && f.Err() != nil {
		return f.Err()
	}
	if r, ok := d.store.(readyStore); ok {
		return r.Ready(ctx)
	}
	if !d.store.Healthy() {
		return fmt.Errorf("%w: the store is not healthy (for the etcd store: etcd unreachable, or no session or leader)", ErrNotServing)
	}
	return nil
}

// Err returns a channel that delivers, once, the error a node stopped
// itself with because its data is damaged (wrapping cluster.ErrDamaged):
// a log entry or snapshot it could not apply. The node then answers every
// call Unavailable and reports NOT_SERVING, and the process should exit
// with that error, which says what to do. Nothing is delivered for a store
// that cannot fail this way, nor after Close.
func (d *Daemon) Err() <-chan error { return d.fatal }

// GRPCAddr returns the address the gRPC server listens on.
func (d *Daemon) GRPCAddr() string { return d.lis.Addr().String() }

// RaftAddr returns the address of the node's peer port (Raft, for a Raft
// store, and the calls between nodes).
func (d *Daemon) RaftAddr() string { return d.peerPort.Addr().String() }

// Authorizer returns the node's authorization of client calls, which other
// listeners of the process (pprof) share.
func (d *Daemon) Authorizer() *auth.Authorizer { return d.authz }

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
	if d.peerAPI != nil {
		d.peerAPI.Drain()
	}
	serveErr := stopGracefully(d.grpc, d.served)
	peerErr := stopGracefully(d.peerGRPC, d.peerServed)
	if d.snowflake != nil {
		d.snowflake.Close()
	}
	if d.alloc != nil {
		d.alloc.Close()
	}
	errs := []error{serveErr, peerErr, d.api.Close(), d.store.Close()}
	if d.ownPeer {
		errs = append(errs, d.peerPort.Close())
	}
	return errors.Join(errs...)
}

// stopGracefully stops g, waiting up to gracefulStopTimeout for calls in
// flight, and returns what its Serve returned.
func stopGracefully(g *grpc.Server, served <-chan error) error {
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(gracefulStopTimeout):
		g.Stop()
	}
	err := <-served
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}
