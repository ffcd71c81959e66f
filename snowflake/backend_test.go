package snowflake

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/keyspace"
)

// cluster is a replicated log in one process: one real fsm.FSM that every
// node's Backend applies its commands to, in order, with a leader whose
// term is the epoch of the reservations it commits.
type cluster struct {
	mu      sync.Mutex
	f       *fsm.FSM
	term    alloc.Epoch
	leader  *node
	workers map[uint64]bool
}

func newCluster() *cluster {
	return &cluster{f: fsm.New(nil), term: 1, workers: map[uint64]bool{}}
}

// node is one member's Backend. Cut off, it can neither reserve nor
// prove leadership.
type node struct {
	c      *cluster
	worker uint64
	mu     sync.Mutex
	cut    bool
	// lose, when set, makes the next Reserve fail with ErrWorkerLost and
	// Worker answer it from then on.
	lose *uint64
}

func (c *cluster) node(worker uint64) *node {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.workers[worker] = true
	return &node{c: c, worker: worker}
}

func (c *cluster) elect(n *node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.term++
	c.leader = n
}

func (n *node) setCut(cut bool) {
	n.mu.Lock()
	n.cut = cut
	n.mu.Unlock()
}

var errCut = errors.New("cut off from the leader")

func (n *node) reachable() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cut {
		return errCut
	}
	return nil
}

func (n *node) Worker(context.Context) (uint64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.worker, nil
}

func (n *node) Reserve(_ context.Context, key keyspace.Key, want, need uint64) (alloc.Range, alloc.Epoch, error) {
	if err := n.reachable(); err != nil {
		return alloc.Range{}, 0, err
	}
	n.mu.Lock()
	if n.lose != nil {
		n.c.mu.Lock()
		n.c.workers[*n.lose] = true
		n.c.mu.Unlock()
		n.worker, n.lose = *n.lose, nil
		n.mu.Unlock()
		return alloc.Range{}, 0, ErrWorkerLost
	}
	n.mu.Unlock()
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	res := n.c.f.ApplyCommand(fsm.Command{Ops: []fsm.Op{{Kind: fsm.OpReserve, Key: key, Want: want, Need: need}}}).Results[0]
	if res.Err != nil {
		return alloc.Range{}, 0, res.Err
	}
	epoch := alloc.Epoch(0)
	if n.c.leader == n {
		epoch = n.c.term
	}
	return alloc.Range{First: res.First, Last: res.Last}, epoch, nil
}

func (n *node) Floor(_ context.Context, key keyspace.Key, value uint64) (uint64, error) {
	if err := n.reachable(); err != nil {
		return 0, err
	}
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	res := n.c.f.ApplyCommand(fsm.Command{Ops: []fsm.Op{{Kind: fsm.OpFloor, Key: key, Value: value}}}).Results[0]
	return res.HighWater, res.Err
}

func (n *node) Applied(key keyspace.Key) uint64 { return n.c.f.HighWater(key) }

func (n *node) MaxReserved(except uint64) uint64 {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	var m uint64
	for w := range n.c.workers {
		if w != except {
			m = max(m, n.c.f.HighWater(TimeKey(w)))
		}
	}
	return m
}

// confirm proves leadership for n: the current term if n leads.
func (n *node) confirm(context.Context) (alloc.Epoch, error) {
	if err := n.reachable(); err != nil {
		return 0, err
	}
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	if n.c.leader != n {
		return 0, alloc.ErrNotLeader
	}
	return n.c.term, nil
}

// fakeClock is a wall clock a test sets.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// start starts a Service for n with clock and layout l declared as store
// "s", closed when the test ends.
func start(t *testing.T, n *node, clock Clock, l Layout, cfg Config) *Service {
	t.Helper()
	cfg.Clock = clock
	cfg.Confirm = n.confirm
	s, err := New(n, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Declare("s", l); err != nil {
		t.Fatal(err)
	}
	return s
}

var testKey = keyspace.Key{Store: "s", Name: "k"}
