package transport

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// peerBackoff is how pooled connections reconnect: quickly to a node that
// comes back. gRPC's default backoff grows to two minutes, during which
// calls to a restarted node would fail fast, leadership proofs would miss
// its vote and forwarded calls would find no leader. MinConnectTimeout
// leaves room for the peer handshake (TLS included) on a slow link.
var peerBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  50 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   time.Second,
	},
	MinConnectTimeout: 2 * time.Second,
})

// connKey names a pooled connection: the node it must reach ("" for any
// member of the cluster) and the address it dials.
type connKey struct{ want, addr string }

// Conn returns the port's pooled gRPC connection to the peer port at
// address, made with DialOptions(want): it runs the peer handshake and,
// when want is not empty, refuses to talk to any node but want at that
// address. Every node-to-node call of this node (leadership proofs,
// forwarded reservations and client calls, membership changes, discovery)
// shares this one pool, so each other node costs one connection and one
// reconnect policy.
//
// Connections are made lazily by gRPC and re-made by it after failures, with
// a backoff capped at one second. They belong to the port: the caller must
// not close them; Close closes them all. After Close, Conn returns
// ErrClosed.
func (p *Peer) Conn(want, address string) (*grpc.ClientConn, error) {
	k := connKey{want: want, addr: address}
	p.poolMu.Lock()
	defer p.poolMu.Unlock()
	if p.pool == nil {
		return nil, ErrClosed
	}
	if c := p.pool[k]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(address, append([]grpc.DialOption{peerBackoff}, p.DialOptions(want)...)...)
	if err != nil {
		return nil, fmt.Errorf("transport: connect to peer %q at %s: %w", want, address, err)
	}
	p.pool[k] = c
	return c, nil
}

// closePool closes every pooled connection; later calls of Conn fail with
// ErrClosed.
func (p *Peer) closePool() error {
	p.poolMu.Lock()
	defer p.poolMu.Unlock()
	var errs []error
	for _, c := range p.pool {
		errs = append(errs, c.Close())
	}
	p.pool = nil
	return errors.Join(errs...)
}
