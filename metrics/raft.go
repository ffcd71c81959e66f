package metrics

import (
	"sync"

	gometrics "github.com/hashicorp/go-metrics/compat"
	gometricsprom "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// raftRegistry holds hashicorp/raft's own metrics (commit and apply time,
// leader changes, last contact, FSM pending, ...). Raft reports through
// go-metrics' process-wide global, so there is one such registry per
// process, shared by every node in it; a node's /metrics serves it next
// to its own (Gatherer). One node runs per process in production; in
// tests that run several, these series mix them.
var (
	raftOnce     sync.Once
	raftRegistry *prometheus.Registry
	raftErr      error
)

// raftGatherer routes go-metrics' global into a Prometheus registry, once
// per process, and returns that registry.
func raftGatherer() (prometheus.Gatherer, error) {
	raftOnce.Do(func() {
		reg := prometheus.NewRegistry()
		sink, err := gometricsprom.NewPrometheusSinkFrom(gometricsprom.PrometheusOpts{
			Registerer: reg,
			Name:       "ordinal_go_metrics_sink",
			// Declared up front, at 0: a counter that appears only at its
			// first increment hides that increment from increase().
			CounterDefinitions: []gometricsprom.CounterDefinition{
				{Name: []string{Namespace, "raft", "state", "leader"}, Help: "Times this node became the Raft leader."},
				{Name: []string{Namespace, "raft", "state", "candidate"}, Help: "Times this node started an election."},
				{Name: []string{Namespace, "raft", "state", "follower"}, Help: "Times this node became a follower."},
			},
		})
		if err != nil {
			raftErr = err
			return
		}
		cfg := gometrics.DefaultConfig(Namespace)
		cfg.EnableHostname = false       // the scrape target says which node
		cfg.EnableRuntimeMetrics = false // the Go collector reports those
		cfg.EnableServiceLabel = false   // the prefix ordinal_ is enough
		if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
			raftErr = err
			return
		}
		raftRegistry = reg
	})
	return raftRegistry, raftErr
}

// Gatherer returns what /metrics serves: the node's registry and the
// process's Raft metrics.
func (m *Metrics) Gatherer() (prometheus.Gatherer, error) {
	raft, err := raftGatherer()
	if err != nil {
		return nil, err
	}
	return prometheus.Gatherers{m.Registry, raft}, nil
}
