// Package testcluster runs real ordinal nodes in-process for tests: each
// node is a daemon.Daemon with its own data directory, Raft over real TCP
// and gRPC on 127.0.0.1. Nodes can be stopped, restarted on the same
// addresses and directory, wiped, added and removed.
//
// Nodes run secured, as production should: mutual TLS between nodes with
// peer certificates of a test CA, TLS on the client port with client
// certificates required, and the client certificate named "admin" holding
// the admin role. Node.Conn is such an admin client. Options.Insecure
// starts them in development mode instead.
package testcluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/auth"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/faultnet"
	"github.com/ordinal-dev/ordinal/internal/testpki"
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"github.com/ordinal-dev/ordinal/tlsutil"
	"github.com/ordinal-dev/ordinal/transport"
)

// TestWeakRangeTTL is the WEAK range TTL of test nodes: SetFloor waits
// alloc.FloorHold of it at most.
const TestWeakRangeTTL = time.Second

// AdminName is the client certificate name that has the admin role in a
// secured test cluster.
const AdminName = testpki.AdminName

// StartTimeout bounds how long a node may take to become ready.
const StartTimeout = 20 * time.Second

// Node is one member of a test cluster.
type Node struct {
	ID       string
	Dir      string
	GRPCAddr string
	RaftAddr string

	c      *Cluster
	join   []string
	expect int
	d      *daemon.Daemon
	conn   *grpc.ClientConn
}

// Cluster is a set of in-process nodes.
type Cluster struct {
	t      testing.TB
	root   string
	logger hclog.Logger
	opts   Options
	pki    *testpki.PKI // nil when Insecure

	mu    sync.Mutex
	nodes map[string]*Node
}

// Options configure a cluster started by NewWithOptions.
type Options struct {
	// Net, when set, carries every connection between nodes: Raft, the
	// nodes' gRPC calls to each other and the client calls they forward
	// to the leader. Each node is registered in it under its ID with its
	// gRPC and Raft addresses, so tests cut, delay and drop traffic by
	// node ID. Connections of test clients (Node.Conn) do not go through
	// it.
	Net *faultnet.Net

	// Configure, when set, adjusts a node's configuration before every
	// start of it, restarts included.
	Configure func(nodeID string, cfg *daemon.Config)

	// Insecure starts the nodes in development mode: plain TCP on both
	// ports and no credentials asked of anyone.
	Insecure bool
}

// New starts n nodes that form one cluster through --bootstrap-expect and
// waits until all are ready.
func New(t testing.TB, n int) *Cluster {
	t.Helper()
	return NewWithOptions(t, n, Options{})
}

// NewWithNet is New with every connection between nodes going through
// fnet.
func NewWithNet(t testing.TB, n int, fnet *faultnet.Net) *Cluster {
	t.Helper()
	return NewWithOptions(t, n, Options{Net: fnet})
}

// NewWithOptions is New with options.
func NewWithOptions(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, root: t.TempDir(), nodes: map[string]*Node{}, logger: testLogger(t), opts: opts}
	if !opts.Insecure {
		c.pki = testpki.New(t, filepath.Join(c.root, "pki"))
	}
	t.Cleanup(c.Close)
	var nodes []*Node
	for i := 1; i <= n; i++ {
		nodes = append(nodes, c.newNode(fmt.Sprintf("n%d", i)))
	}
	var addrs []string
	for _, nd := range nodes {
		addrs = append(addrs, nd.RaftAddr)
	}
	for _, nd := range nodes {
		nd.join, nd.expect = addrs, n
		if n == 1 {
			nd.join, nd.expect = nil, 0
		}
		nd.start()
	}
	for _, nd := range nodes {
		nd.WaitReady()
	}
	c.WaitVoters(n)
	return c
}

// WaitVoters waits until the leader counts n voters. A node that was slow
// to start may have been admitted as a non-voter first and promoted later.
func (c *Cluster) WaitVoters(n int) {
	c.t.Helper()
	WaitFor(c.t, StartTimeout, fmt.Sprintf("%d voters", n), func() bool {
		leader := c.Leader()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		m, err := leader.Cluster().Members(ctx, &ordinalv1.MembersRequest{})
		if err != nil {
			return false
		}
		voters := 0
		for _, mm := range m.Members {
			if mm.Voter {
				voters++
			}
		}
		return voters == n
	})
}

// Single starts a single-node cluster and returns its node once it serves
// calls: the usual fixture for tests of the API, the client and the tools.
func Single(t testing.TB) *Node {
	t.Helper()
	return New(t, 1).Node("n1")
}

func testLogger(t testing.TB) hclog.Logger {
	level := hclog.Warn
	if os.Getenv("ORDINAL_TEST_LOG") != "" {
		level = hclog.LevelFromString(os.Getenv("ORDINAL_TEST_LOG"))
	}
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: level, Output: os.Stderr})
}

func (c *Cluster) newNode(id string) *Node {
	nd := &Node{ID: id, Dir: filepath.Join(c.root, id), GRPCAddr: testutil.FreeAddr(c.t), RaftAddr: testutil.FreeAddr(c.t), c: c}
	if c.opts.Net != nil {
		c.opts.Net.Register(id, nd.GRPCAddr, nd.RaftAddr)
	}
	c.mu.Lock()
	c.nodes[id] = nd
	c.mu.Unlock()
	return nd
}

func (nd *Node) start() {
	t := nd.c.t
	t.Helper()
	cfg := daemon.Config{
		Cluster: cluster.Config{
			NodeID:          nd.ID,
			DataDir:         nd.Dir,
			RaftAddr:        nd.RaftAddr,
			Join:            nd.join,
			BootstrapExpect: nd.expect,
			Bootstrap:       len(nd.join) == 0 && nd.expect == 0,
			Logger:          nd.c.logger.Named(nd.ID),
		},
		GRPCAddr: nd.GRPCAddr,
		// Short WEAK ranges, so that a floor a node cannot confirm holds
		// (and SetFloor returns) within about a second.
		Alloc:  alloc.Config{WeakRangeTTL: TestWeakRangeTTL},
		Logger: nd.c.logger.Named(nd.ID),
	}
	if fnet := nd.c.opts.Net; fnet != nil {
		cfg.Cluster.PeerDial = fnet.Dialer(nd.ID).Dial
	}
	if nd.c.pki != nil {
		Secure(t, nd.c.pki, nd.ID, &cfg)
	} else {
		cfg.Security.Auth.Open = true
	}
	if nd.c.opts.Configure != nil {
		nd.c.opts.Configure(nd.ID, &cfg)
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		nd.d, err = daemon.Start(cfg)
		if err == nil {
			break
		}
		// The port of a node just stopped can take a moment to free up.
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("start %s: %v", nd.ID, err)
	}
	// A fresh connection per start: the old one may sit in reconnect
	// backoff and fail calls fast.
	if nd.conn != nil {
		nd.conn.Close()
	}
	nd.conn, err = grpc.NewClient(nd.GRPCAddr, nd.c.DialOptions(AdminName)...)
	if err != nil {
		t.Fatal(err)
	}
}

// Secure configures node nodeID as production should run, with the
// certificates of p: mutual TLS between nodes with its peer certificate,
// TLS on the client port with client certificates of p's client CA
// required, and the client certificate AdminName holding the admin role.
func Secure(t testing.TB, p *testpki.PKI, nodeID string, cfg *daemon.Config) {
	t.Helper()
	certFile, keyFile := p.Peer(nodeID)
	peerTLS, err := transport.LoadPeerTLS(certFile, keyFile, p.PeerCAFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = p.Server("node", "127.0.0.1", "localhost")
	kp, err := tlsutil.LoadKeyPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cas, err := tlsutil.LoadCAPool(p.ClientCAFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Cluster.PeerTLS = peerTLS
	cfg.Security = daemon.Security{TLSCert: kp, ClientCAs: cas, Auth: auth.Config{AdminNames: []string{AdminName}}}
}

// PeerClient returns a client of node nd's peer port, as another node of
// the cluster would call it: the test acts as node asID, with a peer
// certificate of the cluster's CA for that ID when the cluster is secured.
func (c *Cluster) PeerClient(nd *Node, asID string) ordinalv1.PeerServiceClient {
	c.t.Helper()
	return ordinalv1.NewPeerServiceClient(c.PeerConn(nd, asID))
}

// PeerConn is PeerClient's connection, for the peer port's other
// services.
func (c *Cluster) PeerConn(nd *Node, asID string) *grpc.ClientConn {
	c.t.Helper()
	cfg := transport.PeerConfig{NodeID: asID}
	if c.pki != nil {
		certFile, keyFile := c.pki.Peer(asID)
		tlsCfg, err := transport.LoadPeerTLS(certFile, keyFile, c.pki.PeerCAFile, nil)
		if err != nil {
			c.t.Fatal(err)
		}
		cfg.TLS = tlsCfg
	}
	port, err := transport.ListenPeer("127.0.0.1:0", "", cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	conn, err := grpc.NewClient(nd.RaftAddr, port.DialOptions(nd.ID)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		conn.Close()
		port.Close()
	})
	return conn
}

// PKI returns the certificates of a secured cluster, nil when Insecure.
func (c *Cluster) PKI() *testpki.PKI { return c.pki }

// ClientTLS returns a TLS configuration for a client of the cluster's
// client ports with a certificate named name (none when name is empty).
func (c *Cluster) ClientTLS(name string) *tls.Config { return c.pki.ClientTLS(name) }

// DialOptions returns the options for a client connection to the nodes'
// client ports with the client certificate name (plain TCP when the
// cluster is Insecure).
func (c *Cluster) DialOptions(name string) []grpc.DialOption {
	if c.pki == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return []grpc.DialOption{c.pki.DialOption(name)}
}

// WaitReady waits until the node serves calls.
func (nd *Node) WaitReady() {
	nd.c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if err := nd.d.WaitReady(ctx); err != nil {
		nd.c.t.Fatalf("%s not ready: %v", nd.ID, err)
	}
}

// TryRestart stops the node, starts it again and returns what the
// daemon's WaitReady returned; a node that failed to get ready is left
// stopped.
func (nd *Node) TryRestart() error {
	nd.c.t.Helper()
	nd.Stop()
	nd.start()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	err := nd.d.WaitReady(ctx)
	if err != nil {
		nd.Stop()
	}
	return err
}

// Sequencer returns a client of the node's SequencerService.
func (nd *Node) Sequencer() ordinalv1.SequencerServiceClient {
	return ordinalv1.NewSequencerServiceClient(nd.conn)
}

// Cluster returns a client of the node's ClusterService.
func (nd *Node) Cluster() ordinalv1.ClusterServiceClient {
	return ordinalv1.NewClusterServiceClient(nd.conn)
}

// DialOptions returns the options for a client connection to the node's
// client port with the client certificate name (see Cluster.DialOptions).
func (nd *Node) DialOptions(name string) []grpc.DialOption { return nd.c.DialOptions(name) }

// Conn returns the node's client connection.
func (nd *Node) Conn() *grpc.ClientConn { return nd.conn }

// Daemon returns the running daemon, nil while stopped.
func (nd *Node) Daemon() *daemon.Daemon { return nd.d }

// Running reports whether the node runs.
func (nd *Node) Running() bool { return nd.d != nil }

// Stop shuts the node down, keeping its data directory.
func (nd *Node) Stop() {
	nd.c.t.Helper()
	if nd.d == nil {
		return
	}
	if err := nd.d.Close(); err != nil {
		nd.c.t.Logf("stop %s: %v", nd.ID, err)
	}
	nd.d = nil
}

// Restart starts a stopped node again with the same flags and waits until
// it is ready.
func (nd *Node) Restart() {
	nd.c.t.Helper()
	nd.Stop()
	nd.start()
	nd.WaitReady()
}

// RestartAll stops every node, starts them all again with their flags and
// data, and waits until all are ready: a full-cluster restart.
func (c *Cluster) RestartAll() {
	c.t.Helper()
	nodes := c.Nodes()
	for _, nd := range nodes {
		nd.Stop()
	}
	for _, nd := range nodes {
		nd.start()
	}
	for _, nd := range nodes {
		nd.WaitReady()
	}
}

// Wipe deletes the node's data directory; the node must be stopped.
func (nd *Node) Wipe() {
	if nd.d != nil {
		nd.c.t.Fatalf("wipe %s while it runs", nd.ID)
	}
	if err := os.RemoveAll(nd.Dir); err != nil {
		nd.c.t.Fatal(err)
	}
}

// StartJoining starts the stopped (or new) node with --join pointing at
// the other nodes, as an operator adds a node to a running cluster, and
// waits until it is ready.
func (nd *Node) StartJoining() {
	nd.c.t.Helper()
	nd.join, nd.expect = nd.c.addrsExcept(nd.ID), 0
	nd.start()
	nd.WaitReady()
}

// Add creates a new node and joins it to the running cluster. prepare,
// when given, sees the node (its addresses chosen) before it starts.
func (c *Cluster) Add(id string, prepare ...func(*Node)) *Node {
	c.t.Helper()
	nd := c.newNode(id)
	for _, f := range prepare {
		f(nd)
	}
	nd.StartJoining()
	return nd
}

func (c *Cluster) addrsExcept(id string) []string {
	var out []string
	for _, nd := range c.Nodes() {
		if nd.ID != id {
			out = append(out, nd.RaftAddr)
		}
	}
	return out
}

// Nodes returns every node, running or not, ordered by ID.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Node, 0, len(c.nodes))
	for _, nd := range c.nodes {
		out = append(out, nd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Net returns the fault-injecting network the nodes talk through, nil
// when they talk directly.
func (c *Cluster) Net() *faultnet.Net { return c.opts.Net }

// Node returns the node with id.
func (c *Cluster) Node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// Leader waits until exactly one running node leads and returns it.
func (c *Cluster) Leader() *Node {
	c.t.Helper()
	var leader *Node
	WaitFor(c.t, StartTimeout, "a leader", func() bool {
		leader = nil
		for _, nd := range c.Nodes() {
			if nd.d != nil && nd.d.Node().IsLeader() {
				if leader != nil {
					return false
				}
				leader = nd
			}
		}
		return leader != nil
	})
	return leader
}

// Followers returns the running nodes other than leader.
func (c *Cluster) Followers(leader *Node) []*Node {
	var out []*Node
	for _, nd := range c.Nodes() {
		if nd != leader && nd.d != nil {
			out = append(out, nd)
		}
	}
	return out
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, nd := range c.Nodes() {
		nd.Stop()
		if nd.conn != nil {
			nd.conn.Close()
		}
	}
}

// WaitFor polls cond until it holds or timeout passes; see
// testutil.WaitFor.
var WaitFor = testutil.WaitFor
