package main

import (
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"strconv"
	"strings"
	"testing"

	"github.com/ordinal-dev/ordinal/internal/etcdtest"
)

// TestServeOnEtcd runs `ordinal serve --backend etcd` as a user would: two
// stateless nodes in the native layout sharing a real etcd (one started
// with the deprecated spelling --store etcd), one in the Layotto layout
// configured through the environment, and the flag checks.
func TestServeOnEtcd(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	a, b := testutil.FreeAddr(t), testutil.FreeAddr(t)
	// Each node has its own peer port (--raft-addr), which carries the
	// STRONG calls the other forwards to it.
	startServe(t, a, nil, "--backend", "etcd", "--etcd-endpoints", e.Endpoint, "--grpc-addr", a, "--raft-addr", "127.0.0.1:0", "--node-id", "a", "--etcd-session-ttl", "2s")
	pb := startServe(t, b, nil, "--store", "etcd", "--etcd-endpoints", e.Endpoint, "--grpc-addr", b, "--raft-addr", "127.0.0.1:0", "--node-id", "b", "--etcd-session-ttl", "2s")
	if log := pb.stderr.String(); !strings.Contains(log, "--store is deprecated: use --backend") {
		t.Errorf("serve --store etcd logged no deprecation warning:\n%s", log)
	}
	if got := mustRun(t, nil, "next", "--addr", a, "k"); got != "1\n" {
		t.Fatalf("first WEAK id via node a: %q, want 1", got)
	}
	first, err1 := strconv.ParseInt(strings.TrimSpace(mustRun(t, nil, "next", "--addr", b, "--mode", "strong", "k")), 10, 64)
	second, err2 := strconv.ParseInt(strings.TrimSpace(mustRun(t, nil, "next", "--addr", a, "--mode", "strong", "k")), 10, 64)
	if err1 != nil || err2 != nil || second <= first || first <= 1 {
		t.Fatalf("STRONG ids via b then a: %d then %d (%v, %v), want increasing and above the WEAK id", first, second, err1, err2)
	}

	l := testutil.FreeAddr(t)
	startServe(t, l, []string{
		"ORDINAL_BACKEND=etcd", "ORDINAL_ETCD_ENDPOINTS=" + e.Endpoint, "ORDINAL_GRPC_ADDR=" + l, "ORDINAL_RAFT_ADDR=127.0.0.1:0",
		"ORDINAL_ETCD_LAYOUT=layotto", "ORDINAL_ETCD_APP_ID=app1",
	})
	out := mustRun(t, nil, "demo", "--addr", l, "-s", "sequencer_demo")
	if !strings.Contains(out, "Next id:next_id:10\nDemo success!") {
		t.Fatalf("demo in the Layotto layout printed:\n%s", out)
	}
	if r := runOrdinal(t, nil, "next", "--addr", l, "--count", "5", "k"); r.code == 0 || !strings.Contains(r.stderr, "FailedPrecondition") {
		t.Fatalf("a block in the Layotto layout: exit %d, stderr %q; want FailedPrecondition", r.code, r.stderr)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--backend", "etcd"}, "--etcd-endpoints"},
		{[]string{"--backend", "zookeeper"}, `unknown --backend "zookeeper"`},
		{[]string{"--store", "zookeeper"}, `unknown --backend "zookeeper"`},
		{[]string{"--etcd-endpoints", e.Endpoint}, "need --backend etcd"},
		{[]string{"--backend", "etcd", "--etcd-endpoints", e.Endpoint, "--join", "x:1"}, "--join only applies to --backend raft"},
		{[]string{"--backend", "etcd", "--etcd-endpoints", e.Endpoint, "--etcd-layout", "zk"}, `unknown etcd layout "zk"`},
		{[]string{"--backend", "etcd", "--etcd-endpoints", e.Endpoint, "--etcd-app-id", "a"}, "only applies to the Layotto layout"},
		{[]string{"--backend", "etcd", "--etcd-endpoints", e.Endpoint, "--etcd-ca-file", "/nonexistent.pem"}, "read etcd CA file"},
	} {
		r := runOrdinal(t, nil, append([]string{"serve"}, tc.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("serve %s: exit %d, stderr %q; want exit 2 and one line containing %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
}
