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

// registerRaftGauges exports this node's Raft indices, read at scrape time,
// so that a follower falling behind shows: the leader's commit index
// against a follower's applied index.
func (n *Node) registerRaftGauges(m *metrics.Metrics) {
	index := func(f func(r *raft.Raft) uint64) func() float64 {
		return func() float64 {
			if !n.isStarted() {
				return 0
			}
			return float64(f(n.raft))
		}
	}
	m.GaugeFunc("raft_commit_index", "This node's Raft commit index (0 until Raft starts).", index((*raft.Raft).CommitIndex))
	m.GaugeFunc("raft_applied_index", "The last Raft index this node's state machine applied.", index((*raft.Raft).AppliedIndex))
	m.GaugeFunc("raft_last_index", "The last index in this node's Raft log.", index((*raft.Raft).LastIndex))
}
