package auth_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/auth"
)

// startHTTPS serves h behind a.RequireAdminHTTP over real TLS on
// 127.0.0.1, verifying client certificates from f.clientCA when given.
func startHTTPS(t *testing.T, f *fixture, a *auth.Authorizer) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := auth.IdentityFromContext(r.Context())
		if !ok {
			http.Error(w, "no identity", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s|%s|%s", id.Via, id.Name, id.Roles)
	})
	srv := httptest.NewUnstartedServer(a.RequireAdminHTTP(h))
	srv.TLS = serverTLS(t, f.serverCA, f.clientCA, tls.VerifyClientCertIfGiven)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func httpsClient(f *fixture, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: f.serverCA.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// TestRequireAdminHTTP requests the pprof stand-in with each kind of
// credential.
func TestRequireAdminHTTP(t *testing.T) {
	f := newFixture(t)
	secured := startHTTPS(t, f, mustNew(t, auth.Config{AnonymousIDs: true, AdminNames: f.adminNames, TokensFile: f.tokensPath}))
	open := startHTTPS(t, f, mustNew(t, auth.Config{Open: true}))

	cases := []struct {
		name     string
		srv      *httptest.Server
		cert     *tls.Certificate
		authz    []string
		wantCode int
		want     string // body (allowed) or part of it (refused)
	}{
		{"no credentials", secured, nil, nil, http.StatusUnauthorized, "send an admin bearer token (Authorization: Bearer <token>)"},
		{"anonymous ids does not reach pprof", secured, nil, nil, http.StatusUnauthorized, "the debug endpoint /debug/pprof/ needs role admin"},
		{"ids certificate", secured, f.web, nil, http.StatusForbidden, "web-1 (role ids) may not call the debug endpoint /debug/pprof/: it needs role admin"},
		{"ids token", secured, nil, []string{"Bearer " + f.bob}, http.StatusForbidden, "bob (role ids) may not call"},
		{"tampered token", secured, nil, []string{"Bearer " + tamper(f.alice)}, http.StatusUnauthorized, "unknown bearer token"},
		{"tampered token with an admin certificate", secured, f.opsCN, []string{"Bearer " + tamper(f.alice)}, http.StatusUnauthorized, "unknown bearer token"},
		{"tab after the scheme", secured, nil, []string{"Bearer\t" + f.alice}, http.StatusUnauthorized, "malformed authorization header"},
		{"Basic credentials", secured, nil, []string{"Basic YWxpY2U6c2VjcmV0"}, http.StatusUnauthorized, "only \"Bearer <token>\""},
		{"admin token", secured, nil, []string{"Bearer " + f.alice}, http.StatusOK, "token|alice|admin"},
		{"admin token, scheme in lower case", secured, nil, []string{"bearer " + f.alice}, http.StatusOK, "token|alice|admin"},
		{"admin certificate", secured, f.opsDNS, nil, http.StatusOK, "certificate|dns-holder|admin"},
		{"ids certificate and admin token", secured, f.web, []string{"Bearer " + f.alice}, http.StatusOK, "certificate+token|web-1+alice|admin"},
		{"open mode, no credentials", open, nil, nil, http.StatusOK, "open||admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, tc.srv.URL+"/debug/pprof/", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range tc.authz {
				req.Header.Add("Authorization", v)
			}
			resp, err := httpsClient(f, tc.cert).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.want) {
				t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, body, tc.wantCode, tc.want)
			}
			if tc.wantCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without a WWW-Authenticate header")
			}
			for _, tok := range []string{f.alice, f.bob, tamper(f.alice)} {
				if strings.Contains(string(body), tok) {
					t.Errorf("the answer %q leaks a token", body)
				}
			}
		})
	}
}
