// Package promtest runs Debian's Prometheus (apt-get install prometheus,
// which brings promtool too) for tests: a server on a free loopback port
// with a generated configuration and its storage in a temporary directory,
// queried through its HTTP API, and promtool's checks of rule and
// configuration files. It also reads the metric names out of PromQL
// expressions, so that tests can check that the dashboards and alert rules
// of deploy/ name series ordinal exports.
//
// Without the binaries the tests that need them skip, unless
// ORDINAL_REQUIRE_PROMETHEUS=1 (which CI sets), which turns the skip into a
// failure, as ORDINAL_REQUIRE_ETCD does for etcd.
package promtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/internal/testutil"
)

const (
	// RequireEnv set to 1 makes a missing prometheus or promtool binary
	// fail the tests instead of skipping them.
	RequireEnv = "ORDINAL_REQUIRE_PROMETHEUS"
	// StartTimeout bounds waiting for a new Prometheus to report ready.
	StartTimeout = 30 * time.Second
	// StopTimeout bounds waiting for Prometheus to exit after SIGTERM,
	// before it is killed.
	StopTimeout = 5 * time.Second
)

// Require returns the path of the binary name ("prometheus" or "promtool")
// found on PATH. When there is none it skips tb, or fails it under
// ORDINAL_REQUIRE_PROMETHEUS=1.
func Require(tb testing.TB, name string) string {
	tb.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		reason := fmt.Sprintf("no %s binary on PATH (%v): install Debian's prometheus package (apt-get install prometheus), which has prometheus and promtool", name, err)
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("%s; %s=1 requires the Prometheus tests to run", reason, RequireEnv)
		}
		tb.Skipf("skipping: %s (set %s=1 to fail instead)", reason, RequireEnv)
	}
	return bin
}

// Promtool runs promtool with args, bounded by a minute, and returns its
// combined output; a failure fails tb with that output.
func Promtool(tb testing.TB, args ...string) string {
	tb.Helper()
	bin := Require(tb, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("promtool %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Prometheus is a running Prometheus server.
type Prometheus struct {
	// URL is the server's base URL, http://127.0.0.1:PORT.
	URL string
	// Dir holds its configuration and, under data/, its storage.
	Dir string

	cmd  *exec.Cmd
	log  *testutil.SyncBuffer
	done chan struct{}
	http *http.Client
}

// Start writes config (a prometheus.yml) into a temporary directory of
// tb's, together with files (name -> content, such as rule files the
// configuration names by relative path), starts Prometheus on a free
// loopback port with its storage there, waits until it reports ready and
// stops it when tb ends, dumping its log if tb failed.
func Start(tb testing.TB, config string, files map[string]string) *Prometheus {
	tb.Helper()
	bin := Require(tb, "prometheus")
	dir := tb.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		tb.Fatal(err)
	}
	addr := testutil.FreeAddr(tb)
	p := &Prometheus{
		URL:  "http://" + addr,
		Dir:  dir,
		log:  &testutil.SyncBuffer{},
		done: make(chan struct{}),
		http: &http.Client{Timeout: 10 * time.Second},
	}
	p.cmd = exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=info")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start prometheus: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.stop()
		if tb.Failed() {
			tb.Logf("---- prometheus log ----\n%s", p.log.String())
		}
	})

	deadline := time.Now().Add(StartTimeout)
	for {
		err := p.get(context.Background(), "/-/ready", nil)
		if err == nil {
			return p
		}
		select {
		case <-p.done:
			tb.Fatalf("prometheus exited while starting: %v\n%s", p.cmd.ProcessState, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("prometheus not ready after %v: %v\n%s", StartTimeout, err, p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process: SIGTERM, then SIGKILL after StopTimeout.
func (p *Prometheus) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(StopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Log returns what Prometheus logged so far.
func (p *Prometheus) Log() string { return p.log.String() }

// Sample is one element of an instant vector.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Query evaluates expr at the current time (/api/v1/query) and returns the
// resulting vector; a scalar comes back as one sample without labels. An
// expression Prometheus cannot parse or evaluate is an error.
func (p *Prometheus) Query(ctx context.Context, expr string) ([]Sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get(ctx, "/api/v1/query?"+url.Values{"query": {expr}}.Encode(), &data); err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	switch data.ResultType {
	case "vector":
		var raw []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &raw); err != nil {
			return nil, fmt.Errorf("query %q: %w", expr, err)
		}
		out := make([]Sample, 0, len(raw))
		for _, r := range raw {
			v, err := parseValue(r.Value)
			if err != nil {
				return nil, fmt.Errorf("query %q: %w", expr, err)
			}
			out = append(out, Sample{Metric: r.Metric, Value: v})
		}
		return out, nil
	case "scalar":
		var raw [2]any
		if err := json.Unmarshal(data.Result, &raw); err != nil {
			return nil, fmt.Errorf("query %q: %w", expr, err)
		}
		v, err := parseValue(raw)
		if err != nil {
			return nil, fmt.Errorf("query %q: %w", expr, err)
		}
		return []Sample{{Metric: map[string]string{}, Value: v}}, nil
	}
	return nil, fmt.Errorf("query %q: result type %q, want vector or scalar", expr, data.ResultType)
}

// parseValue reads the [timestamp, "value"] pair of the HTTP API.
func parseValue(pair [2]any) (float64, error) {
	s, ok := pair[1].(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", pair[1])
	}
	return strconv.ParseFloat(s, 64)
}

// RuleGroup is a rule group as /api/v1/rules reports it.
type RuleGroup struct {
	Name  string `json:"name"`
	File  string `json:"file"`
	Rules []Rule `json:"rules"`
}

// Rule is an alerting or recording rule as /api/v1/rules reports it.
type Rule struct {
	Name      string  `json:"name"`
	Query     string  `json:"query"`
	Type      string  `json:"type"`   // alerting or recording
	Health    string  `json:"health"` // ok, err or unknown (not evaluated yet)
	LastError string  `json:"lastError"`
	State     string  `json:"state"` // alerting rules: inactive, pending or firing
	Alerts    []Alert `json:"alerts"`
}

// Alert is an active (pending or firing) alert of a rule.
type Alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// Rules returns the loaded rule groups and the state of their rules.
func (p *Prometheus) Rules(ctx context.Context) ([]RuleGroup, error) {
	var data struct {
		Groups []RuleGroup `json:"groups"`
	}
	if err := p.get(ctx, "/api/v1/rules", &data); err != nil {
		return nil, err
	}
	return data.Groups, nil
}

// Target is a scrape target as /api/v1/targets reports it.
type Target struct {
	Labels    map[string]string `json:"labels"`
	ScrapeURL string            `json:"scrapeUrl"`
	Health    string            `json:"health"` // up, down or unknown
	LastError string            `json:"lastError"`
}

// Targets returns the active scrape targets.
func (p *Prometheus) Targets(ctx context.Context) ([]Target, error) {
	var data struct {
		ActiveTargets []Target `json:"activeTargets"`
	}
	if err := p.get(ctx, "/api/v1/targets?state=active", &data); err != nil {
		return nil, err
	}
	return data.ActiveTargets, nil
}

// get fetches path from the server; for the API (into != nil) it checks
// the envelope's status and decodes its data into into.
func (p *Prometheus) get(ctx context.Context, path string, into any) error {
	return Get(ctx, p.http, p.URL, path, into)
}

// Get fetches base+path with hc; with into != nil the answer must be the
// HTTP API's envelope with status success, whose data is decoded into
// into. It serves Prometheus servers this package did not start, such as
// the compose file's.
func Get(ctx context.Context, hc *http.Client, base, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if into == nil {
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
		}
		return nil
	}
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("GET %s: %s: not the API's JSON: %w: %.200s", path, resp.Status, err, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s: %s", path, resp.Status, env.ErrorType, env.Error)
	}
	if err := json.Unmarshal(env.Data, into); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// ErrNoSamples is returned by Scalar for an empty result.
var ErrNoSamples = errors.New("no samples")

// Scalar evaluates expr, which must return at most one sample, and
// returns its value; an empty result is ErrNoSamples.
func (p *Prometheus) Scalar(ctx context.Context, expr string) (float64, error) {
	s, err := p.Query(ctx, expr)
	switch {
	case err != nil:
		return 0, err
	case len(s) == 0:
		return 0, fmt.Errorf("query %q: %w", expr, ErrNoSamples)
	case len(s) > 1:
		return 0, fmt.Errorf("query %q: %d samples, want one", expr, len(s))
	}
	return s[0].Value, nil
}
