package deploy_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ordinal-dev/ordinal/internal/promtest"
)

// startMonitoring starts the monitoring profile's Prometheus in the
// project, on a free loopback port, and returns its URL. The image is
// PROMETHEUS_IMAGE when set, else one packaged from Debian's prometheus
// by make prometheus-image (removed when the test ends). Without either
// it returns "", having logged why, unless ORDINAL_REQUIRE_PROMETHEUS=1,
// which fails the test instead.
func (c *cluster) startMonitoring() string {
	t := c.t
	t.Helper()
	image := os.Getenv(prometheusImageEnv)
	if image == "" {
		if _, err := exec.LookPath("prometheus"); err != nil {
			msg := fmt.Sprintf("no %s given and no prometheus binary to package (apt-get install prometheus)", prometheusImageEnv)
			if os.Getenv(promtest.RequireEnv) == "1" {
				t.Fatalf("%s; %s=1 requires the monitoring profile to be tested", msg, promtest.RequireEnv)
			}
			t.Logf("leaving out the monitoring profile: %s (set %s=1 to fail instead)", msg, promtest.RequireEnv)
			return ""
		}
		image = "ordinal-e2e-prometheus:" + strings.TrimPrefix(c.project, "ordinal-e2e-")
		t.Cleanup(func() {
			if _, stderr, err := run(commandTimeout, nil, "docker", "rmi", "--force", image); err != nil && !strings.Contains(stderr, "No such image") {
				t.Errorf("remove image %s: %v: %s", image, err, stderr)
			}
		})
		if stdout, stderr, err := run(buildTimeout, nil, "make", "--no-print-directory", "-C", "..", "prometheus-image", "PROMETHEUS_LOCAL_IMAGE="+image); err != nil {
			t.Fatalf("make prometheus-image: %v\n%s%s", err, stdout, stderr)
		}
	}
	port := freePorts(t, 1)[0]
	c.prometheusImage = image
	c.prometheusURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	c.env = append(c.env, prometheusImageEnv+"="+image, fmt.Sprintf("PROMETHEUS_PORT=%d", port))
	c.composeRun(composeTimeout, "--profile", "monitoring", "up", "--detach", "prometheus")
	return c.prometheusURL
}

// checkMonitoring waits until the monitoring profile's Prometheus scrapes
// node1..node3 (every 15 s, as prometheus.yml says), has evaluated every
// rule of alerts.yml without error, and counts at least ids IDs issued.
func (c *cluster) checkMonitoring(ids int) {
	t := c.t
	t.Helper()
	ctx := context.Background()
	hc := &http.Client{Timeout: 10 * time.Second}
	poll(t, "Prometheus to scrape node1..node3", healthyTimeout, func() (bool, string) {
		var data struct {
			ActiveTargets []promtest.Target `json:"activeTargets"`
		}
		if err := promtest.Get(ctx, hc, c.prometheusURL, "/api/v1/targets?state=active", &data); err != nil {
			return false, err.Error()
		}
		var up []string
		for _, tg := range data.ActiveTargets {
			if tg.Labels["job"] == "ordinal" && tg.Health == "up" {
				up = append(up, tg.Labels["instance"])
			}
		}
		slices.Sort(up)
		return slices.Equal(up, []string{"node1:34906", "node2:34906", "node3:34906"}), fmt.Sprintf("targets %+v", data.ActiveTargets)
	})
	poll(t, "Prometheus to evaluate the alert rules", healthyTimeout, func() (bool, string) {
		var data struct {
			Groups []promtest.RuleGroup `json:"groups"`
		}
		if err := promtest.Get(ctx, hc, c.prometheusURL, "/api/v1/rules", &data); err != nil {
			return false, err.Error()
		}
		var names []string
		for _, g := range data.Groups {
			names = append(names, g.Name)
			for _, r := range g.Rules {
				if r.Health == "err" {
					t.Fatalf("alert rule %s fails in the compose Prometheus: %s", r.Name, r.LastError)
				}
				if r.Health != "ok" {
					return false, fmt.Sprintf("rule %s: health %q", r.Name, r.Health)
				}
			}
		}
		return slices.Equal(names, []string{"ordinal", "ordinal-etcd"}), fmt.Sprintf("groups %v", names)
	})
	poll(t, fmt.Sprintf("Prometheus to count %d IDs issued", ids), healthyTimeout, func() (bool, string) {
		var data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		}
		q := "/api/v1/query?" + url.Values{"query": {`sum(ordinal_ids_issued_total{job="ordinal"})`}}.Encode()
		if err := promtest.Get(ctx, hc, c.prometheusURL, q, &data); err != nil {
			return false, err.Error()
		}
		if len(data.Result) != 1 {
			return false, fmt.Sprintf("%d samples", len(data.Result))
		}
		s, _ := data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		return err == nil && v >= float64(ids), fmt.Sprintf("%q IDs counted", s)
	})
}
