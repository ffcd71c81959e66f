package cluster

import (
	"time"

	"github.com/hashicorp/raft"

	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/metrics"
)

// measuredFSM is the state machine Raft runs when the node has metrics: it
// times each snapshot's Persist and counts the bytes it writes. Every other
// method is the FSM's own (embedding keeps the optional interfaces raft
// looks for, such as BatchingFSM).
type measuredFSM struct {
	*fsm.FSM
	m *metrics.Cluster
}

// Snapshot wraps the FSM's snapshot so that Persist is measured.
func (f measuredFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.FSM.Snapshot()
	if err != nil {
		return nil, err
	}
	return measuredSnapshot{FSMSnapshot: s, m: f.m}, nil
}

type measuredSnapshot struct {
	raft.FSMSnapshot
	m *metrics.Cluster
}

// Persist writes the snapshot and records how long that took and its size.
func (s measuredSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	cs := &countingSink{SnapshotSink: sink}
	err := s.FSMSnapshot.Persist(cs)
	if err == nil {
		s.m.Snapshot(time.Since(start), cs.n)
	}
	return err
}

// countingSink counts the bytes written through it.
type countingSink struct {
	raft.SnapshotSink
	n int64
}

func (c *countingSink) Write(p []byte) (int, error) {
	n, err := c.SnapshotSink.Write(p)
	c.n += int64(n)
	return n, err
}
