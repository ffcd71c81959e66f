package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
)

func TestElectionPrefix(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":              "/ordinal/election/",
		"/ordinal/":     "/ordinal/election/",
		"bench":         "/bench/election/",
		"/a/b":          "/a/b/election/",
		"/bench-store/": "/bench-store/election/",
	} {
		if got := electionPrefix(in); got != want {
			t.Errorf("electionPrefix(%q) = %q, want %q", in, got, want)
		}
	}
	if etcdcompat.DefaultNativePrefix != "/ordinal/" {
		t.Errorf("etcdcompat's default prefix is %q: update the cases above", etcdcompat.DefaultNativePrefix)
	}
}

// TestCompareEtcdStore runs the ordinal-on-etcd rows against two
// in-process ordinal nodes on a real etcd (skipped without an etcd
// binary, see etcdtest).
func TestCompareEtcdStore(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	prefix := "/bench-test-store/"
	ec := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 2, Store: etcdcompat.Config{Prefix: prefix}, Insecure: true})
	var nodes []string
	for _, nd := range ec.Nodes() {
		nodes = append(nodes, nd.GRPCAddr())
	}
	leader := ec.Leader().GRPCAddr()

	ctx := context.Background()
	elected, other, err := findElected(ctx, e.Endpoint, prefix, nodes)
	if err != nil || elected != leader || other == elected || other == "" {
		t.Fatalf("findElected = %q, %q, %v; want the leader %s and the other node", elected, other, err, leader)
	}
	if _, _, err := findElected(ctx, e.Endpoint, "/no-such-prefix/", nodes); err == nil || !strings.Contains(err.Error(), "no ordinal-on-etcd node") {
		t.Errorf("findElected under an empty prefix: %v", err)
	}
	if _, _, err := findElected(ctx, e.Endpoint, prefix, []string{other}); err == nil || !strings.Contains(err.Error(), "not one of the given") {
		t.Errorf("findElected without the elected node in the list: %v", err)
	}

	node, noopAddr := insecureSingle(t), startNoop(t)
	pids := map[string]int{node: os.Getpid(), noopAddr: os.Getpid(), e.Endpoint: os.Getpid()}
	for _, n := range nodes {
		pids[n] = os.Getpid() // in this process, like the servers above
	}
	var log bytes.Buffer
	cmp, err := Compare(ctx, CompareConfig{
		Cluster: []string{node, noopAddr}, Noop: noopAddr, Etcd: e.Endpoint,
		EtcdCluster: nodes, EtcdClusterPrefix: prefix, Rounds: 2,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Only: []string{"noop-unary-64", "etcd-64", "etcdstore-strong-64", "etcdstore-weak-64", "noop-batch-64", "etcdstore-batch-64"},
		Log:  &log, Machine: "a test", Command: "go test", PIDs: pids,
	})
	if err != nil {
		t.Fatalf("Compare: %v\n%s", err, log.String())
	}
	if len(cmp.Failures) > 0 {
		t.Fatalf("failures: %v\n%s", cmp.Failures, log.String())
	}
	if len(cmp.Stats) != 6 {
		t.Fatalf("%d scenarios ran, want 6", len(cmp.Stats))
	}
	for _, st := range cmp.Stats {
		if len(st.Runs) != 2 || st.IDsPerSec <= 0 || st.Scenario.Ref != "" && len(st.Ratios) != 2 {
			t.Errorf("%s: %d runs, %v ids/s, ratios %v", st.Scenario.Name, len(st.Runs), st.IDsPerSec, st.Ratios)
		}
		want := map[string]string{"etcdstore-strong-64": leader, "etcdstore-batch-64": leader, "etcdstore-weak-64": other}[st.Scenario.Name]
		if want != "" {
			if got := st.Runs[0].Config.Targets[0]; got != want {
				t.Errorf("%s went to %s, want %s", st.Scenario.Name, got, want)
			}
			if len(st.StoreCPU) != 2 || len(st.OthersCPU) != 2 {
				t.Errorf("%s: etcd CPU %v, other nodes' CPU %v: want one per round", st.Scenario.Name, st.StoreCPU, st.OthersCPU)
			}
		}
		switch st.Scenario.Name {
		case "etcd-64":
			// Layotto's sequencer: exactly one transaction per ID.
			if len(st.EtcdTxns) != 2 || st.EtcdTxnsMed < 0.99 || st.EtcdTxnsMed > 1.05 {
				t.Errorf("etcd-64: %v transactions per call, want 1", st.EtcdTxns)
			}
		case "etcdstore-strong-64":
			// At least one leadership proof was read, and never more than
			// one per call.
			if len(st.EtcdReads) != 2 || st.EtcdReadsMed <= 0 || st.EtcdReadsMed > 1 {
				t.Errorf("etcdstore-strong-64: %v etcd reads per call, want in (0, 1]", st.EtcdReads)
			}
		}
	}
	var md bytes.Buffer
	cmp.Markdown(&md)
	text := md.String()
	t.Log(text)
	for _, want := range []string{
		"ordinal on etcd: STRONG unary, 64 callers → elected node", "ordinal on etcd: WEAK unary, 64 callers → a node not elected",
		"ordinal on etcd: STRONG GetNextIds ×1000, 64 callers → elected node", "× etcd", "≥ 10M ids/s",
		"| etcd (store) |", "| etcdstore-strong-64 |", prefix + "election/", "| calls per read |",
		"--mode batch --targets " + leader + " --concurrency 64 --count 1000",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}

	// The elected node is read from etcd: no etcd, no etcdstore- rows.
	if _, err := Compare(ctx, CompareConfig{Cluster: []string{node}, Noop: noopAddr, EtcdCluster: nodes}); err == nil {
		t.Error("Compare with EtcdCluster but no Etcd succeeded")
	}
}
