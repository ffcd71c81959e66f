// Package metrics holds a node's Prometheus collectors: one registry per
// node, so that several nodes in one process (the tests) keep their series
// apart, and one place where every series ordinal exports is named,
// described and bounded. See DESIGN.md.
//
// The subsystems record through small handles (Alloc, Cluster, Forward,
// Etcd) whose methods do nothing on a nil receiver: a node started without
// metrics pays a nil check per event and nothing else, and a subsystem's
// tests need no registry.
//
// No series carries a key or store name as a label: both are chosen by
// clients, and a label per key would let one client grow the node's
// memory and every scrape without bound. Labels take values from short
// fixed lists (modes, causes, results, gRPC methods and codes).
package metrics

import (
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every series of ordinal's own.
const Namespace = "ordinal"

// Skip causes: why IDs that were reserved were never handed out. Each is
// a value of the cause label of ordinal_ids_skipped_total.
const (
	// SkipLeadership: a STRONG range reserved in an earlier leadership
	// term, dropped because it may not fence calls of the current one.
	SkipLeadership = "leadership"
	// SkipExpired: the rest of a WEAK range older than --weak-range-ttl,
	// dropped so that floors hold on every node.
	SkipExpired = "expired"
	// SkipTooSmall: the rest of a range too small for a call's count,
	// skipped to keep IDs increasing.
	SkipTooSmall = "too_small"
	// SkipEvicted: the rest of the ranges of a key idle for IdleTimeout.
	SkipEvicted = "evicted"
	// SkipFloor: IDs at or below a floor set after they were reserved.
	SkipFloor = "floor"
	// SkipClosed: what the node held when it shut down.
	SkipClosed = "closed"
)

// Result label values.
const (
	ResultOK = "ok"
	// ResultNotLeader: the node does not lead (or no longer does).
	ResultNotLeader = "not_leader"
	// ResultUnavailable: the node could not decide in time (no quorum, the
	// store unreachable, shutting down).
	ResultUnavailable = "unavailable"
	// ResultError: anything else.
	ResultError = "error"
)

// latencyBuckets cover a loopback proof (tens of microseconds) to a
// stalled Raft commit (seconds).
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// sizeBuckets count things batched together: calls per proof,
// reservations per Raft entry.
var sizeBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096}

// Metrics is one node's registry and the collectors registered in it.
type Metrics struct {
	// Registry holds every collector of the node; /metrics serves it.
	Registry *prometheus.Registry
	// GRPC counts the calls on the client port by service, method and
	// code, with latency histograms (go-grpc-middleware's provider); its
	// series carry port="client".
	GRPC *grpcprom.ServerMetrics
	// PeerGRPC is the same for the peer port (calls between nodes,
	// including client calls a follower forwarded): port="peer".
	PeerGRPC *grpcprom.ServerMetrics
	// Alloc records IDs handed out and skipped, and leadership proofs.
	Alloc *Alloc
	// Cluster records Raft reservations and snapshots.
	Cluster *Cluster
	// Forward records calls a follower forwards to the leader.
	Forward *Forward
	// Etcd records the etcd store's requests and elections.
	Etcd *Etcd
}

// New returns a node's metrics, registered in a new registry together with
// the Go runtime's and the process's collectors. The first call in a
// process also routes hashicorp/raft's metrics (go-metrics' global) into
// the process's Raft registry, which Gatherer serves with the node's.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: reg,
		GRPC:     newGRPC("client"),
		PeerGRPC: newGRPC("peer"),
		Alloc:    newAlloc(),
		Cluster:  newCluster(),
		Forward:  newForward(),
		Etcd:     newEtcd(),
	}
	reg.MustRegister(m.GRPC, m.PeerGRPC)
	m.Alloc.register(reg)
	m.Cluster.register(reg)
	m.Forward.register(reg)
	m.Etcd.register(reg)
	// Raft reports from its first entry on: route go-metrics' global now,
	// before any node starts, not at the first scrape (Gatherer reports
	// an error, should there be one).
	_, _ = raftGatherer()
	return m
}

// newGRPC returns the gRPC server metrics of one port.
func newGRPC(port string) *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(
		grpcprom.WithServerCounterOptions(grpcprom.WithConstLabels(prometheus.Labels{"port": port})),
		grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(latencyBuckets),
			grpcprom.WithHistogramConstLabels(prometheus.Labels{"port": port})))
}

// GaugeFunc registers a gauge whose value fn reads at each scrape, for
// state a subsystem already keeps (keys in the state machine, pools in
// memory). name gets the ordinal_ prefix. A nil Metrics does nothing.
func (m *Metrics) GaugeFunc(name, help string, fn func() float64) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, fn))
}

// Alloc records what the allocator hands out and skips, and its
// leadership proofs. A nil *Alloc records nothing.
type Alloc struct {
	issued      *prometheus.CounterVec
	strong      prometheus.Counter
	weak        prometheus.Counter
	skipped     *prometheus.CounterVec
	proofs      *prometheus.CounterVec
	proofTime   prometheus.Histogram
	proofCalls  prometheus.Histogram
	reserveTime *prometheus.HistogramVec
}

func newAlloc() *Alloc {
	a := &Alloc{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "ids_issued_total",
			Help: "IDs handed out to callers, by mode (strong, weak)."}, []string{"mode"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "ids_skipped_total",
			Help: "IDs reserved but never handed out (gaps), by cause: leadership, expired, too_small, evicted, floor, closed."}, []string{"cause"}),
		proofs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "leadership_proofs_total",
			Help: "Leadership proof rounds that fence STRONG calls, by result (ok, not_leader, unavailable, error)."}, []string{"result"}),
		proofTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "leadership_proof_seconds",
			Help: "Duration of a leadership proof round.", Buckets: latencyBuckets}),
		proofCalls: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "leadership_proof_calls",
			Help: "STRONG calls fenced by one proof round.", Buckets: sizeBuckets}),
		reserveTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "reserve_seconds",
			Help:    "Duration of a range reservation as the allocator sees it (through Raft or etcd, forwarded or not), by mode and result.",
			Buckets: latencyBuckets}, []string{"mode", "result"}),
	}
	a.strong, a.weak = a.issued.WithLabelValues("strong"), a.issued.WithLabelValues("weak")
	for _, c := range []string{SkipLeadership, SkipExpired, SkipTooSmall, SkipEvicted, SkipFloor, SkipClosed} {
		a.skipped.WithLabelValues(c)
	}
	for _, r := range []string{ResultOK, ResultNotLeader, ResultUnavailable, ResultError} {
		a.proofs.WithLabelValues(r)
	}
	return a
}

func (a *Alloc) register(reg prometheus.Registerer) {
	reg.MustRegister(a.issued, a.skipped, a.proofs, a.proofTime, a.proofCalls, a.reserveTime)
}

// Issued records n IDs handed out in STRONG (strong) or WEAK mode.
func (a *Alloc) Issued(strong bool, n uint64) {
	if a == nil {
		return
	}
	if strong {
		a.strong.Add(float64(n))
	} else {
		a.weak.Add(float64(n))
	}
}

// Skipped records n reserved IDs that will never be handed out, for cause
// (one of the Skip constants).
func (a *Alloc) Skipped(cause string, n uint64) {
	if a == nil || n == 0 {
		return
	}
	a.skipped.WithLabelValues(cause).Add(float64(n))
}

// Proof records one leadership proof round: how long it took, how many
// calls waited for it and its result (a Result constant).
func (a *Alloc) Proof(took time.Duration, calls int, result string) {
	if a == nil {
		return
	}
	a.proofs.WithLabelValues(result).Inc()
	a.proofTime.Observe(took.Seconds())
	a.proofCalls.Observe(float64(calls))
}

// Reserve records one range reservation the allocator waited for.
func (a *Alloc) Reserve(strong bool, took time.Duration, result string) {
	if a == nil {
		return
	}
	mode := "weak"
	if strong {
		mode = "strong"
	}
	a.reserveTime.WithLabelValues(mode, result).Observe(took.Seconds())
}

// Cluster records the Raft store's reservations and snapshots. A nil
// *Cluster records nothing.
type Cluster struct {
	entries      *prometheus.CounterVec
	batchSize    prometheus.Histogram
	reservedIDs  prometheus.Counter
	commitTime   prometheus.Histogram
	snapshotTime prometheus.Histogram
	snapshotSize prometheus.Gauge
}

func newCluster() *Cluster {
	c := &Cluster{
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "reservation_entries_total",
			Help: "Raft entries committed by the leader for reservations and floors (one per batch), by result."}, []string{"result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "reservation_batch_size",
			Help: "Reservations and floors carried by one Raft entry.", Buckets: sizeBuckets}),
		reservedIDs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "reserved_ids_total",
			Help: "IDs reserved through Raft (the sum of the committed ranges' sizes)."}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "reservation_commit_seconds",
			Help: "Time from submitting a reservation entry to Raft to its apply on the leader.", Buckets: latencyBuckets}),
		snapshotTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "snapshot_persist_seconds",
			Help: "Time to write a state machine snapshot.", Buckets: latencyBuckets}),
		snapshotSize: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "snapshot_bytes",
			Help: "Size of the last state machine snapshot written."}),
	}
	for _, r := range []string{ResultOK, ResultNotLeader, ResultError} {
		c.entries.WithLabelValues(r)
	}
	return c
}

func (c *Cluster) register(reg prometheus.Registerer) {
	reg.MustRegister(c.entries, c.batchSize, c.reservedIDs, c.commitTime, c.snapshotTime, c.snapshotSize)
}

// Entry records one reservation entry: how many operations it carried,
// how many IDs it reserved, how long the commit took and its result.
func (c *Cluster) Entry(ops int, ids uint64, took time.Duration, result string) {
	if c == nil {
		return
	}
	c.entries.WithLabelValues(result).Inc()
	c.batchSize.Observe(float64(ops))
	c.commitTime.Observe(took.Seconds())
	if result == ResultOK {
		c.reservedIDs.Add(float64(ids))
	}
}

// Snapshot records one snapshot written: how long it took and its size.
func (c *Cluster) Snapshot(took time.Duration, bytes int64) {
	if c == nil {
		return
	}
	c.snapshotTime.Observe(took.Seconds())
	c.snapshotSize.Set(float64(bytes))
}

// Forward records calls and reservations a follower forwards to the
// leader. A nil *Forward records nothing.
type Forward struct {
	calls *prometheus.CounterVec
}

func newForward() *Forward {
	return &Forward{calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "forwarded_total",
		Help: "Requests a follower forwarded to the leader, by kind (call: a client's STRONG or admin call; reservation: a batch of its own range reservations) and result (a gRPC code name)."},
		[]string{"kind", "code"})}
}

func (f *Forward) register(reg prometheus.Registerer) { reg.MustRegister(f.calls) }

// Forwarded records one forwarded request of kind ("call" or
// "reservation") and the gRPC code name it ended with.
func (f *Forward) Forwarded(kind, code string) {
	if f == nil {
		return
	}
	f.calls.WithLabelValues(kind, code).Inc()
}

// Etcd records the etcd store's requests to etcd and its elections. A nil
// *Etcd records nothing.
type Etcd struct {
	requests  *prometheus.HistogramVec
	elections *prometheus.CounterVec
}

func newEtcd() *Etcd {
	e := &Etcd{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "etcd_request_seconds",
			Help: "Requests the etcd store makes to etcd, by operation and result (ok, error).", Buckets: latencyBuckets},
			[]string{"op", "result"}),
		elections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "etcd_elections_total",
			Help: "Leader elections of the etcd store's nodes as this node saw them, by outcome (won, lost)."}, []string{"outcome"}),
	}
	e.elections.WithLabelValues("won")
	e.elections.WithLabelValues("lost")
	return e
}

func (e *Etcd) register(reg prometheus.Registerer) { reg.MustRegister(e.requests, e.elections) }

// Request records one request to etcd of operation op.
func (e *Etcd) Request(op string, took time.Duration, err error) {
	if e == nil {
		return
	}
	result := ResultOK
	if err != nil {
		result = ResultError
	}
	e.requests.WithLabelValues(op, result).Observe(took.Seconds())
}

// Election records that this node won (true) or lost leadership.
func (e *Etcd) Election(won bool) {
	if e == nil {
		return
	}
	if won {
		e.elections.WithLabelValues("won").Inc()
	} else {
		e.elections.WithLabelValues("lost").Inc()
	}
}
