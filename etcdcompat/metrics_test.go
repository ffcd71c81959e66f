package etcdcompat_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
	"github.com/ordinal-dev/ordinal/keyspace"
	"github.com/ordinal-dev/ordinal/metrics"
)

const (
	requestsFamily  = "ordinal_etcd_request_seconds"
	electionsFamily = "ordinal_etcd_elections_total"
)

// knownOps are the op label values the stores use.
var knownOps = []string{"connect", "reserve", "get", "confirm", "floor", "next", "session", "campaign", "resign", "leader", "tenure", "floors"}

// etcdMetrics is what a node's registry holds of the etcd store's series.
type etcdMetrics struct {
	requests  map[string]uint64 // samples by "op/result"
	elections map[string]float64
	labels    []string // every label value of both families
}

// gatherEtcd gathers m's registry and reads the etcd store's families.
func gatherEtcd(t *testing.T, m *metrics.Metrics) etcdMetrics {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := etcdMetrics{requests: map[string]uint64{}, elections: map[string]float64{}}
	for _, f := range fams {
		switch f.GetName() {
		case requestsFamily:
			for _, s := range f.GetMetric() {
				var op, result string
				for _, l := range s.GetLabel() {
					got.labels = append(got.labels, l.GetValue())
					switch l.GetName() {
					case "op":
						op = l.GetValue()
					case "result":
						result = l.GetValue()
					}
				}
				got.requests[op+"/"+result] += s.GetHistogram().GetSampleCount()
			}
		case electionsFamily:
			for _, s := range f.GetMetric() {
				for _, l := range s.GetLabel() {
					got.labels = append(got.labels, l.GetValue())
					if l.GetName() == "outcome" {
						got.elections[l.GetValue()] = s.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return got
}

// check fails t unless every op in want has at least one sample with
// result ok, the elections are won and lost, and no label value names
// key or its store.
func (g etcdMetrics) check(t *testing.T, node string, key keyspace.Key, wantOps []string, won, lost float64) {
	t.Helper()
	for _, op := range wantOps {
		if g.requests[op+"/ok"] == 0 {
			t.Errorf("%s: no %s{op=%q,result=\"ok\"} sample; samples: %v", node, requestsFamily, op, g.requests)
		}
	}
	for opResult := range g.requests {
		if op, _, _ := strings.Cut(opResult, "/"); !slices.Contains(knownOps, op) {
			t.Errorf("%s: request samples with op %q, not one of %v", node, op, knownOps)
		}
	}
	if g.elections["won"] != won || g.elections["lost"] != lost {
		t.Errorf("%s: %s won %v, lost %v; want won %v, lost %v", node, electionsFamily, g.elections["won"], g.elections["lost"], won, lost)
	}
	for _, v := range g.labels {
		if strings.Contains(v, key.Name) || strings.Contains(v, key.Store) {
			t.Errorf("%s: label value %q names the key %s/%s", node, v, key.Store, key.Name)
		}
	}
}

// TestMetricsNative runs two native stores, each with its own metrics,
// and checks that they record their requests to etcd by operation and
// their elections: the first node wins, and the second wins when the
// first closes and hands over.
func TestMetricsNative(t *testing.T) {
	e := etcdtest.Shared(t)
	prefix := etcdtest.UniquePrefix(t)
	key := keyspace.Key{Store: "metricsstore", Name: "metricskey"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(name string, m *metrics.Metrics) *etcdcompat.Store {
		t.Helper()
		nd, err := etcdcompat.Open(etcdcompat.Config{
			Endpoints: []string{e.Endpoint}, Prefix: prefix, SessionTTL: 2 * time.Second,
			NodeID: name, PeerAdvertise: "127.0.0.1:1", Metrics: m.Etcd,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.Close() })
		if err := nd.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return nd.(*etcdcompat.Store)
	}

	m1, m2 := metrics.New(), metrics.New()
	s1 := open("n1", m1)
	if err := etcdtest.Eventually(etcdtest.StartTimeout, s1.IsLeader); err != nil {
		t.Fatal("n1 never led")
	}
	s2 := open("n2", m2)
	if err := s2.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	// The leader: a STRONG range, a proof, a floor, a read.
	if _, epoch, err := s1.Reserve(ctx, key, 100, 1); err != nil || epoch == 0 {
		t.Fatalf("n1 Reserve: epoch %d, %v; want a STRONG range", epoch, err)
	}
	if _, err := s1.Confirm(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Floor(ctx, key, 1000); err != nil {
		t.Fatal(err)
	}
	if hw, err := s1.HighWater(ctx, key); err != nil || hw != 1000 {
		t.Fatalf("n1 HighWater: %d, %v; want 1000", hw, err)
	}
	// A follower: a WEAK range (its first read of the counter, then the
	// transaction); its proof fails without asking etcd.
	if r, _, err := s2.Reserve(ctx, key, 10, 1); err != nil || r.First <= 1000 {
		t.Fatalf("n2 Reserve: %v, %v; want a range above the floor", r, err)
	}
	if _, err := s2.Confirm(ctx); !errors.Is(err, alloc.ErrNotLeader) {
		t.Fatalf("n2 Confirm: %v, want ErrNotLeader", err)
	}

	gatherEtcd(t, m1).check(t, "n1", key, []string{"connect", "session", "campaign", "leader", "reserve", "confirm", "floor", "get"}, 1, 0)
	g2 := gatherEtcd(t, m2)
	g2.check(t, "n2", key, []string{"connect", "session", "leader", "reserve", "get"}, 0, 0)
	if n := g2.requests["confirm/ok"] + g2.requests["confirm/error"]; n != 0 {
		t.Errorf("n2 recorded %d confirm requests; a follower's proof asks etcd nothing", n)
	}

	// n1 hands over on its way out: it records the tenure lost and the
	// lease revoked, and n2 wins.
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	gatherEtcd(t, m1).check(t, "n1", key, []string{"resign"}, 1, 1)
	if err := etcdtest.Eventually(etcdtest.StartTimeout, s2.IsLeader); err != nil {
		t.Fatal("n2 did not take over")
	}
	if _, epoch, err := s2.Reserve(ctx, key, 10, 1); err != nil || epoch == 0 {
		t.Fatalf("n2 Reserve as leader: epoch %d, %v; want a STRONG range", epoch, err)
	}
	gatherEtcd(t, m2).check(t, "n2", key, []string{"campaign", "reserve"}, 1, 0)
}

// TestMetricsLayotto checks that the Layotto layout records one "next"
// request per ID and a "get" per read, and no elections.
func TestMetricsLayotto(t *testing.T) {
	e := etcdtest.Shared(t)
	m := metrics.New()
	nd, err := etcdcompat.Open(etcdcompat.Config{
		Endpoints: []string{e.Endpoint}, Layout: etcdcompat.LayoutLayotto, Prefix: etcdtest.UniquePrefix(t), Metrics: m.Etcd,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s := nd.(*etcdcompat.LayottoStore)
	key := keyspace.Key{Store: "metricsstore", Name: "metricskey"}
	for range 3 {
		if _, err := s.Next(ctx, key, alloc.Weak, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SetFloor(ctx, key, 2); err != nil {
		t.Fatal(err)
	}
	g := gatherEtcd(t, m)
	g.check(t, "layotto", key, []string{"connect", "next", "get"}, 0, 0)
	if g.requests["next/ok"] != 3 || g.requests["get/ok"] != 1 {
		t.Errorf("samples %v, want next/ok 3 and get/ok 1", g.requests)
	}
}
