package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/auth"
)

// fixture is a client CA with certificates for an ids caller and for
// admins named in each kind of certificate name, and a tokens file with
// an admin token (alice) and an ids token (bob).
type fixture struct {
	serverCA, clientCA *ca
	web                *tls.Certificate // ids: no admin name
	opsCN              *tls.Certificate // admin by CommonName
	opsDNS             *tls.Certificate // admin by DNS SAN
	opsEmail           *tls.Certificate // admin by email SAN
	opsURI             *tls.Certificate // admin by URI SAN
	opsInOrg           *tls.Certificate // an admin name, but only as Organization: ids
	alice, bob         string
	tokensPath         string
	adminNames         []string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{serverCA: newCA(t, "server CA"), clientCA: newCA(t, "client CA")}
	f.adminNames = []string{"ops-1", "ops.example.com", "ops@example.com", "spiffe://ordinal/ops"}
	f.web = f.clientCA.clientCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "web-1"}})
	f.opsCN = f.clientCA.clientCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "ops-1"}})
	f.opsDNS = f.clientCA.clientCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "dns-holder"}, DNSNames: []string{"x.example.com", "ops.example.com"}})
	f.opsEmail = f.clientCA.clientCert(t, &x509.Certificate{EmailAddresses: []string{"ops@example.com"}})
	f.opsURI = f.clientCA.clientCert(t, &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: "ordinal", Path: "/ops"}}})
	f.opsInOrg = f.clientCA.clientCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "web-2", Organization: []string{"ops-1"}}})
	f.alice, f.bob = mustToken(t), mustToken(t)
	aliceLine, err := auth.FormatTokenLine(auth.RoleAdmin, "alice", f.alice)
	if err != nil {
		t.Fatal(err)
	}
	bobLine, err := auth.FormatTokenLine(auth.RoleIDs, "bob", f.bob)
	if err != nil {
		t.Fatal(err)
	}
	f.tokensPath = tokensFile(t, "# ordinal tokens\n"+aliceLine+"\n\n"+bobLine+" # CI\n")
	return f
}

func mustNew(t testing.TB, cfg auth.Config) *auth.Authorizer {
	t.Helper()
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return a
}

// tamper changes one character in the middle of token.
func tamper(token string) string {
	i := len(token) / 2
	c := byte('A')
	if token[i] == 'A' {
		c = 'B'
	}
	return token[:i] + string(c) + token[i+1:]
}

const (
	getNextID = "/ordinal.v1.SequencerService/GetNextId"
	setFloor  = "/ordinal.v1.SequencerService/SetFloor"
	nextIDs   = "/ordinal.v1.SequencerService/NextIdStream"
	remove    = "/ordinal.v1.ClusterService/Remove"
	reserve   = "/ordinal.v1.ClusterService/Reserve"
	layotto   = "/spec.proto.runtime.v1.Runtime/GetNextId"
	backdoor  = "/example.v1.Backdoor/Open"
)

// TestCallsOverGRPC makes each call an attacker (or a legitimate caller)
// would, through real TLS connections to a real grpc-go server, and checks
// the answer's code and message, and which identity the handler saw.
func TestCallsOverGRPC(t *testing.T) {
	f := newFixture(t)
	tlsCfg := serverTLS(t, f.serverCA, f.clientCA, tls.VerifyClientCertIfGiven)
	servers := map[string]*testServer{
		"anonymous-ids": startServer(t, mustNew(t, auth.Config{AnonymousIDs: true, AdminNames: f.adminNames, TokensFile: f.tokensPath}), tlsCfg),
		"strict":        startServer(t, mustNew(t, auth.Config{AdminNames: f.adminNames, TokensFile: f.tokensPath}), tlsCfg),
		"no-tokens":     startServer(t, mustNew(t, auth.Config{AnonymousIDs: true, AdminNames: f.adminNames}), tlsCfg),
		"open":          startServer(t, mustNew(t, auth.Config{Open: true}), tlsCfg),
	}
	needCreds := "this call needs credentials: a client certificate or a bearer token (ordinal CLI: --token-file)"
	bearer := func(tok string) []string { return []string{"Bearer " + tok} }

	cases := []struct {
		name     string
		server   string
		cert     *tls.Certificate
		authz    []string
		method   string
		wantCode codes.Code
		want     string // what the handler saw, when allowed
		wantMsg  string // in the error, when refused
	}{
		// Without credentials.
		{name: "anonymous GetNextId allowed", server: "anonymous-ids", method: getNextID, want: "anonymous||ids"},
		{name: "anonymous Layotto GetNextId allowed", server: "anonymous-ids", method: layotto, want: "anonymous||ids"},
		{name: "anonymous NextIdStream allowed", server: "anonymous-ids", method: nextIDs, want: "anonymous||ids"},
		{name: "anonymous SetFloor needs credentials", server: "anonymous-ids", method: setFloor, wantCode: codes.Unauthenticated, wantMsg: needCreds + "; " + setFloor + " needs role admin"},
		{name: "anonymous ClusterService/Remove needs credentials", server: "anonymous-ids", method: remove, wantCode: codes.Unauthenticated, wantMsg: needCreds},
		{name: "anonymous unknown method needs admin credentials", server: "anonymous-ids", method: backdoor, wantCode: codes.Unauthenticated, wantMsg: backdoor + " needs role admin"},
		{name: "strict: GetNextId needs credentials", server: "strict", method: getNextID, wantCode: codes.Unauthenticated, wantMsg: needCreds + "; " + getNextID + " needs role ids"},
		{name: "strict: NextIdStream needs credentials", server: "strict", method: nextIDs, wantCode: codes.Unauthenticated, wantMsg: needCreds},
		{name: "strict: Layotto GetNextId needs credentials", server: "strict", method: layotto, wantCode: codes.Unauthenticated, wantMsg: needCreds},

		// Client certificates.
		{name: "ids certificate takes ids", server: "strict", cert: f.web, method: getNextID, want: "certificate|web-1|ids"},
		{name: "ids certificate streams", server: "strict", cert: f.web, method: nextIDs, want: "certificate|web-1|ids"},
		{name: "ids certificate may not SetFloor", server: "strict", cert: f.web, method: setFloor, wantCode: codes.PermissionDenied, wantMsg: "web-1 (role ids) may not call /ordinal.v1.SequencerService/SetFloor: it needs role admin"},
		{name: "ids certificate may not ClusterService/Remove", server: "anonymous-ids", cert: f.web, method: remove, wantCode: codes.PermissionDenied, wantMsg: "web-1 (role ids) may not call " + remove},
		{name: "admin name in Organization only is not an admin", server: "strict", cert: f.opsInOrg, method: setFloor, wantCode: codes.PermissionDenied, wantMsg: "web-2 (role ids)"},
		{name: "admin by CommonName may SetFloor", server: "strict", cert: f.opsCN, method: setFloor, want: "certificate|ops-1|admin"},
		{name: "admin by DNS SAN may ClusterService/Remove", server: "strict", cert: f.opsDNS, method: remove, want: "certificate|dns-holder|admin"},
		{name: "admin by email SAN may SetFloor", server: "strict", cert: f.opsEmail, method: setFloor, want: "certificate|ops@example.com|admin"},
		{name: "admin by URI SAN may SetFloor", server: "strict", cert: f.opsURI, method: setFloor, want: "certificate|spiffe://ordinal/ops|admin"},
		{name: "admin certificate takes ids too", server: "strict", cert: f.opsCN, method: getNextID, want: "certificate|ops-1|admin"},

		// Bearer tokens.
		{name: "admin token may SetFloor", server: "strict", authz: bearer(f.alice), method: setFloor, want: "token|alice|admin"},
		{name: "ids token takes ids", server: "strict", authz: bearer(f.bob), method: getNextID, want: "token|bob|ids"},
		{name: "ids token streams", server: "strict", authz: bearer(f.bob), method: nextIDs, want: "token|bob|ids"},
		{name: "ids token may not ClusterService/Remove", server: "strict", authz: bearer(f.bob), method: remove, wantCode: codes.PermissionDenied, wantMsg: "bob (role ids) may not call /ordinal.v1.ClusterService/Remove: it needs role admin"},
		{name: "tampered admin token refused", server: "strict", authz: bearer(tamper(f.alice)), method: setFloor, wantCode: codes.Unauthenticated, wantMsg: "unknown bearer token"},
		{name: "tampered token refused even where anonymous calls pass", server: "anonymous-ids", authz: bearer(tamper(f.bob)), method: getNextID, wantCode: codes.Unauthenticated, wantMsg: "unknown bearer token"},
		{name: "tampered token refused even with an admin certificate", server: "strict", cert: f.opsCN, authz: bearer(tamper(f.alice)), method: setFloor, wantCode: codes.Unauthenticated, wantMsg: "unknown bearer token"},
		{name: "token refused by a node without a tokens file", server: "no-tokens", authz: bearer(f.alice), method: getNextID, wantCode: codes.Unauthenticated, wantMsg: "accepts no bearer tokens"},
		{name: "the token's hash is not a token", server: "strict", authz: bearer(auth.HashToken(f.alice)), method: setFloor, wantCode: codes.Unauthenticated, wantMsg: "unknown bearer token"},

		// Both: the union of the roles.
		{name: "ids certificate plus admin token is admin", server: "strict", cert: f.web, authz: bearer(f.alice), method: setFloor, want: "certificate+token|web-1+alice|admin"},
		{name: "admin certificate plus ids token is admin", server: "strict", cert: f.opsCN, authz: bearer(f.bob), method: remove, want: "certificate+token|ops-1+bob|admin"},

		// Methods the policy does not list need admin.
		{name: "ids token may not call an unknown method", server: "strict", authz: bearer(f.bob), method: backdoor, wantCode: codes.PermissionDenied, wantMsg: "bob (role ids) may not call " + backdoor + ": it needs role admin"},
		{name: "ids certificate may not call an unlisted Cluster method", server: "strict", cert: f.web, method: reserve, wantCode: codes.PermissionDenied, wantMsg: "needs role admin"},
		{name: "admin token may call an unknown method", server: "strict", authz: bearer(f.alice), method: backdoor, want: "token|alice|admin"},

		// The authorization header, parsed sanely.
		{name: "scheme in lower case", server: "strict", authz: []string{"bearer " + f.alice}, method: setFloor, want: "token|alice|admin"},
		{name: "scheme in upper case", server: "strict", authz: []string{"BEARER " + f.alice}, method: setFloor, want: "token|alice|admin"},
		{name: "several spaces after the scheme", server: "strict", authz: []string{"Bearer   " + f.alice}, method: setFloor, want: "token|alice|admin"},
		{name: "bare token without scheme", server: "anonymous-ids", authz: []string{f.bob}, method: getNextID, wantCode: codes.Unauthenticated, wantMsg: "bare token"},
		{name: "Basic scheme", server: "anonymous-ids", authz: []string{"Basic YWxpY2U6c2VjcmV0"}, method: getNextID, wantCode: codes.Unauthenticated, wantMsg: "only \"Bearer <token>\""},
		{name: "scheme without token", server: "anonymous-ids", authz: []string{"Bearer"}, method: getNextID, wantCode: codes.Unauthenticated, wantMsg: "malformed authorization header"},
		{name: "scheme and spaces without token", server: "anonymous-ids", authz: []string{"Bearer   "}, method: getNextID, wantCode: codes.Unauthenticated, wantMsg: "malformed bearer token"},
		{name: "empty header", server: "anonymous-ids", authz: []string{""}, method: getNextID, wantCode: codes.Unauthenticated, wantMsg: "malformed authorization header"},
		{name: "two tokens in one header", server: "strict", authz: []string{"Bearer " + f.bob + " " + f.alice}, method: setFloor, wantCode: codes.Unauthenticated, wantMsg: "malformed bearer token"},
		{name: "two headers", server: "strict", authz: []string{"Bearer " + f.bob, "Bearer " + f.alice}, method: setFloor, wantCode: codes.Unauthenticated, wantMsg: "2 authorization headers"},

		// Open mode checks nothing.
		{name: "open: anonymous SetFloor", server: "open", method: setFloor, want: "open||admin"},
		{name: "open: garbage authorization ignored", server: "open", authz: []string{"Basic x"}, method: remove, want: "open||admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := servers[tc.server]
			conn := dial(t, srv.addr, f.serverCA, tc.cert)
			before := srv.handled.Load()
			got, err := call(t, conn, tc.method, tc.authz...)
			if code := status.Code(err); code != tc.wantCode {
				t.Fatalf("%s answered %v (%v), want %v", tc.method, code, err, tc.wantCode)
			}
			if tc.wantCode != codes.OK {
				msg := status.Convert(err).Message()
				if !strings.Contains(msg, tc.wantMsg) {
					t.Errorf("message %q does not contain %q", msg, tc.wantMsg)
				}
				for _, tok := range []string{f.alice, f.bob, tamper(f.alice), tamper(f.bob)} {
					if strings.Contains(msg, tok) {
						t.Errorf("message %q leaks a token", msg)
					}
				}
				if n := srv.handled.Load(); n != before {
					t.Errorf("the refused call reached the handler (%d calls, was %d)", n, before)
				}
				return
			}
			if got != tc.want {
				t.Errorf("the handler saw %q, want %q", got, tc.want)
			}
		})
	}
}

// TestHealthNeedsIDs calls the real health service.
func TestHealthNeedsIDs(t *testing.T) {
	f := newFixture(t)
	tlsCfg := serverTLS(t, f.serverCA, f.clientCA, tls.VerifyClientCertIfGiven)
	anon := startServer(t, mustNew(t, auth.Config{AnonymousIDs: true, TokensFile: f.tokensPath}), tlsCfg)
	strict := startServer(t, mustNew(t, auth.Config{TokensFile: f.tokensPath}), tlsCfg)
	cases := []struct {
		name     string
		addr     string
		authz    []string
		wantCode codes.Code
	}{
		{"anonymous allowed", anon.addr, nil, codes.OK},
		{"strict without credentials", strict.addr, nil, codes.Unauthenticated},
		{"strict with an ids token", strict.addr, []string{"Bearer " + f.bob}, codes.OK},
		{"strict with a tampered token", strict.addr, []string{"Bearer " + tamper(f.bob)}, codes.Unauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := healthpb.NewHealthClient(dial(t, tc.addr, f.serverCA, nil)).Check(withAuthz(ctx, tc.authz...), &healthpb.HealthCheckRequest{})
			if code := status.Code(err); code != tc.wantCode {
				t.Fatalf("Health/Check answered %v (%v), want %v", code, err, tc.wantCode)
			}
			if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("Health/Check status %v, want SERVING", resp.GetStatus())
			}
		})
	}
}

// TestCertificateFromAnotherCARefused presents a certificate from a CA the
// server does not trust, named like an admin: the TLS handshake refuses it
// before any call is authorized.
func TestCertificateFromAnotherCARefused(t *testing.T) {
	f := newFixture(t)
	rogue := newCA(t, "rogue CA").clientCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "ops-1"}})
	srv := startServer(t, mustNew(t, auth.Config{AnonymousIDs: true, AdminNames: f.adminNames}),
		serverTLS(t, f.serverCA, f.clientCA, tls.VerifyClientCertIfGiven))

	t.Run("raw TLS handshake", func(t *testing.T) {
		conn, err := tls.Dial("tcp", srv.addr, &tls.Config{
			RootCAs:              f.serverCA.pool,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return rogue, nil },
			NextProtos:           []string{"h2"},
			MinVersion:           tls.VersionTLS12,
		})
		if err == nil {
			// TLS 1.3: the server's verdict on the client's certificate
			// arrives after the client's side of the handshake.
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = conn.Read(make([]byte, 1))
		}
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("the server accepted a certificate from another CA: handshake error %v", err)
		}
		t.Logf("handshake refused: %v", err)
	})

	t.Run("gRPC call", func(t *testing.T) {
		for _, method := range []string{setFloor, getNextID} {
			_, err := call(t, dial(t, srv.addr, f.serverCA, rogue), method)
			if code := status.Code(err); code != codes.Unavailable {
				t.Errorf("%s with a rogue certificate answered %v (%v), want Unavailable (handshake refused)", method, code, err)
			}
		}
		if n := srv.handled.Load(); n != 0 {
			t.Errorf("%d calls with a rogue certificate reached a handler", n)
		}
	})
}

// TestUnverifiedCertificateIdentifiesNobody runs a server that asks for a
// client certificate but does not verify it: a self-signed certificate
// with an admin name must count as no credentials at all.
func TestUnverifiedCertificateIdentifiesNobody(t *testing.T) {
	f := newFixture(t)
	self := newCA(t, "ops-1").clientCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "ops-1"}})
	srv := startServer(t, mustNew(t, auth.Config{AnonymousIDs: true, AdminNames: f.adminNames}),
		serverTLS(t, f.serverCA, f.clientCA, tls.RequireAnyClientCert))
	conn := dial(t, srv.addr, f.serverCA, self)
	if _, err := call(t, conn, setFloor); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("SetFloor with an unverified admin-named certificate answered %v, want Unauthenticated", err)
	}
	got, err := call(t, conn, getNextID)
	if err != nil || got != "anonymous||ids" {
		t.Fatalf("GetNextId with an unverified certificate: %q, %v; want it served as anonymous", got, err)
	}
}

// TestServiceCannotOptOut checks that a service defining the middleware's
// AuthFuncOverride (every test service does, allowing everything) does
// not escape the policy, for unary calls and streams.
func TestServiceCannotOptOut(t *testing.T) {
	f := newFixture(t)
	srv := startServer(t, mustNew(t, auth.Config{TokensFile: f.tokensPath}), serverTLS(t, f.serverCA, f.clientCA, tls.VerifyClientCertIfGiven))
	conn := dial(t, srv.addr, f.serverCA, nil)
	for _, method := range []string{setFloor, nextIDs, backdoor} {
		if _, err := call(t, conn, method); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s without credentials on a service with AuthFuncOverride: %v, want Unauthenticated", method, err)
		}
	}
	if got, err := call(t, conn, nextIDs, "Bearer "+f.bob); err != nil || got != "token|bob|ids" {
		t.Errorf("NextIdStream with bob's token: %q, %v; want the stream served with bob's identity", got, err)
	}
}

// TestRevokedTokenStopsWorking removes alice's token from the tokens file
// while a server runs and polls until her calls are refused; bob's token
// goes on working, a broken file keeps the tokens loaded before and is
// logged once without secrets, and a token added back works again.
func TestRevokedTokenStopsWorking(t *testing.T) {
	f := newFixture(t)
	const interval = 50 * time.Millisecond
	var logs syncBuffer
	a := mustNew(t, auth.Config{
		TokensFile:     f.tokensPath,
		ReloadInterval: interval,
		Logger:         hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info}),
	})
	srv := startServer(t, a, serverTLS(t, f.serverCA, f.clientCA, tls.VerifyClientCertIfGiven))
	conn := dial(t, srv.addr, f.serverCA, nil)
	aliceLine, _ := auth.FormatTokenLine(auth.RoleAdmin, "alice", f.alice)
	bobLine, _ := auth.FormatTokenLine(auth.RoleIDs, "bob", f.bob)

	if _, err := call(t, conn, setFloor, "Bearer "+f.alice); err != nil {
		t.Fatalf("alice before revocation: %v", err)
	}
	// waitFor polls alice's SetFloor until it answers want.
	waitFor := func(what string, want codes.Code) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := start.Add(10 * time.Second)
		for {
			_, err := call(t, conn, setFloor, "Bearer "+f.alice)
			if status.Code(err) == want {
				return time.Since(start)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: alice's call still answers %v after 10s", what, err)
			}
			time.Sleep(5 * time.Millisecond) // polling pace, not synchronisation
		}
	}

	replaceFile(t, f.tokensPath, bobLine+"\n")
	took := waitFor("revoked", codes.Unauthenticated)
	t.Logf("revocation took effect after %v (interval %v)", took, interval)
	if _, err := call(t, conn, getNextID, "Bearer "+f.bob); err != nil {
		t.Fatalf("bob after alice's revocation: %v", err)
	}

	// A broken file keeps bob's token, and says so once.
	replaceFile(t, f.tokensPath, bobLine+"\npeer mallory "+auth.HashToken("x")+"\n")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "line 2") {
		if time.Now().After(deadline) {
			t.Fatalf("the invalid tokens file was not reported within 10s; log:\n%s", logs.String())
		}
		if _, err := call(t, conn, getNextID, "Bearer "+f.bob); err != nil {
			t.Fatalf("bob while the tokens file is invalid: %v", err)
		}
		time.Sleep(5 * time.Millisecond) // polling pace, not synchronisation
	}

	replaceFile(t, f.tokensPath, aliceLine+"\n"+bobLine+"\n")
	waitFor("re-added", codes.OK)
	// The broken file was reported exactly once; TestReloadWithinInterval
	// checks with a stepped clock that later checks of an unchanged
	// broken file stay quiet.
	if n := strings.Count(logs.String(), "is invalid"); n != 1 {
		t.Errorf("the invalid tokens file was logged %d times, want once; log:\n%s", n, logs.String())
	}

	out := logs.String()
	for _, secret := range []string{f.alice, f.bob, strings.TrimPrefix(auth.HashToken(f.alice), "sha256:"), strings.TrimPrefix(auth.HashToken(f.bob), "sha256:"), strings.TrimPrefix(auth.HashToken("x"), "sha256:")} {
		if strings.Contains(out, secret) {
			t.Fatalf("the log holds a token or a hash:\n%s", out)
		}
	}
}

// TestAuthorizeErrors checks the sentinels and codes Authorize's errors
// carry, for callers that log or map them.
func TestAuthorizeErrors(t *testing.T) {
	f := newFixture(t)
	srv := startServer(t, mustNew(t, auth.Config{TokensFile: f.tokensPath}), serverTLS(t, f.serverCA, f.clientCA, tls.VerifyClientCertIfGiven))
	conn := dial(t, srv.addr, f.serverCA, nil)
	cases := []struct {
		name   string
		authz  []string
		method string
		want   error
	}{
		{"no credentials", nil, getNextID, auth.ErrNoCredentials},
		{"unknown token", []string{"Bearer " + tamper(f.bob)}, getNextID, auth.ErrBadCredentials},
		{"wrong role", []string{"Bearer " + f.bob}, setFloor, auth.ErrPermissionDenied},
	}
	a := mustNew(t, auth.Config{TokensFile: f.tokensPath})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Over gRPC the code is what a client sees ...
			_, err := call(t, conn, tc.method, tc.authz...)
			wantCode := codes.Unauthenticated
			if tc.want == auth.ErrPermissionDenied {
				wantCode = codes.PermissionDenied
			}
			if status.Code(err) != wantCode {
				t.Fatalf("over gRPC: %v, want code %v", err, wantCode)
			}
			// ... and Authorize's own error wraps the sentinel.
			_, err = a.Authorize(incomingContext(tc.authz...), tc.method)
			if !errors.Is(err, tc.want) || status.Code(err) != wantCode {
				t.Fatalf("Authorize: %v (code %v), want it to wrap %v with code %v", err, status.Code(err), tc.want, wantCode)
			}
		})
	}
}
