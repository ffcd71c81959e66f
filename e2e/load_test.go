// Package e2e tests ordinal clusters of real processes under faults: kill
// -9, SIGSTOP, restarts. Every scenario records the calls it makes and
// checks the record for duplicates, WEAK order per node and STRONG
// linearizability.
package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/history"
	"github.com/ordinal-dev/ordinal/internal/proccluster"
)

const callTimeout = 2 * time.Second

// load runs one sequential caller per node and mode until stopped.
type load struct {
	store   string // "" for the default store
	rec     *history.Recorder
	ok      atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
	clients int
}

func startLoad(c *proccluster.Cluster, key string) *load {
	return startManyKeyLoad(c, 1, 1, key)
}

// startManyKeyLoad runs callers per node and mode, each call on one of
// keys keys (named prefix0, prefix1, ...) picked at random: first calls on
// keys, and reservations of many keys at once, which nodes group.
func startManyKeyLoad(c *proccluster.Cluster, keys, callers int, prefix string) *load {
	return startStoreLoad(c, "", keys, callers, prefix)
}

// startStoreLoad is startManyKeyLoad on the keys of store.
func startStoreLoad(c *proccluster.Cluster, store string, keys, callers int, prefix string) *load {
	l := &load{store: store, rec: history.NewRecorder(), stop: make(chan struct{})}
	key := func() string { return prefix }
	if keys > 1 {
		key = func() string { return fmt.Sprintf("%s%d", prefix, rand.IntN(keys)) }
	}
	for _, nd := range c.Nodes {
		for _, strong := range []bool{true, false} {
			for range callers {
				l.wg.Add(1)
				go l.run(l.clients, nd, key, strong)
				l.clients++
			}
		}
	}
	return l
}

func (l *load) run(client int, nd *proccluster.Node, nextKey func() string, strong bool) {
	defer l.wg.Done()
	opts := &ordinalv1.SequencerOptions{}
	if strong {
		opts.Increment = ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG
	}
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		key := nextKey()
		op := l.rec.Do(history.Op{Client: client, Node: nd.ID, Key: key, Strong: strong}, func() (int64, int64, error) {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			resp, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: l.store, Key: key, Options: opts})
			return resp.GetNextId(), 1, err
		})
		if op.Err == nil {
			l.ok.Add(1)
		} else {
			// A node that is down refuses at once; do not spin.
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// progress waits until n more calls succeeded.
func (l *load) progress(t *testing.T, n int64, what string) {
	t.Helper()
	target := l.ok.Load() + n
	deadline := time.Now().Add(20 * time.Second)
	for l.ok.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("no progress %s: %d calls succeeded, wanted %d", what, l.ok.Load(), target)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finish stops the callers and checks the history.
func (l *load) finish(t *testing.T) []history.Op {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	ops := l.rec.Ops()
	viz := filepath.Join(t.TempDir(), "strong-history.html")
	if dir := getenvDefault("ORDINAL_ARTIFACTS", ""); dir != "" {
		viz = filepath.Join(dir, t.Name()+".html")
	}
	if err := history.CheckAll(ops, viz); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d calls, %d succeeded", len(ops), history.Succeeded(ops))
	return ops
}

func TestKillNineLeaderThenFollower(t *testing.T) {
	c := proccluster.Start(t, 3)
	l := startLoad(c, "orders")
	l.progress(t, 200, "before faults")

	leader := c.Leader()
	leader.Kill()
	c.Leader(leader)
	l.progress(t, 200, "after kill -9 of the leader")
	leader.Restart()
	l.progress(t, 100, "after the old leader restarted")

	follower := c.Nodes[0]
	if follower == c.Leader() {
		follower = c.Nodes[1]
	}
	follower.Kill()
	l.progress(t, 200, "after kill -9 of a follower")
	follower.Restart()
	l.progress(t, 100, "after the follower restarted")
	l.finish(t)
}

// TestKillNineLeaderWithManyKeys kills the leader while nodes reserve
// ranges of many keys at once, grouped into shared log entries and batched
// calls to the leader, some of them in flight: whatever part of a group
// was lost, no ID is handed out twice, and STRONG stays linearizable, key
// by key.
func TestKillNineLeaderWithManyKeys(t *testing.T) {
	c := proccluster.Start(t, 3)
	l := startManyKeyLoad(c, 200, 4, "tenant-")
	l.progress(t, 500, "before faults")
	leader := c.Leader()
	leader.Kill()
	c.Leader(leader)
	l.progress(t, 500, "after kill -9 of the leader")
	leader.Restart()
	l.progress(t, 300, "after the old leader restarted")
	ops := l.finish(t)
	keys := map[string]bool{}
	for _, op := range ops {
		keys[op.Key] = true
	}
	if len(keys) < 100 {
		t.Fatalf("the load touched %d keys, want many", len(keys))
	}
}

func TestFullClusterKillAndRestart(t *testing.T) {
	c := proccluster.Start(t, 3)
	l := startLoad(c, "orders")
	l.progress(t, 200, "before the crash")
	for _, nd := range c.Nodes {
		nd.Kill()
	}
	for _, nd := range c.Nodes {
		nd.Start()
	}
	for _, nd := range c.Nodes {
		nd.WaitReady()
	}
	l.progress(t, 200, "after every node was killed and restarted")
	l.finish(t)
}
