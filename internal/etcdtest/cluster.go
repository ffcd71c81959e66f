package etcdtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testpki"
)

// Cluster is a set of in-process ordinal nodes (daemon.Daemon, gRPC on
// loopback) that keep their counters in one etcd, each through its own
// Proxy so that a test can pause or cut one node's link to etcd.
type Cluster struct {
	t      testing.TB
	Etcd   *Etcd
	Config etcdcompat.Config // as given, with a Prefix unique to the cluster
	alloc  alloc.Config
	sf     daemon.Snowflake
	logger hclog.Logger
	pki    *testpki.PKI

	mu    sync.Mutex
	nodes []*Node
}

// Node is one ordinal node of a Cluster.
type Node struct {
	Name  string
	Proxy *Proxy

	c     *Cluster
	d     *daemon.Daemon
	store daemon.Store
	conn  *grpc.ClientConn
}

// Options configure a Cluster.
type Options struct {
	// Nodes is how many nodes to start, named n1..nN.
	Nodes int
	// Store configures every node's store. Endpoints, NodeID and
	// PeerAdvertise are set per node; an empty Prefix becomes one unique to the
	// cluster, and an unset SessionTTL etcd's minimum, 2s, for fast
	// failover.
	Store etcdcompat.Config
	// Alloc tunes every node's allocator.
	Alloc alloc.Config
	// Snowflake declares every node's Snowflake stores.
	Snowflake daemon.Snowflake
	// Insecure runs the nodes in development mode: plain gRPC on both
	// ports, no credentials. By default they run secured
	// (testcluster.Secure) and Conn is an admin client.
	Insecure bool
}

// NewCluster starts the nodes and waits until all are ready.
func NewCluster(tb testing.TB, e *Etcd, opts Options) *Cluster {
	tb.Helper()
	cfg := opts.Store
	if cfg.Prefix == "" {
		cfg.Prefix = UniquePrefix(tb)
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 2 * time.Second
	}
	if opts.Alloc.WeakRangeTTL == 0 {
		opts.Alloc.WeakRangeTTL = testcluster.TestWeakRangeTTL
	}
	c := &Cluster{t: tb, Etcd: e, Config: cfg, alloc: opts.Alloc, sf: opts.Snowflake, logger: testLogger()}
	if !opts.Insecure {
		c.pki = testpki.New(tb, "")
	}
	tb.Cleanup(c.Close)
	for i := 1; i <= opts.Nodes; i++ {
		c.add(fmt.Sprintf("n%d", i))
	}
	for _, nd := range c.Nodes() {
		nd.WaitReady()
	}
	return c
}

// UniquePrefix returns an etcd key prefix no other test uses.
func UniquePrefix(tb testing.TB) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := regexp.MustCompile(`[^A-Za-z0-9_-]+`).ReplaceAllString(tb.Name(), "_")
	return "/t/" + name + "-" + hex.EncodeToString(b) + "/"
}

func testLogger() hclog.Logger {
	level := hclog.Warn
	if l := os.Getenv("ORDINAL_TEST_LOG"); l != "" {
		level = hclog.LevelFromString(l)
	}
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: level, Output: os.Stderr})
}

// Add starts one more node and waits until it is ready.
func (c *Cluster) Add(name string) *Node {
	c.t.Helper()
	nd := c.add(name)
	nd.WaitReady()
	return nd
}

func (c *Cluster) add(name string) *Node {
	c.t.Helper()
	// The cluster closes the proxy after stopping the node, so that the
	// node can hand over leadership on its way out.
	p, err := startProxy(c.Etcd.Endpoint)
	if err != nil {
		c.t.Fatal(err)
	}
	nd := &Node{Name: name, Proxy: p, c: c}
	c.mu.Lock()
	c.nodes = append(c.nodes, nd)
	c.mu.Unlock()
	nd.start()
	return nd
}

func (nd *Node) start() {
	t := nd.c.t
	t.Helper()
	cfg := nd.c.Config
	cfg.Endpoints = []string{nd.Proxy.Addr}
	logger := nd.c.logger.Named(nd.Name)
	dcfg := daemon.Config{
		Cluster:   cluster.Config{NodeID: nd.Name, RaftAddr: "127.0.0.1:0"},
		GRPCAddr:  "127.0.0.1:0",
		Alloc:     nd.c.alloc,
		Snowflake: nd.c.sf,
		Logger:    logger,
		NewStore: func(self daemon.Self, lg hclog.Logger) (daemon.Store, error) {
			s, err := etcdcompat.Open(cfg.WithNode(self.NodeID, self.PeerAddr, self.GRPCAddr, lg))
			nd.store = s
			return s, err
		},
	}
	dial := grpc.WithTransportCredentials(insecure.NewCredentials())
	if nd.c.pki != nil {
		testcluster.Secure(t, nd.c.pki, nd.Name, &dcfg)
		dial = nd.c.pki.DialOption(testpki.AdminName)
	} else {
		dcfg.Security.Auth.Open = true
	}
	d, err := daemon.Start(dcfg)
	if err != nil {
		t.Fatalf("start %s: %v", nd.Name, err)
	}
	nd.d = d
	if nd.conn != nil {
		nd.conn.Close()
	}
	nd.conn, err = grpc.NewClient(d.GRPCAddr(), dial)
	if err != nil {
		t.Fatal(err)
	}
}

// Start starts a stopped node without waiting until it is ready.
func (nd *Node) Start() {
	nd.c.t.Helper()
	if nd.d != nil {
		nd.c.t.Fatalf("start %s: already running", nd.Name)
	}
	nd.start()
}

// WaitReady waits until the node serves calls.
func (nd *Node) WaitReady() {
	nd.c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if err := nd.Ready(ctx); err != nil {
		nd.c.t.Fatalf("%s not ready: %v", nd.Name, err)
	}
}

// Ready waits until the node serves calls or ctx ends.
func (nd *Node) Ready(ctx context.Context) error { return nd.d.WaitReady(ctx) }

// Daemon returns the running daemon, nil while stopped.
func (nd *Node) Daemon() *daemon.Daemon { return nd.d }

// Store returns the node's store.
func (nd *Node) Store() daemon.Store { return nd.store }

// IsLeader reports whether the node believes it serves STRONG calls
// (native layout).
func (nd *Node) IsLeader() bool {
	s, ok := nd.store.(*etcdcompat.Store)
	return ok && nd.d != nil && s.IsLeader()
}

// GRPCAddr returns the node's gRPC address.
func (nd *Node) GRPCAddr() string { return nd.d.GRPCAddr() }

// Conn returns a client connection to the node.
func (nd *Node) Conn() *grpc.ClientConn { return nd.conn }

// Sequencer returns a client of the node's SequencerService.
func (nd *Node) Sequencer() ordinalv1.SequencerServiceClient {
	return ordinalv1.NewSequencerServiceClient(nd.conn)
}

// Stop shuts the node down.
func (nd *Node) Stop() {
	if nd.d == nil {
		return
	}
	if err := nd.d.Close(); err != nil {
		nd.c.t.Logf("stop %s: %v", nd.Name, err)
	}
	nd.d = nil
}

// Restart stops the node and starts it again, and waits until it is
// ready. Its gRPC address changes.
func (nd *Node) Restart() {
	nd.c.t.Helper()
	nd.Stop()
	nd.start()
	nd.WaitReady()
}

// Nodes returns every node in the order they were added.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Leader waits until exactly one running node believes it leads and
// returns it; nodes in except are not counted.
func (c *Cluster) Leader(except ...*Node) *Node {
	c.t.Helper()
	var leader *Node
	err := Eventually(StartTimeout, func() bool {
		leader = nil
	nodes:
		for _, nd := range c.Nodes() {
			for _, x := range except {
				if nd == x {
					continue nodes
				}
			}
			if nd.IsLeader() {
				if leader != nil {
					return false
				}
				leader = nd
			}
		}
		return leader != nil
	})
	if err != nil {
		c.t.Fatalf("no single leader within %v", StartTimeout)
	}
	return leader
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, nd := range c.Nodes() {
		nd.Stop()
		if nd.conn != nil {
			nd.conn.Close()
		}
		nd.Proxy.Close()
	}
}
