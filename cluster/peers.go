package cluster

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/transport"
)

// peers makes the calls nodes make to each other (leadership proofs,
// forwarded reservations, membership changes and calls, discovery while a
// cluster forms) on the connections of the node's peer port
// (transport.Peer.Conn). Every connection runs the peer handshake, and one
// made for a known node refuses to talk to any other node at that address.
// The same pool carries the client calls a follower forwards to the leader
// (api/server), so each other node costs one connection.
type peers struct {
	port *transport.Peer
}

func newPeers(port *transport.Peer) *peers {
	return &peers{port: port}
}

// conn returns the connection to node id (any member when id is empty) at
// addr. ErrShutdown once the node's peer port is closed.
func (p *peers) conn(id, addr string) (*grpc.ClientConn, error) {
	c, err := p.port.Conn(id, addr)
	if errors.Is(err, transport.ErrClosed) {
		return nil, fmt.Errorf("%w: %w", ErrShutdown, err)
	}
	return c, err
}

// client returns a Peer client for node id at addr.
func (p *peers) client(id, addr string) (ordinalv1.PeerServiceClient, error) {
	c, err := p.conn(id, addr)
	if err != nil {
		return nil, err
	}
	return ordinalv1.NewPeerServiceClient(c), nil
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
