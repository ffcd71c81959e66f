package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/bench/noop"
	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testpki"
	"github.com/ordinal-dev/ordinal/tlsutil"
)

// startNoopTLS starts a no-op server over mutual TLS with the server
// certificate the secured test nodes serve (testcluster.Secure) and
// client certificates of p's client CA required, as `ordinal-bench
// serve-noop --tls-cert-file --tls-key-file --tls-client-ca-file` serves.
func startNoopTLS(t *testing.T, p *testpki.PKI) string {
	t.Helper()
	certFile, keyFile := p.Server("node", "127.0.0.1", "localhost")
	kp, err := tlsutil.LoadKeyPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cas, err := tlsutil.LoadCAPool(p.ClientCAFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := noop.ListenTLS("127.0.0.1:0", tlsutil.ServerConfig(kp, cas, true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l.Addr()
}

// TestNoopTLS loads the no-op server over mutual TLS: calls with a client
// certificate succeed and verify, calls without TLS or without a client
// certificate all fail.
func TestNoopTLS(t *testing.T) {
	t.Parallel()
	p := testpki.New(t, "")
	addr := startNoopTLS(t, p)
	withCert := []client.Option{client.WithTLS(p.ClientTLS("bench-ids"))}
	for _, mode := range []Mode{ModeStrong, ModeStream} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := testConfig(mode, addr)
			cfg.ClientOptions = withCert
			runAndCheck(t, cfg)
		})
	}
	for name, opts := range map[string][]client.Option{
		"plain TCP":             nil,
		"no client certificate": {client.WithTLS(p.ClientTLS(""))},
	} {
		cfg := testConfig(ModeStrong, addr)
		cfg.Duration, cfg.Warmup, cfg.ClientOptions = 200*time.Millisecond, -1, opts
		if res, err := Run(context.Background(), cfg); !errors.Is(err, ErrNoCalls) {
			t.Errorf("%s: Run = %v, %v; want ErrNoCalls: the server requires mutual TLS", name, res, err)
		}
	}
	if _, err := noop.ListenTLS("127.0.0.1:0", &tls.Config{}); err == nil {
		t.Error("ListenTLS without a certificate succeeded")
	}
}

// TestCompareTLS runs the mTLS rows against a secured in-process node
// (peer mTLS, client TLS with client certificates required, admin names)
// and a no-op server over the same mutual TLS, next to their plain twins,
// and checks the TLS on vs off ratios, the target and the report.
//
// Not parallel: the nodes' ports are picked free before they bind, and the
// load of the other tests' runs (their connections' local ports come from
// the same range) can take one in between; alone, it starts on a quiet
// machine and its own load runs after its node is up.
func TestCompareTLS(t *testing.T) {
	secured := testcluster.New(t, 1)
	secureNode := secured.Node("n1").GRPCAddr
	tlsNoop := startNoopTLS(t, secured.PKI())
	node, noopAddr := insecureSingle(t), startNoop(t)
	// An application's certificate: the ids role only.
	ids := []client.Option{client.WithTLS(secured.ClientTLS("bench-ids"))}
	admin := []client.Option{client.WithTLS(secured.ClientTLS(testcluster.AdminName))}
	pids := map[string]int{}
	for _, a := range []string{node, noopAddr, secureNode, tlsNoop} {
		pids[a] = os.Getpid() // all in this process
	}
	const flags = "--tls-ca-file CA.pem --tls-cert-file ids.pem --tls-key-file ids-key.pem"
	base := CompareConfig{
		// No-op servers stand in for followers: findRoles takes any
		// address that is not the leader's.
		Cluster: []string{node, noopAddr}, Noop: noopAddr,
		TLS:    TLSTargets{Cluster: []string{secureNode, tlsNoop}, Noop: tlsNoop, ClientOptions: ids, AdminOptions: admin, Flags: flags},
		Rounds: 2, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Only:    []string{"noop-unary-64", "noop-tls-unary-64", "strong-leader-64", "tls-strong-leader-64"},
		Machine: "a test", Command: "go test", PIDs: pids,
	}

	t.Run("rows", func(t *testing.T) {
		var log bytes.Buffer
		cfg := base
		cfg.Log = &log
		cmp, err := Compare(context.Background(), cfg)
		if err != nil {
			t.Fatalf("Compare: %v\n%s", err, log.String())
		}
		if len(cmp.Failures) > 0 {
			t.Fatalf("failures: %v\n%s", cmp.Failures, log.String())
		}
		if got := len(cmp.Stats); got != 4 {
			t.Fatalf("%d scenarios ran, want 4", got)
		}
		for _, st := range cmp.Stats {
			name := st.Scenario.Name
			if len(st.Runs) != 2 || st.IDsPerSec <= 0 || st.Scenario.Ref != "" && len(st.Ratios) != 2 {
				t.Errorf("%s: %d runs, %v ids/s, ratios %v", name, len(st.Runs), st.IDsPerSec, st.Ratios)
				continue
			}
			want := map[string]string{"noop-unary-64": noopAddr, "noop-tls-unary-64": tlsNoop,
				"strong-leader-64": node, "tls-strong-leader-64": secureNode}[name]
			if got := st.Runs[0].Config.Targets[0]; got != want {
				t.Errorf("%s went to %s, want %s", name, got, want)
			}
			if st.Scenario.Role.isTLS() {
				if len(st.PlainRatios) != 2 || st.PlainRatio <= 0 || math.IsNaN(st.RoundPlainRatios[0]) || math.IsNaN(st.RoundPlainRatios[1]) {
					t.Errorf("%s: TLS on vs off ratios %v (per round %v), want one per round", name, st.PlainRatios, st.RoundPlainRatios)
				}
				if !strings.Contains(st.Commands[0], flags) {
					t.Errorf("%s: standalone command %q lacks the TLS flags %q", name, st.Commands[0], flags)
				}
			} else if len(st.PlainRatios) != 0 || strings.Contains(st.Commands[0], "--tls") {
				t.Errorf("%s: a plain row has TLS on vs off ratios %v, or TLS flags in %q", name, st.PlainRatios, st.Commands[0])
			}
		}
		target := cmp.byName["tls-strong-leader-64"]
		if len(target.OthersCPU) != 2 {
			t.Errorf("tls-strong-leader-64: other nodes' CPU %v, want one per round", target.OthersCPU)
		}
		var md bytes.Buffer
		cmp.Markdown(&md)
		text := md.String()
		t.Log(text)
		verdict := "**missed**: "
		if target.PlainRatio >= 0.9 {
			verdict = "met: "
		}
		for _, want := range []string{
			"mTLS: STRONG unary, 64 callers → leader", "no-op ceiling over mTLS, unary, 64 callers",
			"≥ 0.9× strong-leader-64 (TLS off, same run)",
			"for the mTLS rows, the no-op ceiling over the same mutual TLS",
			"TLS on vs off, same run",
			fmt.Sprintf("| tls-strong-leader-64 | strong-leader-64 | %s | %s | %.2f× |",
				human(target.IDsPerSec), human(cmp.byName["strong-leader-64"].IDsPerSec), target.PlainRatio),
			fmt.Sprintf("| noop-tls-unary-64 | noop-unary-64 | %s |", human(cmp.byName["noop-tls-unary-64"].IDsPerSec)),
			verdict + fmt.Sprintf("%.2f× strong-leader-64", target.PlainRatio),
			"| tls-strong-leader-64 |", // CPU and per-round tables
			"a second cluster, " + secureNode + ", " + tlsNoop,
			"--mode strong --targets " + secureNode + " --concurrency 64",
			"all passed.",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("markdown lacks %q", want)
			}
		}
	})

	// Asking who leads is an admin call: with only an application's
	// certificate the secured cluster's rows fail, saying why, and the
	// other rows still run.
	t.Run("leader lookup without admin", func(t *testing.T) {
		cfg := base
		cfg.TLS.AdminOptions, cfg.Rounds = nil, 1
		cfg.Duration, cfg.Warmup = 200*time.Millisecond, -1
		cmp, err := Compare(context.Background(), cfg)
		if err != nil {
			t.Fatalf("Compare: %v", err)
		}
		if len(cmp.Failures) != 1 || !strings.Contains(cmp.Failures[0].Error(), "tls-strong-leader-64") ||
			!strings.Contains(cmp.Failures[0].Error(), "PermissionDenied") || !strings.Contains(cmp.Failures[0].Error(), "--admin-names") {
			t.Fatalf("failures %v; want one, of tls-strong-leader-64, PermissionDenied with a hint at --admin-names", cmp.Failures)
		}
		for _, st := range cmp.Stats {
			if ran := st.Runs[0] != nil; ran == (st.Scenario.Name == "tls-strong-leader-64") {
				t.Errorf("%s ran: %v", st.Scenario.Name, ran)
			}
		}
		var md bytes.Buffer
		cmp.Markdown(&md)
		if text := md.String(); !strings.Contains(text, "**FAILED** round 1, tls-strong-leader-64") ||
			!strings.Contains(text, "**missed**: not measured: no round ran both tls-strong-leader-64 and strong-leader-64") {
			t.Errorf("markdown does not report the failed row:\n%s", text)
		}
	})
}
