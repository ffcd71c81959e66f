package prometheus_test

import (
	"fmt"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ordinal-dev/ordinal/internal/promtest"
)

const (
	alertsFile     = "alerts.yml"
	alertsTestFile = "alerts_test.yml"
	configFile     = "prometheus.yml"
	composeFile    = "../docker-compose.yml"

	// job is the scrape job the rules select from.
	job = "ordinal"
)

// ruleFile is alerts.yml; a field it does not know fails the strict
// decoding.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return f
}

// jobMatcher is the matcher every selector of the rules carries.
var jobMatcher = regexp.MustCompile(`(^|[\s,])job\s*=\s*"` + job + `"`)

// The rules' form: named Ordinal*, a severity operators can route on,
// a summary and a description, a valid `for`, and every series selected
// from the ordinal job only (another job's up or grpc_* series must not
// trip them).
func TestAlertRules(t *testing.T) {
	f := readRules(t)
	if len(f.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	seen := map[string]bool{}
	for _, g := range f.Groups {
		if len(g.Rules) == 0 {
			t.Errorf("group %s has no rules", g.Name)
		}
		for _, r := range g.Rules {
			where := fmt.Sprintf("group %s, alert %s", g.Name, r.Alert)
			if !regexp.MustCompile(`^Ordinal[A-Z][A-Za-z]+$`).MatchString(r.Alert) {
				t.Errorf("%s: want an alert named Ordinal<CamelCase>", where)
			}
			if seen[r.Alert] {
				t.Errorf("%s: a second alert of that name", where)
			}
			seen[r.Alert] = true
			if r.For != "" {
				if d, err := time.ParseDuration(r.For); err != nil || d <= 0 {
					t.Errorf("%s: for %q: want a positive duration", where, r.For)
				}
			}
			if sev := r.Labels["severity"]; len(r.Labels) != 1 || (sev != "warning" && sev != "critical") {
				t.Errorf("%s: labels %v, want only severity: warning or critical", where, r.Labels)
			}
			if len(r.Annotations) != 2 || strings.TrimSpace(r.Annotations["summary"]) == "" || strings.TrimSpace(r.Annotations["description"]) == "" {
				t.Errorf("%s: annotations %v, want a summary and a description", where, r.Annotations)
			}
			sels, err := promtest.Selectors(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if len(sels) == 0 {
				t.Errorf("%s: expr %q selects no series", where, r.Expr)
			}
			for _, s := range sels {
				if !jobMatcher.MatchString(s.Matchers) {
					t.Errorf("%s: %s{%s} does not select job=%q", where, s.Name, s.Matchers, job)
				}
			}
		}
	}
}

// ruleTests is the part of alerts_test.yml this test reads.
type ruleTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// Every alert has a unit test in alerts_test.yml that makes it fire, and
// one in which it stays quiet.
func TestEveryAlertIsUnitTested(t *testing.T) {
	data, err := os.ReadFile(alertsTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var rt ruleTests
	if err := yaml.Unmarshal(data, &rt); err != nil {
		t.Fatalf("%s: %v", alertsTestFile, err)
	}
	if !slices.Equal(rt.RuleFiles, []string{alertsFile}) {
		t.Errorf("%s tests rule files %v, want [%s]", alertsTestFile, rt.RuleFiles, alertsFile)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if !fires[r.Alert] {
				t.Errorf("no test of %s makes %s fire", alertsTestFile, r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("no test of %s expects %s not to fire", alertsTestFile, r.Alert)
			}
		}
	}
}

// promtool's own checks: the rules parse (PromQL included) and their
// templates too, the unit tests pass, and the compose configuration is
// valid with the rule file it names. Skips without promtool unless
// ORDINAL_REQUIRE_PROMETHEUS=1.
func TestPromtool(t *testing.T) {
	t.Run("check rules", func(t *testing.T) {
		out := promtest.Promtool(t, "check", "rules", alertsFile)
		if !strings.Contains(out, "SUCCESS") {
			t.Errorf("promtool check rules:\n%s", out)
		}
	})
	t.Run("test rules", func(t *testing.T) {
		out := promtest.Promtool(t, "test", "rules", alertsTestFile)
		if !strings.Contains(out, "SUCCESS") {
			t.Errorf("promtool test rules:\n%s", out)
		}
	})
	t.Run("check config", func(t *testing.T) {
		out := promtest.Promtool(t, "check", "config", configFile)
		if !strings.Contains(out, "SUCCESS: 1 rule files found") {
			t.Errorf("promtool check config found no rule file:\n%s", out)
		}
	})
}

// config is the part of prometheus.yml the compose file depends on.
type config struct {
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

// compose is the part of docker-compose.yml the monitoring profile uses.
type compose struct {
	Services map[string]struct {
		Image    string   `json:"image"`
		Profiles []string `json:"profiles"`
		Command  []string `json:"command"`
		Volumes  []string `json:"volumes"`
		Ports    []string `json:"ports"`
	} `json:"services"`
	Volumes map[string]any `json:"volumes"`
}

// The compose file's monitoring profile fits prometheus.yml: Prometheus
// runs only in its profile, from the official image unless
// PROMETHEUS_IMAGE says otherwise, with prometheus.yml and alerts.yml
// mounted side by side (the configuration names the rules by relative
// path); it scrapes exactly the nodes, each of which listens on the port
// scraped, on every interface (it is scraped over the project's network).
func TestComposeMonitoringProfile(t *testing.T) {
	var cfg config
	data, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", configFile, err)
	}
	if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != job {
		t.Fatalf("%s: want one scrape job named %s (the rules select job=%q)", configFile, job, job)
	}
	var targets []string
	for _, sc := range cfg.ScrapeConfigs[0].StaticConfigs {
		targets = append(targets, sc.Targets...)
	}

	data, err = os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	var nodes []string
	for name, svc := range c.Services {
		if !strings.HasPrefix(name, "node") {
			continue
		}
		nodes = append(nodes, name)
		addr := ""
		for _, arg := range svc.Command {
			if v, ok := strings.CutPrefix(arg, "--metrics-addr="); ok {
				addr = v
			}
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host != "0.0.0.0" {
			t.Errorf("%s: service %s listens with --metrics-addr=%q, want 0.0.0.0:PORT, reachable by the monitoring profile's Prometheus", composeFile, name, addr)
			continue
		}
		if want := net.JoinHostPort(name, port); !slices.Contains(targets, want) {
			t.Errorf("%s scrapes %v, not %s where %s serves its metrics", configFile, targets, want, name)
		}
		for _, p := range svc.Ports {
			if strings.HasSuffix(p, ":"+port) {
				t.Errorf("%s: service %s publishes its admin port (%s): Prometheus reaches it on the project's network", composeFile, name, p)
			}
		}
	}
	if len(targets) != len(nodes) {
		t.Errorf("%s scrapes %v, want the %d nodes %v", configFile, targets, len(nodes), nodes)
	}

	prom, ok := c.Services["prometheus"]
	if !ok {
		t.Fatalf("%s has no service prometheus", composeFile)
	}
	if !slices.Equal(prom.Profiles, []string{"monitoring"}) {
		t.Errorf("service prometheus has profiles %v, want [monitoring]: the cluster must start without it", prom.Profiles)
	}
	if want := "${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.0}"; prom.Image != want {
		t.Errorf("service prometheus runs %q, want %q", prom.Image, want)
	}
	cfgPath := ""
	for _, arg := range prom.Command {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			cfgPath = v
		}
	}
	mounts := map[string]string{} // container path -> host path
	for _, v := range prom.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 {
			mounts[parts[1]] = parts[0]
		}
	}
	if cfgPath == "" || mounts[cfgPath] != "./prometheus/"+configFile {
		t.Errorf("service prometheus reads --config.file=%q, which is not ./prometheus/%s (mounts %v)", cfgPath, configFile, mounts)
	}
	for _, rf := range cfg.RuleFiles {
		inContainer := path.Join(path.Dir(cfgPath), rf)
		if mounts[inContainer] != "./prometheus/"+rf {
			t.Errorf("%s names rule file %s, which the prometheus service does not mount at %s from ./prometheus/%s (mounts %v)", configFile, rf, inContainer, rf, mounts)
		}
	}
	for _, svc := range []string{"prometheus", "grafana"} {
		for _, v := range c.Services[svc].Volumes {
			host, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(host, "./") {
				if _, err := os.Stat("../" + host); err != nil {
					t.Errorf("service %s mounts %s, which does not exist: %v", svc, host, err)
				}
			} else if _, ok := c.Volumes[host]; !ok {
				t.Errorf("service %s mounts volume %s, which the compose file does not declare", svc, host)
			}
		}
	}
	grafana, ok := c.Services["grafana"]
	if !ok {
		t.Fatalf("%s has no service grafana", composeFile)
	}
	if !slices.Equal(grafana.Profiles, []string{"grafana"}) {
		t.Errorf("service grafana has profiles %v, want [grafana]: its image cannot be built here, so the monitoring profile must not need it", grafana.Profiles)
	}
}
