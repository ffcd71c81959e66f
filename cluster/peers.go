package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/transport"
)

// peers keeps one gRPC connection per other node's peer port, for the calls
// nodes make to each other: leadership proofs, forwarded reservations,
// membership changes and calls, and discovery while a cluster forms. Every
// connection runs the peer handshake (transport.Peer), and one made for a
// known node refuses to talk to any other node at that address.
type peers struct {
	port *transport.Peer

	mu    sync.Mutex
	conns map[peerKey]*grpc.ClientConn
}

// peerKey names a connection: the node it must reach ("" for any member,
// when joining or discovering) and the address it dials.
type peerKey struct{ id, addr string }

// PeerBackoff is how connections between nodes reconnect: quickly to a
// node that comes back. gRPC's default backoff grows to two minutes, during
// which calls to a restarted node would fail fast and leadership proofs
// would miss its vote. MinConnectTimeout leaves room for the peer
// handshake (TLS included) on a slow link.
var PeerBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  50 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   time.Second,
	},
	MinConnectTimeout: 2 * time.Second,
})

func newPeers(port *transport.Peer) *peers {
	return &peers{port: port, conns: map[peerKey]*grpc.ClientConn{}}
}

// conn returns the connection to node id (any member when id is empty) at
// addr. Connections are made lazily by gRPC and re-established by it after
// failures.
func (p *peers) conn(id, addr string) (*grpc.ClientConn, error) {
	k := peerKey{id: id, addr: addr}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, ErrShutdown
	}
	c := p.conns[k]
	if c == nil {
		var err error
		opts := append([]grpc.DialOption{PeerBackoff}, p.port.DialOptions(k.id)...)
		if c, err = grpc.NewClient(k.addr, opts...); err != nil {
			return nil, err
		}
		p.conns[k] = c
	}
	return c, nil
}

// client returns a Peer client for node id at addr.
func (p *peers) client(id, addr string) (ordinalv1.PeerClient, error) {
	c, err := p.conn(id, addr)
	if err != nil {
		return nil, err
	}
	return ordinalv1.NewPeerClient(c), nil
}

// status asks the node at addr (node id, or any member when id is empty)
// for its Status.
func (p *peers) status(ctx context.Context, id, addr string) (*ordinalv1.StatusResponse, error) {
	c, err := p.client(id, addr)
	if err != nil {
		return nil, err
	}
	return c.Status(ctx, &ordinalv1.StatusRequest{})
}

func (p *peers) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, c := range p.conns {
		errs = append(errs, c.Close())
	}
	p.conns = nil
	return errors.Join(errs...)
}
