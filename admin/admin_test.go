package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, path string, header ...string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ordinal_test_total", Help: "a test counter"})
	reg.MustRegister(c)
	c.Add(7)
	var notReady error
	h := Handler(Config{
		Addr:     "127.0.0.1:0",
		Gatherer: reg,
		Ready:    func(context.Context) error { return notReady },
	})

	tests := []struct {
		name     string
		path     string
		notReady error
		code     int
		body     string
	}{
		{"metrics", "/metrics", nil, http.StatusOK, "ordinal_test_total 7"},
		{"healthz", "/healthz", nil, http.StatusOK, "ok"},
		{"healthz while not ready", "/healthz", errors.New("no leader"), http.StatusOK, "ok"},
		{"readyz", "/readyz", nil, http.StatusOK, "ready"},
		{"readyz not ready", "/readyz", errors.New("no leader"), http.StatusServiceUnavailable, "not ready: no leader"},
		{"no pprof unless asked", "/debug/pprof/cmdline", nil, http.StatusNotFound, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			notReady = tc.notReady
			code, body := get(t, h, tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("GET %s: HTTP %d %q, want %d with %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
}

// Profiles off loopback need a guard, which every request goes through;
// on loopback they are served as they are.
func TestPprofGuard(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:6060": true, "localhost:6060": true, "[::1]:6060": true,
		"0.0.0.0:6060": false, "10.0.0.5:6060": false, ":6060": false, "127.0.0.1": false} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, !want, want)
		}
	}
	if _, err := Listen(Config{Addr: "0.0.0.0:0", Pprof: true}); !errors.Is(err, ErrPprofUnguarded) {
		t.Errorf("Listen with pprof off loopback without a guard: %v; want ErrPprofUnguarded", err)
	}
	deny := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) })
	}
	for addr, want := range map[string]int{"127.0.0.1:6060": http.StatusOK, "10.0.0.5:6060": http.StatusForbidden} {
		code, _ := get(t, Handler(Config{Addr: addr, Pprof: true, Guard: deny}), "/debug/pprof/cmdline")
		if code != want {
			t.Errorf("pprof on %s behind a guard that denies: HTTP %d, want %d", addr, code, want)
		}
	}
	// The guard covers profiles only: metrics and health stay open.
	code, _ := get(t, Handler(Config{Addr: "10.0.0.5:6060", Pprof: true, Guard: deny}), "/healthz")
	if code != http.StatusOK {
		t.Errorf("healthz behind the profiles' guard: HTTP %d", code)
	}
}

// A real listener serves and closes.
func TestListen(t *testing.T) {
	s, err := Listen(Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("GET /healthz: %d %q", resp.StatusCode, body)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		t.Fatal("the listener still answers after Close")
	}
}
