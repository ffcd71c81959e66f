package metrics

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A node without metrics holds nil handles: every method is a no-op.
func TestNilHandlesRecordNothing(t *testing.T) {
	var (
		a *Alloc
		c *Cluster
		f *Forward
		e *Etcd
		m *Metrics
	)
	a.Issued(true, 1)
	a.Skipped(SkipExpired, 5)
	a.Proof(time.Millisecond, 3, ResultOK)
	a.Reserve(false, time.Millisecond, ResultError)
	c.Entry(2, 10, time.Millisecond, ResultOK)
	c.Snapshot(time.Second, 100)
	f.Forwarded("call", "OK")
	e.Request("reserve", time.Millisecond, errors.New("x"))
	e.Election(true)
	m.GaugeFunc("x", "y", func() float64 { return 1 })
}

// Several nodes in one process each get a registry of their own, and the
// process's Raft metrics next to it.
func TestNewPerNode(t *testing.T) {
	m1, m2 := New(), New()
	m1.Alloc.Issued(true, 3)
	m1.Alloc.Issued(false, 4)
	m1.Alloc.Skipped(SkipFloor, 2)
	m1.Alloc.Skipped(SkipFloor, 0) // nothing skipped: no sample change
	m1.GaugeFunc("things", "test gauge", func() float64 { return 42 })

	tests := []struct {
		m      *Metrics
		family string
		labels map[string]string
		want   float64
	}{
		{m1, "ordinal_ids_issued_total", map[string]string{"mode": "strong"}, 3},
		{m1, "ordinal_ids_issued_total", map[string]string{"mode": "weak"}, 4},
		{m1, "ordinal_ids_skipped_total", map[string]string{"cause": SkipFloor}, 2},
		{m1, "ordinal_ids_skipped_total", map[string]string{"cause": SkipExpired}, 0},
		{m1, "ordinal_things", nil, 42},
		{m2, "ordinal_ids_issued_total", map[string]string{"mode": "strong"}, 0},
	}
	for _, tc := range tests {
		got, found := find(t, tc.m.Registry, tc.family, tc.labels)
		if !found || got != tc.want {
			t.Errorf("%s%v = %v (found %v), want %v", tc.family, tc.labels, got, found, tc.want)
		}
	}
	if _, err := m1.Gatherer(); err != nil {
		t.Fatalf("Gatherer: %v", err)
	}
}

func find(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}
