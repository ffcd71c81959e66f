// Package prom_test checks ordinal's monitoring end to end: a real
// Prometheus (Debian's prometheus binary) scrapes a three-node cluster of
// ordinal processes every second, with the alert rules of
// deploy/prometheus/alerts.yml, while the test puts a known load on the
// cluster and kills its leader. What Prometheus reports must be what the
// load did; the rules must load and evaluate without error, the node-down
// alert must go pending for the killed node, and the quorum alert once a
// second node is killed; every expression
// of the Grafana dashboard (deploy/grafana/ordinal-dashboard.json) and of
// the rules must name series the nodes export and evaluate in Prometheus.
//
// Without a prometheus binary on PATH the test skips, unless
// ORDINAL_REQUIRE_PROMETHEUS=1 (CI), which fails it instead.
package prom_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/internal/proccluster"
	"github.com/ordinal-dev/ordinal/internal/promtest"
)

const (
	alertsFile    = "../../deploy/prometheus/alerts.yml"
	dashboardFile = "../../deploy/grafana/ordinal-dashboard.json"

	// job is the scrape job's name, as the alert rules expect it.
	job = "ordinal"

	// strongCalls go through one follower (forwarded to the leader),
	// weakCalls through the other (served by it); afterCalls through the
	// new leader once the old one was killed.
	strongCalls, weakCalls, afterCalls = 25, 40, 10

	// scrapeWait bounds how long Prometheus may take to show what
	// happened: a scrape every second, rules evaluated every second.
	scrapeWait = 20 * time.Second
)

// synthetic are the series Prometheus makes itself rather than scrapes.
var synthetic = map[string]bool{"up": true}

// etcdOnly are the series only a node of the etcd store exports; the
// cluster here runs the Raft store, so expressions over them evaluate to
// nothing.
var etcdOnly = map[string]bool{
	"ordinal_etcd_request_seconds_bucket": true,
	"ordinal_etcd_request_seconds_count":  true,
	"ordinal_etcd_request_seconds_sum":    true,
}

func TestPrometheusSeesTheCluster(t *testing.T) {
	start := time.Now()
	step := func(format string, args ...any) {
		t.Logf("[%5.1fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	promtest.Require(t, "prometheus")
	alerts, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	c := proccluster.Start(t, 3)
	leader := c.Leader()
	var followers []*proccluster.Node
	for _, nd := range c.Nodes {
		if nd != leader {
			followers = append(followers, nd)
		}
	}
	step("cluster of 3 processes up, leader %s", leader.ID)

	var targets []string
	for _, nd := range c.Nodes {
		targets = append(targets, fmt.Sprintf("%q", nd.MetricsAddr))
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: %s
    static_configs:
      - targets: [%s]
`, job, strings.Join(targets, ", "))
	p := promtest.Start(t, config, map[string]string{"alerts.yml": string(alerts)})
	step("prometheus at %s, scraping %s", p.URL, strings.Join(targets, ", "))
	expect(ctx, t, p, `sum(up{job="ordinal"})`, 3)

	// The load: STRONG calls through the first follower, which forwards
	// them to the leader; WEAK calls through the second, which serves them
	// from its own ranges. The client sends every call on a connection to
	// the node chosen (NewFromConn: left to itself, it may take STRONG
	// calls straight to the leader), and without retries, so that every
	// call is one call to that node.
	calls := func(nd *proccluster.Node, mode client.Mode, n int) {
		t.Helper()
		conn, err := grpc.NewClient(nd.GRPCAddr, c.PKI().DialOption(proccluster.AdminName))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cl, err := client.NewFromConn(conn, client.WithRetry(1, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for i := range n {
			if _, err := cl.NextID(ctx, "prom-e2e", mode); err != nil {
				t.Fatalf("%v call %d through %s: %v", mode, i, nd.ID, err)
			}
		}
	}
	strongVia, weakVia := followers[0], followers[1]
	calls(strongVia, client.Strong, strongCalls)
	calls(weakVia, client.Weak, weakCalls)
	step("%d STRONG calls through %s, %d WEAK calls through %s", strongCalls, strongVia.ID, weakCalls, weakVia.ID)

	inst := func(nd *proccluster.Node) string { return nd.MetricsAddr }
	expectCount(ctx, t, p, `sum(ordinal_ids_issued_total{job="ordinal", mode="strong"})`, strongCalls)
	expectCount(ctx, t, p, `sum(ordinal_ids_issued_total{job="ordinal", mode="weak"})`, weakCalls)
	expectCount(ctx, t, p, fmt.Sprintf(`sum(ordinal_ids_issued_total{job="ordinal", mode="strong", instance=%q})`, inst(leader)), strongCalls)
	expectCount(ctx, t, p, fmt.Sprintf(`sum(ordinal_ids_issued_total{job="ordinal", mode="weak", instance=%q})`, inst(weakVia)), weakCalls)
	expectCount(ctx, t, p, `sum(grpc_server_handled_total{job="ordinal", port="client", grpc_method="GetNextId", grpc_code="OK"})`, strongCalls+weakCalls)
	expectCount(ctx, t, p, `sum(grpc_server_handled_total{job="ordinal", port="client", grpc_method="GetNextId", grpc_code!="OK"}) or vector(0)`, 0)
	expectCount(ctx, t, p, fmt.Sprintf(`sum(ordinal_forwarded_total{job="ordinal", kind="call", instance=%q})`, inst(strongVia)), strongCalls)
	expectCount(ctx, t, p, fmt.Sprintf(`sum(ordinal_forwarded_total{job="ordinal", kind="call", code="OK", instance=%q})`, inst(strongVia)), strongCalls)
	expectCount(ctx, t, p, fmt.Sprintf(`sum(ordinal_forwarded_total{job="ordinal", kind="call", instance!=%q}) or vector(0)`, inst(strongVia)), 0)
	// The follower forwards the calls over a stream to the leader's peer
	// port, each after a proof of its own found it does not lead: a
	// not_leader proof, which is no failure.
	expectAtLeast(ctx, t, p, fmt.Sprintf(`sum(grpc_server_started_total{job="ordinal", port="peer", grpc_method="NextIdStream", instance=%q})`, inst(leader)), 1)
	expectCount(ctx, t, p, fmt.Sprintf(`sum(ordinal_leadership_proofs_total{job="ordinal", result="not_leader", instance=%q})`, inst(strongVia)), strongCalls)
	expectCount(ctx, t, p, `sum(ordinal_leadership_proofs_total{job="ordinal", result=~"unavailable|error"})`, 0)
	expectAtLeast(ctx, t, p, fmt.Sprintf(`sum(ordinal_forwarded_total{job="ordinal", kind="reservation", code="OK", instance=%q})`, inst(weakVia)), 1)
	expectAtLeast(ctx, t, p, fmt.Sprintf(`sum(ordinal_leadership_proofs_total{job="ordinal", result="ok", instance=%q})`, inst(leader)), 1)
	expectAtLeast(ctx, t, p, fmt.Sprintf(`sum(ordinal_reservation_entries_total{job="ordinal", result="ok", instance=%q})`, inst(leader)), 1)
	expectAtLeast(ctx, t, p, `max(ordinal_fsm_keys{job="ordinal"})`, 1)
	step("prometheus counts what the load did: IDs by mode and node, client calls, forwarded calls and reservations, proofs, reservations")

	exported := exportedNames(t, c.Nodes)
	checkRules(ctx, t, p, exported)
	step("alert rules loaded from %s: every rule evaluated without error, over series the nodes export", alertsFile)
	checkDashboard(ctx, t, p, exported)
	step("every expression of %s evaluates in prometheus over series the nodes export", dashboardFile)

	// Failover: kill -9 the leader.
	survivors := followers
	ledBefore := map[string]float64{}
	for _, nd := range survivors {
		ledBefore[nd.ID] = value(ctx, t, p, fmt.Sprintf(`sum(ordinal_raft_state_leader{job="ordinal", instance=%q}) or vector(0)`, inst(nd)))
	}
	leader.Kill()
	newLeader := c.Leader(leader)
	step("killed %s; %s leads", leader.ID, newLeader.ID)
	calls(newLeader, client.Strong, afterCalls)

	expect(ctx, t, p, fmt.Sprintf(`up{job="ordinal", instance=%q}`, inst(leader)), 0)
	expect(ctx, t, p, `sum(up{job="ordinal"})`, 2)
	expectAtLeast(ctx, t, p, fmt.Sprintf(`sum(ordinal_raft_state_leader{job="ordinal", instance=%q})`, inst(newLeader)), ledBefore[newLeader.ID]+1)
	expectCount(ctx, t, p, fmt.Sprintf(`sum(ordinal_ids_issued_total{job="ordinal", mode="strong", instance=%q})`, inst(newLeader)), afterCalls)
	step("prometheus shows the failover: %s down, %s became leader (ordinal_raft_state_leader %v -> more) and served %d STRONG IDs",
		leader.ID, newLeader.ID, ledBefore[newLeader.ID], afterCalls)

	waitAlert(ctx, t, p, "OrdinalNodeDown", map[string]string{"instance": inst(leader)}, "pending", "firing")
	waitRuleState(ctx, t, p, "OrdinalNoLeader", "inactive")
	waitRuleState(ctx, t, p, "OrdinalQuorumLost", "inactive")
	step("OrdinalNodeDown is active for %s; OrdinalNoLeader and OrdinalQuorumLost are not", leader.ID)

	// A second node down: one of three is no quorum.
	var last *proccluster.Node
	for _, nd := range survivors {
		if nd != newLeader {
			last = nd
		}
	}
	last.Kill()
	expect(ctx, t, p, `sum(up{job="ordinal"})`, 1)
	waitAlert(ctx, t, p, "OrdinalQuorumLost", map[string]string{"job": job}, "pending", "firing")
	step("killed %s too: OrdinalQuorumLost is active", last.ID)
}

// value evaluates expr, which must return one sample.
func value(ctx context.Context, t *testing.T, p *promtest.Prometheus, expr string) float64 {
	t.Helper()
	v, err := p.Scalar(ctx, expr)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// expectCount polls expr, a sum of counters of a load that is over, until
// it returns exactly want, failing when scrapeWait passes first or as soon
// as it exceeds want, which later scrapes cannot undo.
func expectCount(ctx context.Context, t *testing.T, p *promtest.Prometheus, expr string, want float64) {
	t.Helper()
	poll(t, fmt.Sprintf("%s == %v", expr, want), func() (bool, string) {
		v, err := p.Scalar(ctx, expr)
		if err != nil {
			return false, err.Error()
		}
		if v > want {
			t.Fatalf("%s = %v, want %v", expr, v, want)
		}
		return v == want, fmt.Sprint(v)
	})
}

// expect polls expr until it returns exactly want, failing when
// scrapeWait passes first.
func expect(ctx context.Context, t *testing.T, p *promtest.Prometheus, expr string, want float64) {
	t.Helper()
	poll(t, fmt.Sprintf("%s == %v", expr, want), func() (bool, string) {
		v, err := p.Scalar(ctx, expr)
		if err != nil {
			return false, err.Error()
		}
		return v == want, fmt.Sprint(v)
	})
}

// expectAtLeast polls expr until it returns at least want.
func expectAtLeast(ctx context.Context, t *testing.T, p *promtest.Prometheus, expr string, want float64) {
	t.Helper()
	poll(t, fmt.Sprintf("%s >= %v", expr, want), func() (bool, string) {
		v, err := p.Scalar(ctx, expr)
		if err != nil {
			return false, err.Error()
		}
		return v >= want, fmt.Sprint(v)
	})
}

// poll calls check until it reports true, failing with its last detail
// after scrapeWait.
func poll(t *testing.T, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(scrapeWait)
	for {
		ok, detail := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last: %s", scrapeWait, what, detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// exportedNames returns the names of the samples the nodes' /metrics
// serve (with the _bucket, _sum and _count of histograms and summaries).
func exportedNames(t *testing.T, nodes []*proccluster.Node) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, nd := range nodes {
		resp, err := hc.Get("http://" + nd.MetricsAddr + "/metrics")
		if err != nil {
			t.Fatalf("scrape %s: %v", nd.ID, err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if i := strings.IndexAny(line, "{ "); i > 0 {
				names[line[:i]] = true
			}
		}
		resp.Body.Close()
		if err := sc.Err(); err != nil {
			t.Fatalf("scrape %s: %v", nd.ID, err)
		}
	}
	return names
}

// checkNames fails t for each metric name expr selects that no node
// exports, and reports whether expr selects only etcd-only series.
func checkNames(t *testing.T, where, expr string, exported map[string]bool) (onlyEtcd bool) {
	t.Helper()
	names, err := promtest.MetricNames(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return false
	}
	if len(names) == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
	onlyEtcd = len(names) > 0
	for _, n := range names {
		switch {
		case etcdOnly[n]:
		case exported[n] || synthetic[n]:
			onlyEtcd = false
		default:
			onlyEtcd = false
			t.Errorf("%s: %q names %s, which no node exports", where, expr, n)
		}
	}
	return onlyEtcd
}

// checkRules checks that Prometheus loaded both groups of alerts.yml and
// evaluated every rule without error, and that each rule's expression
// names series the nodes export.
func checkRules(ctx context.Context, t *testing.T, p *promtest.Prometheus, exported map[string]bool) {
	t.Helper()
	var groups []promtest.RuleGroup
	poll(t, "every rule evaluated", func() (bool, string) {
		var err error
		if groups, err = p.Rules(ctx); err != nil {
			return false, err.Error()
		}
		for _, g := range groups {
			for _, r := range g.Rules {
				if r.Health != "ok" {
					return false, fmt.Sprintf("%s: health %s %s", r.Name, r.Health, r.LastError)
				}
			}
		}
		return true, ""
	})
	var names []string
	for _, g := range groups {
		names = append(names, g.Name)
		for _, r := range g.Rules {
			if r.Type != "alerting" {
				t.Errorf("rule %s is %s, want alerting", r.Name, r.Type)
			}
			if r.LastError != "" {
				t.Errorf("rule %s: %s", r.Name, r.LastError)
			}
			checkNames(t, "rule "+r.Name, r.Query, exported)
		}
	}
	if want := []string{"ordinal", "ordinal-etcd"}; !slices.Equal(names, want) {
		t.Errorf("rule groups %v, want %v", names, want)
	}
}

// grafanaVar matches a Grafana variable: $name or ${name}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// grafanaValues are what the test puts in place of the dashboard's
// variables.
var grafanaValues = map[string]string{
	"job": job, "instance": ".*",
	"__rate_interval": "1m", "__interval": "15s", "__range": "1h",
}

type dashboardPanel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // a collapsed row's
}

// checkDashboard evaluates every target of every panel of the dashboard,
// with its variables set to this cluster, in Prometheus: each must
// evaluate, name series the nodes export, and return data (the load just
// ran), unless it selects only series of the etcd store.
func checkDashboard(ctx context.Context, t *testing.T, p *promtest.Prometheus, exported map[string]bool) {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var all []dashboardPanel
	for _, pn := range d.Panels {
		all = append(all, pn)
		all = append(all, pn.Panels...)
	}
	n := 0
	for _, pn := range all {
		for _, tg := range pn.Targets {
			n++
			where := fmt.Sprintf("panel %q target %s", pn.Title, tg.RefID)
			expr := grafanaVar.ReplaceAllStringFunc(tg.Expr, func(v string) string {
				name := grafanaVar.FindStringSubmatch(v)[1]
				val, ok := grafanaValues[name]
				if !ok {
					t.Errorf("%s: unknown variable %s", where, v)
				}
				return val
			})
			onlyEtcd := checkNames(t, where, expr, exported)
			if onlyEtcd {
				if _, err := p.Query(ctx, expr); err != nil {
					t.Errorf("%s: %v", where, err)
				}
				continue
			}
			poll(t, where+" to return data", func() (bool, string) {
				s, err := p.Query(ctx, expr)
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				return len(s) > 0, "no data for " + expr
			})
		}
	}
	if n < 20 {
		t.Errorf("%s has %d targets; the test did not find the panels", dashboardFile, n)
	}
}

// waitRuleState polls until the alerting rule name is in state.
func waitRuleState(ctx context.Context, t *testing.T, p *promtest.Prometheus, name, state string) {
	t.Helper()
	poll(t, fmt.Sprintf("rule %s %s", name, state), func() (bool, string) {
		r, err := findRule(ctx, p, name)
		if err != nil {
			return false, err.Error()
		}
		return r.State == state, fmt.Sprintf("state %s, alerts %v", r.State, r.Alerts)
	})
}

// waitAlert polls until the rule name has an alert with labels in one of
// states.
func waitAlert(ctx context.Context, t *testing.T, p *promtest.Prometheus, name string, labels map[string]string, states ...string) {
	t.Helper()
	poll(t, fmt.Sprintf("alert %s%v %v", name, labels, states), func() (bool, string) {
		r, err := findRule(ctx, p, name)
		if err != nil {
			return false, err.Error()
		}
	next:
		for _, a := range r.Alerts {
			for k, v := range labels {
				if a.Labels[k] != v {
					continue next
				}
			}
			if slices.Contains(states, a.State) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("state %s, alerts %v", r.State, r.Alerts)
	})
}

func findRule(ctx context.Context, p *promtest.Prometheus, name string) (promtest.Rule, error) {
	groups, err := p.Rules(ctx)
	if err != nil {
		return promtest.Rule{}, err
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Name == name {
				return r, nil
			}
		}
	}
	return promtest.Rule{}, fmt.Errorf("no rule %s loaded", name)
}
