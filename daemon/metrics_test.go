package daemon_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/metricstest"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"github.com/ordinal-dev/ordinal/metrics"
)

// sample sums the samples of family name in m whose labels include want.
func sample(t *testing.T, m *metrics.Metrics, name string, want map[string]string) float64 {
	t.Helper()
	g, err := m.Gatherer()
	if err != nil {
		t.Fatal(err)
	}
	return metricstest.Sum(t, g, name, want)
}

// A 3-node cluster with metrics: the series count what the calls did, on
// the nodes that did it, and no label carries a key or store name.
func TestMetricsCountWhatHappened(t *testing.T) {
	var mu sync.Mutex
	ms := map[string]*metrics.Metrics{}
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{Configure: func(id string, cfg *daemon.Config) {
		mu.Lock()
		defer mu.Unlock()
		if ms[id] == nil {
			ms[id] = metrics.New()
		}
		cfg.Metrics = ms[id]
		cfg.Cluster.MaxKeys = 1000
	}})
	leader := c.Leader()
	follower := c.Followers(leader)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const strong, weak, store, key = 20, 30, "secret-store-name", "secret-key-name"
	call := func(nd *testcluster.Node, mode ordinalv1.SequencerOptions_AutoIncrement) {
		t.Helper()
		_, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: store, Key: key,
			Options: &ordinalv1.SequencerOptions{Increment: mode}})
		if err != nil {
			t.Fatalf("GetNextId on %s: %v", nd.ID, err)
		}
	}
	for range strong {
		call(follower, ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG)
	}
	for range weak {
		call(leader, ordinalv1.SequencerOptions_AUTO_INCREMENT_WEAK)
	}

	lm, fm := ms[leader.ID], ms[follower.ID]
	checks := []struct {
		name   string
		m      *metrics.Metrics
		family string
		labels map[string]string
		want   func(float64) bool
		says   string
	}{
		{"strong IDs served by the leader", lm, "ordinal_ids_issued_total", map[string]string{"mode": "strong"}, eq(strong), "= strong calls"},
		{"weak IDs", lm, "ordinal_ids_issued_total", map[string]string{"mode": "weak"}, eq(weak), "= weak calls"},
		{"the follower issued none itself", fm, "ordinal_ids_issued_total", nil, eq(0), "0"},
		{"the follower forwarded every strong call", fm, "ordinal_forwarded_total", map[string]string{"kind": "call", "code": "OK"}, eq(strong), "= strong calls"},
		{"client calls on the follower", fm, "grpc_server_handled_total",
			map[string]string{"port": "client", "grpc_method": "GetNextId", "grpc_code": "OK"}, eq(strong), "= strong calls"},
		{"client calls on the leader", lm, "grpc_server_handled_total",
			map[string]string{"port": "client", "grpc_method": "GetNextId", "grpc_code": "OK"}, eq(weak), "= weak calls"},
		{"proofs fenced the strong calls", lm, "ordinal_leadership_proofs_total", map[string]string{"result": "ok"}, ge(1), ">= 1"},
		{"reservations went through Raft", lm, "ordinal_reservation_entries_total", map[string]string{"result": "ok"}, ge(1), ">= 1"},
		{"reserved at least what was issued", lm, "ordinal_reserved_ids_total", nil, ge(strong + weak), ">= issued"},
		{"the key is in the state machine", lm, "ordinal_fsm_keys", nil, ge(1), ">= 1"},
		{"the key quota", lm, "ordinal_keys_limit", nil, eq(1000), "= MaxKeys"},
		{"the leader holds pools", lm, "ordinal_alloc_pools", nil, ge(2), ">= 2 (one per mode)"},
		{"raft's own metrics", lm, "ordinal_raft_apply", nil, ge(1), ">= 1 (Raft.Apply calls)"},
		{"the leader says so", lm, "ordinal_leader", nil, eq(1), "1"},
		{"a follower says it is not", fm, "ordinal_leader", nil, eq(0), "0"},
		{"ready", fm, "ordinal_ready", nil, eq(1), "1"},
		{"the leader's commit index", lm, "ordinal_raft_commit_index", nil, ge(1), ">= 1"},
		{"a follower's applied index", fm, "ordinal_raft_applied_index", nil, ge(1), ">= 1"},
		{"raft's leader counter, declared at 0", lm, "ordinal_raft_state_leader", nil, ge(1), ">= 1 (the first election counted)"},
	}
	for _, tc := range checks {
		if got := sample(t, tc.m, tc.family, tc.labels); !tc.want(got) {
			t.Errorf("%s: %s%v = %v, want %s", tc.name, tc.family, tc.labels, got, tc.says)
		}
	}

	// Bounded labels: nothing a client chose appears in any series.
	for id, m := range ms {
		g, _ := m.Gatherer()
		fams, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			for _, mt := range f.GetMetric() {
				for _, l := range mt.GetLabel() {
					if strings.Contains(l.GetValue(), key) || strings.Contains(l.GetValue(), store) {
						t.Errorf("%s: %s has label %s=%q, a client's key or store", id, f.GetName(), l.GetName(), l.GetValue())
					}
				}
			}
		}
	}

	// Readiness: every member is ready; a node that is stopped is not,
	// and the others stay ready.
	for _, nd := range c.Nodes() {
		if err := nd.Daemon().Ready(ctx); err != nil {
			t.Errorf("%s not ready: %v", nd.ID, err)
		}
	}
	d := follower.Daemon()
	follower.Stop()
	if err := d.Ready(ctx); !errors.Is(err, daemon.ErrNotServing) {
		t.Errorf("a stopped node's Ready: %v, want ErrNotServing", err)
	}
	if err := leader.Daemon().Ready(ctx); err != nil {
		t.Errorf("the leader is not ready with one follower down: %v", err)
	}
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func ge(want float64) func(float64) bool { return func(v float64) bool { return v >= want } }

// With AccessLog every finished call is logged at debug level with its
// method, code and peer; without it, none is.
func TestAccessLog(t *testing.T) {
	for _, on := range []bool{true, false} {
		buf := &testutil.SyncBuffer{}
		c := testcluster.NewWithOptions(t, 1, testcluster.Options{Configure: func(_ string, cfg *daemon.Config) {
			cfg.AccessLog = on
			cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: buf})
		}})
		nd := c.Nodes()[0]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: "k"}); err != nil {
			t.Fatal(err)
		}
		cancel()
		var line string
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, "access") && strings.Contains(l, "GetNextId") {
				line = l
			}
		}
		switch {
		case on && line == "":
			t.Fatalf("no access log line for GetNextId in:\n%s", buf.String())
		case on:
			for _, want := range []string{"[DEBUG]", "port=client", "grpc.code=OK", "peer.address=127.0.0.1:", "grpc.time_ms="} {
				if !strings.Contains(line, want) {
					t.Errorf("access log line %q lacks %q", line, want)
				}
			}
		case line != "":
			t.Errorf("access log off, yet: %q", line)
		}
		c.Close()
	}
}
