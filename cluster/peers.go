package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
)

// peers keeps one gRPC connection per other node, for the calls nodes make
// to each other: leadership proofs, forwarded reservations and membership
// changes, and discovery while a cluster forms.
type peers struct {
	dialOpts []grpc.DialOption

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// peerBackoff reconnects quickly to a node that comes back: gRPC's default
// backoff grows to two minutes, during which calls to a restarted node would
// fail fast and leadership proofs would miss its vote.
var peerBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  50 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   time.Second,
	},
	MinConnectTimeout: time.Second,
})

func newPeers(dialOpts []grpc.DialOption) *peers {
	if len(dialOpts) == 0 {
		dialOpts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	dialOpts = append([]grpc.DialOption{peerBackoff}, dialOpts...)
	return &peers{dialOpts: dialOpts, conns: map[string]*grpc.ClientConn{}}
}

// client returns a Cluster client for the node at grpcAddr. Connections are
// made lazily by gRPC and re-established by it after failures.
func (p *peers) client(grpcAddr string) (ordinalv1.ClusterClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, ErrShutdown
	}
	c := p.conns[grpcAddr]
	if c == nil {
		var err error
		if c, err = grpc.NewClient(grpcAddr, p.dialOpts...); err != nil {
			return nil, err
		}
		p.conns[grpcAddr] = c
	}
	return ordinalv1.NewClusterClient(c), nil
}

func (p *peers) status(ctx context.Context, grpcAddr string) (*ordinalv1.StatusResponse, error) {
	c, err := p.client(grpcAddr)
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
