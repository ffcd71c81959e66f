package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/metrics"
)

// Grouping (see DESIGN.md, "Grouped reservations"): reservations and
// floors of different keys that wait at the same time travel together. On
// the leader they are committed as the ops of one Raft entry; on a
// follower they go to the leader in one ReserveBatch call. A batch closes
// when the previous one is done, so a lone caller waits for nothing but
// its own round trip, and under load batches grow with the load.

// maxGroupOps bounds the ops of one batch (an entry of a few tens of KiB):
// large enough that batching never limits throughput, small enough that
// one entry never holds up replication.
const maxGroupOps = 4096

// pending is one op waiting in a group, and then its outcome.
type pending struct {
	op   fsm.Op
	done chan struct{}
	// Set before done is closed.
	res  fsm.Result
	term uint64 // the term read before the batch's entry was appended
	err  error
}

// group runs batches of pending ops one at a time through send.
type group struct {
	send func(batch []*pending)

	mu      sync.Mutex
	queue   []*pending
	running bool
}

// do adds ops to the next batch and waits for their outcomes, or for ctx.
// An op whose caller gave up still runs: what it reserved is a gap.
func (g *group) do(ctx context.Context, ops ...fsm.Op) ([]*pending, error) {
	ps := make([]*pending, len(ops))
	for i, op := range ops {
		ps[i] = &pending{op: op, done: make(chan struct{})}
	}
	g.mu.Lock()
	g.queue = append(g.queue, ps...)
	start := !g.running
	g.running = true
	g.mu.Unlock()
	if start {
		go g.loop()
	}
	for _, p := range ps {
		select {
		case <-p.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return ps, nil
}

// loop sends batches until the queue is empty.
func (g *group) loop() {
	for {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		n := min(len(g.queue), maxGroupOps)
		batch := g.queue[:n:n]
		g.queue = g.queue[n:]
		g.mu.Unlock()
		g.send(batch)
		for _, p := range batch {
			close(p.done)
		}
	}
}

// commitBatch commits a batch as one Raft entry (on the leader). An op the
// state machine would refuse fails alone, before the entry is proposed: a
// refused entry would stop every replica (fsm/DESIGN.md, "Never skip").
func (n *Node) commitBatch(batch []*pending) {
	valid := batch[:0:0]
	for _, p := range batch {
		if err := (fsm.Command{Ops: []fsm.Op{p.op}}).Validate(); err != nil {
			p.err = fmt.Errorf("%w: %w", ErrInvalidRequest, err)
			continue
		}
		valid = append(valid, p)
	}
	if len(valid) == 0 {
		return
	}
	batch = valid
	ops := make([]fsm.Op, len(batch))
	for i, p := range batch {
		ops[i] = p.op
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	// The term read before Apply is never newer than the entry's own
	// term, so a range is never claimed for a tenure it was not reserved
	// in.
	term := n.raft.CurrentTerm()
	start := time.Now()
	res, err := n.apply(ctx, fsm.Command{Ops: ops})
	var ids uint64
	for i, p := range batch {
		switch {
		case err != nil:
			p.err = err
		default:
			p.res, p.term = res.Results[i], term
			if p.res.Last >= p.res.First && p.res.First > 0 {
				ids += p.res.Last - p.res.First + 1
			}
		}
	}
	n.metrics.Entry(len(batch), ids, time.Since(start), entryResult(err))
	n.groupedEntries.Add(1)
	n.groupedOps.Add(uint64(len(batch)))
}

// forwardBatch sends a batch of reservations to the leader in one call (on
// a follower).
func (n *Node) forwardBatch(batch []*pending) {
	fail := func(err error) {
		for _, p := range batch {
			p.err = err
		}
	}
	c, err := n.leaderConn()
	if err != nil {
		fail(err)
		return
	}
	req := &ordinalv1.ReserveBatchRequest{Reservations: make([]*ordinalv1.ReserveRequest, len(batch))}
	for i, p := range batch {
		req.Reservations[i] = &ordinalv1.ReserveRequest{StoreName: p.op.Key.Store, Key: p.op.Key.Name, Want: p.op.Want, Need: p.op.Need}
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	resp, err := ordinalv1.NewPeerServiceClient(c).ReserveBatch(ctx, req)
	n.forwardMetrics.Forwarded("reservation", status.Code(err).String())
	switch {
	case err != nil:
		fail(fromStatus(err))
		return
	case len(resp.GetResults()) != len(batch):
		fail(fmt.Errorf("%w: the leader answered %d of %d reservations", alloc.ErrUnavailable, len(resp.GetResults()), len(batch)))
		return
	}
	for i, r := range resp.GetResults() {
		if code := codes.Code(r.GetCode()); code != codes.OK {
			batch[i].err = fromStatus(status.Error(code, r.GetMessage()))
			continue
		}
		batch[i].res = fsm.Result{First: r.GetFirst(), Last: r.GetLast()}
	}
}

// ReserveBatch reserves the ranges of reqs through this node's log, as
// Reserve does for one, committing them with whatever else waits. It fails
// as a whole with an error wrapping alloc.ErrNotLeader on a follower; each
// reservation's own failure (fsm.ErrOverflow) is in its result.
func (n *Node) ReserveBatch(ctx context.Context, reqs []fsm.Op) ([]fsm.Result, error) {
	if !n.isStarted() {
		return nil, ErrNotReady
	}
	if !n.IsLeader() {
		return nil, n.notLeader()
	}
	ps, err := n.commits.do(ctx, reqs...)
	if err != nil {
		return nil, err
	}
	out := make([]fsm.Result, len(ps))
	for i, p := range ps {
		if p.err != nil {
			return nil, p.err
		}
		out[i] = p.res
	}
	return out, nil
}

// GroupStats reports how many Raft entries grouped commits wrote and how
// many ops they carried: ops per entry is the grouping factor.
func (n *Node) GroupStats() (entries, ops uint64) {
	return n.groupedEntries.Load(), n.groupedOps.Load()
}

// entryResult names a reservation entry's outcome for metrics.
func entryResult(err error) string {
	switch {
	case err == nil:
		return metrics.ResultOK
	case errors.Is(err, alloc.ErrNotLeader):
		return metrics.ResultNotLeader
	}
	return metrics.ResultError
}
