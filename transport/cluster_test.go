package transport

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// listFSM is a trivial FSM that records every applied command.
type listFSM struct {
	mu      sync.Mutex
	applied []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, string(l.Data))
	return len(f.applied)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	return listSnapshot(f.list()), nil
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var applied []string
	if err := json.NewDecoder(rc).Decode(&applied); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = applied
	return nil
}

func (f *listFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applied)
}

type listSnapshot []string

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s listSnapshot) Release() {}

// testNode is one member of a test cluster.
type testNode struct {
	raft *raft.Raft
	fsm  *listFSM
}

// startCluster starts n raft nodes whose transports use cfg(i), bootstraps
// them as one cluster and shuts them down when the test ends. Storage is in
// memory; only the transport is real.
func startCluster(t *testing.T, n int, cfg func(i int) Config) []*testNode {
	t.Helper()
	layers := make([]*StreamLayer, n)
	servers := make([]raft.Server, n)
	for i := range n {
		layers[i] = newLayer(t, cfg(i))
		servers[i] = raft.Server{
			ID:      raft.ServerID(fmt.Sprintf("node%d", i)),
			Address: raft.ServerAddress(layers[i].Addr().String()),
		}
	}
	nodes := make([]*testNode, n)
	for i := range n {
		nodes[i] = startNode(t, servers[i].ID, layers[i])
	}
	boot := raft.Configuration{Servers: servers}
	if err := nodes[0].raft.BootstrapCluster(boot).Error(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	return nodes
}

func startNode(t *testing.T, id raft.ServerID, sl *StreamLayer) *testNode {
	t.Helper()
	conf := raft.DefaultConfig()
	conf.LocalID = id
	conf.HeartbeatTimeout = 200 * time.Millisecond
	conf.ElectionTimeout = 200 * time.Millisecond
	conf.LeaderLeaseTimeout = 100 * time.Millisecond
	conf.CommitTimeout = 10 * time.Millisecond
	conf.Logger = hclog.NewNullLogger()

	trans := NewTransport(sl, RaftConfig{Timeout: 2 * time.Second})
	store := raft.NewInmemStore()
	fsm := &listFSM{}
	r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		_ = trans.Close()
		t.Fatalf("NewRaft %s: %v", id, err)
	}
	t.Cleanup(func() {
		if err := r.Shutdown().Error(); err != nil {
			t.Errorf("shutdown %s: %v", id, err)
		}
	})
	return &testNode{raft: r, fsm: fsm}
}

// leader waits for a node to become leader and returns it.
func leader(t *testing.T, nodes []*testNode) *testNode {
	t.Helper()
	var found *testNode
	waitFor(t, 10*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				found = n
				return true
			}
		}
		return false
	})
	return found
}

// apply applies cmd through the current leader, retrying if leadership moves.
func apply(t *testing.T, nodes []*testNode, cmd string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := leader(t, nodes).raft.Apply([]byte(cmd), 2*time.Second).Error()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("apply %q: %v", cmd, err)
		}
	}
}

func TestCluster_ThreeNodes(t *testing.T) {
	ca := newTestCA(t, "ordinal test CA")
	modes := map[string]func(i int) Config{
		"plain":      func(int) Config { return Config{} },
		"mutual-tls": func(i int) Config { return ca.mutualConfig(t, fmt.Sprintf("node%d", i)) },
	}
	for name, cfg := range modes {
		t.Run(name, func(t *testing.T) {
			nodes := startCluster(t, 3, cfg)
			var want []string
			for i := range 5 {
				cmd := fmt.Sprintf("block-%d", i)
				apply(t, nodes, cmd)
				want = append(want, cmd)
			}
			for i, n := range nodes {
				waitFor(t, 10*time.Second, fmt.Sprintf("node%d to apply %v", i, want), func() bool {
					return slices.Equal(n.fsm.list(), want)
				})
			}
		})
	}
}
