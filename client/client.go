// Package client is a Go client for ordinal, the Raft-replicated service
// that hands out unique, increasing 64-bit IDs per key.
//
// A Client talks to the nodes of a cluster given to New as a list
// ("a:1,b:2,c:3") or as a DNS name with an address per node. It watches
// each node's health: WEAK calls take turns among the healthy nodes;
// STRONG calls, SetFloor and HighWater go straight to the leader (see
// LeaderHealthService), and, while no leader is known, to any node, which
// forwards them. A Client given one node sends it everything, and the node
// forwards what only the leader may answer.
//
// Errors from the server are returned as gRPC status errors, so callers
// branch on status.Code(err): InvalidArgument for a request the server
// rejects, Unavailable when the cluster cannot serve the call now,
// OutOfRange when a key has run out of IDs. When no node could serve a
// call, the error keeps the last node's code and says so: "ordinal: no
// node could serve the call (tried a:1, b:2, c:3): ...".
//
// Calls that fail with Unavailable are retried, on another node at once
// and then after a backoff, until the context's deadline or, without one,
// for DefaultRetryWindow (5 s: a leader failover takes about 1.3 s); see
// WithRetry and WithRetryWindow. That is safe for every method: a NextID
// that failed may still have consumed an ID on the server, but the server
// never hands an ID out twice, so a retry can only leave a gap in the
// sequence, never a duplicate.
//
// WithWeakPrefetch serves WEAK IDs from blocks taken ahead, in memory;
// WithStreaming coalesces many concurrent callers into few requests.
//
// # Secured clusters
//
// A cluster that serves TLS, requires client certificates (mTLS) or
// authorizes callers by bearer token is reached with WithTLS and WithToken
// (or WithTokenFile, which picks up a rotated token), with nothing but
// crypto/tls:
//
//	pem, err := os.ReadFile("ca.pem") // the CA that signed the nodes' certificates
//	roots := x509.NewCertPool()
//	roots.AppendCertsFromPEM(pem)
//	cert, err := tls.LoadX509KeyPair("client.pem", "client-key.pem") // only for mTLS
//	c, err := client.New("ordinal-1.example.com:34904", client.WithToken(token),
//		client.WithTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}))
//
// Check each err. The node's certificate must name the host given to New,
// or tls.Config.ServerName. Calls a node refuses fail with Unauthenticated
// (no or unknown credentials) or PermissionDenied (credentials without the
// role the call needs). A failed TLS handshake fails calls with
// Unavailable and a message that says why ("x509: certificate signed by
// unknown authority", "x509: certificate is valid for ..., not ...",
// "tls: certificate required"); under TLS 1.3 the node checks the client's
// certificate last, so its refusal may arrive as a broken connection
// instead. A token is never sent in clear text to a node that is not on
// this host: without TLS such calls fail with Unauthenticated before
// anything is sent.
package client

import (
	"context"
	"errors"
	"fmt"
	"math"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
)

// Mode says how an ID is allocated.
type Mode int

const (
	// Weak IDs are unique and increase per serving node. A node serves them
	// from a block of IDs it reserved, with no consensus round per call, so
	// they are cheap but IDs from different nodes interleave.
	Weak Mode = iota

	// Strong IDs increase strictly across the whole cluster and are
	// linearizable: an ID handed out after another call returned is
	// greater than every ID that call saw.
	Strong
)

// String returns "weak", "strong", or "Mode(n)" for an unknown mode.
func (m Mode) String() string {
	switch m {
	case Weak:
		return "weak"
	case Strong:
		return "strong"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// increment maps m to the wire enum. Weak and Strong share their values
// with it (Layotto's numbers): Weak goes out as 0,
// AUTO_INCREMENT_UNSPECIFIED, which every ordinal server serves as WEAK
// (the explicit AUTO_INCREMENT_WEAK, 2, is new), and Strong as 1,
// AUTO_INCREMENT_STRONG. An unknown mode is sent as an invalid value so
// that the server, not the client, rejects it with InvalidArgument.
func (m Mode) increment() ordinalv1.SequencerOptions_AutoIncrement {
	if m < 0 || m > math.MaxInt32 {
		return math.MaxInt32
	}
	return ordinalv1.SequencerOptions_AutoIncrement(m)
}

// ErrInvalidOption is wrapped by the error New returns when an Option is
// given a value it cannot use.
var ErrInvalidOption = errors.New("client: invalid option")

// Client is a connection to an ordinal cluster: to the nodes of the
// address list given to New. It is safe for concurrent use; share one per
// process rather than opening one per call.
type Client struct {
	r        *router
	retry    retryPolicy
	def      *Store
	stream   bool      // WithStreaming
	prefetch *prefetch // nil unless WithWeakPrefetch
}

// New returns a Client for the nodes at addrs: one address (host:port),
// several separated by commas ("a:1,b:2,c:3"), or DNS names that resolve
// to several addresses (each address counts as a node; TLS verifies the
// name). A gRPC target with a scheme ("dns:///name:port",
// "unix:///path") is dialled as it is, as one node, and must stand alone.
//
// New does not connect: each node's connection is made on the first call
// and re-made as needed, so New succeeds even when every node is down. It
// fails, with an error wrapping ErrInvalidAddress, only for a list it
// cannot read. Names are looked up on the first call, again every 30 s
// while the Client is used, and after a call failed on every node.
//
// Given more than one node, the Client watches each node's health
// service: WEAK calls take turns among the nodes that are up and healthy;
// STRONG calls, SetFloor and HighWater go straight to the node that
// reports it leads (LeaderHealthService), saving the hop a follower would
// forward them over, and to any node (which forwards them) while no
// leader is known. A call that fails with Unavailable is tried at once on
// another node, then, once every node failed, again after a backoff, until
// the context's deadline or, without one, DefaultRetryWindow (WithRetry,
// WithRetryWindow).
//
// By default the connections are plain TCP; pass WithTLS to use TLS.
func New(addrs string, opts ...Option) (*Client, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	targets, err := parseTargets(addrs)
	if err != nil {
		return nil, err
	}
	r, err := newRouter(targets, &o)
	if err != nil {
		return nil, err
	}
	return newClient(r, &o), nil
}

// NewFromConn returns a Client that makes its calls on conn, a connection
// the caller made and keeps: Close ends the Client's streams but leaves
// conn open. Only the options about calls apply (WithStore, WithRetry,
// WithRetryWindow, WithStreaming, WithWeakPrefetch); transport security,
// tokens, metadata and dial options are conn's own business, and so is
// choosing a node: the Client sends every call on conn and returns its
// errors as they are. It is for programs that already hold a connection
// to a node, such as a node forwarding calls to its leader over a shared
// pool.
func NewFromConn(conn *grpc.ClientConn, opts ...Option) (*Client, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, fmt.Errorf("%w: NewFromConn needs a connection", ErrInvalidOption)
	}
	return newClient(newConnRouter(conn), &o), nil
}

func newClient(r *router, o *options) *Client {
	c := &Client{
		r:      r,
		retry:  retryPolicy{attempts: o.attempts, backoff: o.backoff, window: o.window},
		stream: o.stream,
	}
	c.def = c.Store(o.store)
	if o.prefetch > 0 {
		c.prefetch = newPrefetch(c, o.prefetch)
	}
	return c
}

// NewConn returns a gRPC connection to the nodes at addrs made as New
// makes the Client's: with the transport security (WithTLS), the bearer
// token (WithToken, WithTokenFile), the metadata (WithMetadata) and the
// dial options (WithDialOptions) of opts. The options about calls
// (WithStore, WithRetry, WithStreaming, ...) do not apply to it. It is for
// the services the Client has no methods for, such as ordinal.v1.ClusterService
// and grpc.health.v1.Health. Given several addresses (or a name that
// resolves to several), it connects to the first that answers and moves
// to the next when that one fails (gRPC's pick_first). Like New, it does
// not connect. The caller closes the connection.
func NewConn(addrs string, opts ...Option) (*grpc.ClientConn, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	targets, err := parseTargets(addrs)
	if err != nil {
		return nil, err
	}
	// Outermost, so that it sees the error the caller gets.
	o.dial = append([]grpc.DialOption{grpc.WithChainUnaryInterceptor(nameUnavailable(names(targets)))}, o.dial...)
	var conn *grpc.ClientConn
	if len(targets) == 1 {
		// One entry: gRPC resolves a name itself, as it always did.
		_, local := targetEndpoint(targets[0].raw)
		conn, err = grpc.NewClient(targets[0].raw, o.dialOptions(targets[0].raw, local)...)
	} else {
		conn, err = dialList(targets, &o)
	}
	if err != nil {
		return nil, fmt.Errorf("client: connect to %q: %w", addrs, err)
	}
	return conn, nil
}

// nameUnavailable returns an interceptor that makes an Unavailable error
// name ordinal and the nodes, as the Client's errors do.
func nameUnavailable(nodes []string) grpc.UnaryClientInterceptor {
	tried := make([]endpoint, len(nodes))
	for i, n := range nodes {
		tried[i] = endpoint{name: n}
	}
	r := &router{named: true}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if status.Code(err) != codes.Unavailable {
			return err
		}
		return r.wrap(err, tried)
	}
}

func newOptions(opts []Option) (options, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return o, o.err
}

// Store returns a handle on the named store, a namespace of keys separate
// from every other store. The empty name means the server's default store.
// Handles are cheap and share the Client's connection.
func (c *Client) Store(name string) *Store {
	return &Store{c: c, name: name}
}

// NextID returns one ID for key in the Client's default store.
func (c *Client) NextID(ctx context.Context, key string, mode Mode) (int64, error) {
	return c.def.NextID(ctx, key, mode)
}

// NextIDs reserves count contiguous IDs for key in the Client's default
// store and returns the first: the caller owns first, first+1, ...,
// first+count-1.
func (c *Client) NextIDs(ctx context.Context, key string, mode Mode, count int64) (int64, error) {
	return c.def.NextIDs(ctx, key, mode, count)
}

// HighWater returns the high-water mark of key in the Client's default
// store without consuming an ID.
func (c *Client) HighWater(ctx context.Context, key string) (int64, error) {
	return c.def.HighWater(ctx, key)
}

// SetFloor raises the counter of key in the Client's default store above
// floor and returns the high-water mark after the call.
func (c *Client) SetFloor(ctx context.Context, key string, floor int64) (int64, error) {
	return c.def.SetFloor(ctx, key, floor)
}

// Close closes the connections (for a Client from NewFromConn, only its
// streams: the connection is the caller's). Calls in flight, and calls
// made after, fail with Canceled.
func (c *Client) Close() error {
	if c.prefetch != nil {
		c.prefetch.close()
	}
	return c.r.close()
}

// Store is a handle on one store of a Client. It is safe for concurrent
// use.
type Store struct {
	c    *Client
	name string
}

// Name returns the store's name as given to Client.Store; empty means the
// server's default store.
func (s *Store) Name() string { return s.name }

// NextID returns one ID for key. WEAK IDs are unique and increase per node;
// STRONG IDs increase strictly across the cluster.
func (s *Store) NextID(ctx context.Context, key string, mode Mode) (int64, error) {
	if mode == Weak && s.c.prefetch != nil {
		return s.c.prefetch.next(ctx, s.name, key, 1)
	}
	return s.nextIDs(ctx, key, mode, 1, false)
}

// NextIDs reserves count contiguous IDs for key and returns the first: the
// caller owns first, first+1, ..., first+count-1. One call costs the same
// as NextID, so it is the way to take many IDs at once.
func (s *Store) NextIDs(ctx context.Context, key string, mode Mode, count int64) (int64, error) {
	if mode == Weak && s.c.prefetch != nil && count >= 1 && count <= s.c.prefetch.size/2 {
		return s.c.prefetch.next(ctx, s.name, key, count)
	}
	return s.nextIDs(ctx, key, mode, count, true)
}

// nextIDs takes count IDs from a node: through the node's stream with
// WithStreaming, otherwise with one call, GetNextIds if batch, else
// GetNextId.
func (s *Store) nextIDs(ctx context.Context, key string, mode Mode, count int64, batch bool) (int64, error) {
	first, _, err := s.take(ctx, key, mode, count, batch, nil)
	return first, err
}

// take is nextIDs on the node prefer when it is as good as any, and
// returns the node that answered.
func (s *Store) take(ctx context.Context, key string, mode Mode, count int64, batch bool, prefer *node) (int64, *node, error) {
	rt := anyNode
	if mode != Weak {
		rt = leaderNode
	}
	if s.c.stream {
		k := batchKey{store: s.name, key: key, mode: mode}
		return invoke(ctx, s.c.r, s.c.retry, rt, prefer, func(ctx context.Context, n *node) (int64, error) {
			return n.streamer().nextIDs(ctx, k, count)
		})
	}
	if !batch {
		req := &ordinalv1.GetNextIdRequest{StoreName: s.name, Key: key, Options: sequencerOptions(mode)}
		return invoke(ctx, s.c.r, s.c.retry, rt, prefer, func(ctx context.Context, n *node) (int64, error) {
			resp, err := n.seq.GetNextId(ctx, req)
			return resp.GetNextId(), err
		})
	}
	req := &ordinalv1.GetNextIdsRequest{StoreName: s.name, Key: key, Options: sequencerOptions(mode), Count: count}
	return invoke(ctx, s.c.r, s.c.retry, rt, prefer, func(ctx context.Context, n *node) (int64, error) {
		resp, err := n.seq.GetNextIds(ctx, req)
		return resp.GetFirstId(), err
	})
}

// HighWater returns key's high-water mark: no ID above it has been handed
// out, in either mode. It consumes no ID and is linearizable. A key that
// never handed out an ID has high-water mark 0.
func (s *Store) HighWater(ctx context.Context, key string) (int64, error) {
	req := &ordinalv1.GetHighWaterRequest{StoreName: s.name, Key: key}
	hw, _, err := invoke(ctx, s.c.r, s.c.retry, leaderNode, nil, func(ctx context.Context, n *node) (int64, error) {
		resp, err := n.seq.GetHighWater(ctx, req)
		return resp.GetHighWater(), err
	})
	return hw, err
}

// SetFloor raises key's counter so that every ID handed out after the call
// returns is greater than floor, in both modes, and returns the high-water
// mark after the call. It never lowers a counter, so it is safe to repeat,
// for example when importing IDs that were issued by another system.
func (s *Store) SetFloor(ctx context.Context, key string, floor int64) (int64, error) {
	req := &ordinalv1.SetFloorRequest{StoreName: s.name, Key: key, Floor: floor}
	hw, _, err := invoke(ctx, s.c.r, s.c.retry, leaderNode, nil, func(ctx context.Context, n *node) (int64, error) {
		resp, err := n.seq.SetFloor(ctx, req)
		return resp.GetHighWater(), err
	})
	return hw, err
}

func sequencerOptions(mode Mode) *ordinalv1.SequencerOptions {
	return &ordinalv1.SequencerOptions{Increment: mode.increment()}
}

// withMetadata returns dial options that add kv to every call's outgoing
// metadata, unary and streaming alike.
func withMetadata(kv []string) []grpc.DialOption {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, kv...), method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(metadata.AppendToOutgoingContext(ctx, kv...), desc, cc, method, opts...)
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}
