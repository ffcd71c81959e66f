package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/ordinal-dev/ordinal/admin"
	"github.com/ordinal-dev/ordinal/auth"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// tokenLines returns the tokens-file lines for role/name/token triples.
func tokenLines(t *testing.T, entries ...[3]string) string {
	t.Helper()
	var b strings.Builder
	for _, e := range entries {
		line, err := auth.FormatTokenLine(auth.Role(e[0]), e[1], e[2])
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// writeSecret writes a secret file (mode 0600) and returns its path.
func writeSecret(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A node secured with tokens only (no TLS, on loopback) authorizes the
// CLI's calls by role, and none of its secrets shows in its command line,
// its /debug/pprof/cmdline or its log.
func TestServeWithTokensKeepsSecretsOutOfSight(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	adminToken, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	idsToken, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	clusterToken := "cluster-token-" + strconv.Itoa(os.Getpid()) + "-0123456789abcdef"
	tokens := writeSecret(t, dir, "tokens", tokenLines(t, [3]string{"admin", "ops", adminToken}, [3]string{"ids", "orders", idsToken}))
	adminFile := writeSecret(t, dir, "admin.token", adminToken+"\n")
	idsFile := writeSecret(t, dir, "ids.token", idsToken)
	clusterFile := writeSecret(t, dir, "cluster.token", clusterToken)

	addr, pprofAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	p := startServe(t, addr, nil, "--grpc-addr", addr, "--raft-addr", testutil.FreeAddr(t), "--data-dir", filepath.Join(dir, "data"),
		"--auth-tokens-file", tokens, "--cluster-token-file", clusterFile, "--anonymous-ids", "--pprof-addr", pprofAddr)

	// Roles: admin token → members; ids token → an ID but no members; no
	// token → an ID (--anonymous-ids) but no members.
	if out := mustRun(t, nil, "members", "--addr", addr, "--token-file", adminFile); !strings.Contains(out, "voter") {
		t.Fatalf("members with the admin token:\n%s", out)
	}
	if out := mustRun(t, nil, "next", "--addr", addr, "--token-file", idsFile, "k"); strings.TrimSpace(out) != "1" {
		t.Fatalf("next with the ids token: %q", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"members", "--addr", addr, "--token-file", idsFile}, "PermissionDenied"},
		{[]string{"members", "--addr", addr}, "Unauthenticated"},
		{[]string{"remove", "--addr", addr, "--token-file", idsFile, "n9"}, "PermissionDenied"},
	} {
		if r := runOrdinal(t, nil, tc.args...); r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("ordinal %s: exit %d, stderr %q; want %s", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
	if out := mustRun(t, nil, "next", "--addr", addr, "k"); strings.TrimSpace(out) != "2" {
		t.Fatalf("next without credentials (--anonymous-ids): %q", out)
	}

	secrets := []string{adminToken, idsToken, clusterToken, auth.HashToken(adminToken), auth.HashToken(idsToken)}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	pprofCmdline, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(pprofCmdline, []byte("--cluster-token-file")) {
		t.Fatalf("pprof cmdline %q does not look like the node's", pprofCmdline)
	}
	for where, text := range map[string]string{"process list": string(cmdline), "pprof cmdline": string(pprofCmdline), "log": p.stderr.String()} {
		for _, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("the %s holds a secret", where)
			}
		}
	}
}

// pprof beyond loopback is refused without a tokens file, and behind one
// it answers only admin tokens.
func TestPprofBeyondLoopbackNeedsAdmin(t *testing.T) {
	t.Parallel()
	r := runOrdinal(t, nil, "serve", "--pprof-addr", "0.0.0.0:0", "--data-dir", t.TempDir())
	if r.code != 2 || !strings.Contains(r.stderr, "--auth-tokens-file") {
		t.Fatalf("serve --pprof-addr 0.0.0.0:0 without tokens: exit %d, %q", r.code, r.stderr)
	}

	dir := t.TempDir()
	adminToken, _ := auth.NewToken()
	idsToken, _ := auth.NewToken()
	tokens := writeSecret(t, dir, "tokens", tokenLines(t, [3]string{"admin", "ops", adminToken}, [3]string{"ids", "app", idsToken}))
	authz, err := auth.New(auth.Config{TokensFile: tokens})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr, token string
		want        int
	}{
		{"10.0.0.5:6060", "", http.StatusUnauthorized},
		{"10.0.0.5:6060", idsToken, http.StatusForbidden},
		{"10.0.0.5:6060", adminToken, http.StatusOK},
		{"127.0.0.1:6060", "", http.StatusOK},
	} {
		h := admin.Handler(admin.Config{Addr: tc.addr, Pprof: true, Guard: adminOnly(authz)})
		req := httptest.NewRequest(http.MethodGet, "/debug/pprof/cmdline", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("pprof on %s with token %v: HTTP %d, want %d", tc.addr, tc.token != "", rec.Code, tc.want)
		}
	}
}

// serve warns loudly when it listens beyond loopback without the
// credentials that would protect that port.
func TestServeWarnsWhenExposed(t *testing.T) {
	for _, tc := range []struct {
		name       string
		f          securityFlags
		grpc, peer string
		want       []string
		not        []string
	}{
		{"off, loopback", securityFlags{}, "127.0.0.1:1", "127.0.0.1:2", nil, []string{"SECURITY IS OFF"}},
		{"off, exposed", securityFlags{}, "0.0.0.0:1", "127.0.0.1:2", []string{"SECURITY IS OFF"}, nil},
		{"peer open", securityFlags{tlsCert: "c", tlsKey: "k", tlsClientCA: "ca", adminNames: "ops"}, "0.0.0.0:1", "0.0.0.0:2",
			[]string{"the peer port has no credentials"}, []string{"client port is not encrypted", "admin calls"}},
		{"token without TLS", securityFlags{clusterTokenFile: "t", tokensFile: "x"}, "0.0.0.0:1", "0.0.0.0:2",
			[]string{"the peer port is not encrypted", "client port is not encrypted"}, []string{"admin calls are refused"}},
		{"no admin credential", securityFlags{peerCert: "c", peerKey: "k", peerCA: "ca", tlsCert: "c", tlsKey: "k"}, "0.0.0.0:1", "0.0.0.0:2",
			[]string{"admin calls (SetFloor"}, []string{"peer port"}},
	} {
		var buf bytes.Buffer
		tc.f.warn(hclog.New(&hclog.LoggerOptions{Output: &buf}), tc.grpc, tc.peer)
		for _, w := range tc.want {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("%s: log lacks %q:\n%s", tc.name, w, buf.String())
			}
		}
		for _, w := range tc.not {
			if strings.Contains(buf.String(), w) {
				t.Errorf("%s: log has %q:\n%s", tc.name, w, buf.String())
			}
		}
	}
}
