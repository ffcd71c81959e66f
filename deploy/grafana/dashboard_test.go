package grafana_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ordinal-dev/ordinal/internal/promtest"
)

const (
	dashboardFile  = "ordinal-dashboard.json"
	datasourceFile = "provisioning/datasources/prometheus.yml"
	providerFile   = "provisioning/dashboards/ordinal.yml"
	composeFile    = "../docker-compose.yml"

	// datasourceRef is how every panel and target names its data source:
	// the dashboard's variable, so that an import asks for none.
	datasourceRef = "${datasource}"
)

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Descr      string      `json:"description"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID        string      `json:"refId"`
		Expr         string      `json:"expr"`
		LegendFormat string      `json:"legendFormat"`
		Datasource   *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string      `json:"name"`
			Type       string      `json:"type"`
			Query      any         `json:"query"`
			Datasource *datasource `json:"datasource"`
			IncludeAll bool        `json:"includeAll"`
			AllValue   string      `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s is not valid JSON for a dashboard: %v", dashboardFile, err)
	}
	return d
}

// Every selector of the dashboard's queries is scoped to the job and
// nodes chosen at the top.
var (
	jobMatcher      = regexp.MustCompile(`(^|[\s,])job\s*=\s*"\$job"`)
	instanceMatcher = regexp.MustCompile(`(^|[\s,])instance\s*=~\s*"\$instance"`)
)

// The panels the issue asks for, by a word of their titles: IDs by mode,
// calls by code, p99 per method, proofs and their latency, reservations
// and batch size, forwarded calls, keys, leader changes, Raft commit time,
// snapshot size.
var wantPanels = []string{
	"IDs issued", "by code", "p99 latency per method", "Proofs per second", "Proof latency",
	"Reservation entries", "Reservations per entry", "Forwarded", "Keys", "Leader elections",
	"Raft commit time", "Snapshot size",
}

// The dashboard decodes and holds together: variables for the data
// source, job and nodes; every panel with a unique ID, inside the
// 24-column grid without overlapping another, on the data source
// variable; every query non-empty, on that data source, selecting from
// $job and $instance only.
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want both set and a schema of Grafana 9 or later", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		switch v.Name {
		case "datasource":
			if v.Type != "datasource" || v.Query != "prometheus" {
				t.Errorf("variable datasource: type %q query %v, want a prometheus data source", v.Type, v.Query)
			}
		case "instance":
			if !v.IncludeAll || v.AllValue != ".*" {
				t.Errorf("variable instance: includeAll %v allValue %q, want All as .* (the queries match it with =~)", v.IncludeAll, v.AllValue)
			}
			fallthrough
		default:
			if v.Datasource == nil || v.Datasource.UID != datasourceRef {
				t.Errorf("variable %s queries %+v, want %s", v.Name, v.Datasource, datasourceRef)
			}
		}
	}
	for _, want := range []string{"datasource", "job", "instance"} {
		if !vars[want] {
			t.Errorf("no variable %s", want)
		}
	}

	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	ids := map[int]string{}
	type cell struct{ x, y int }
	cells := map[cell]string{}
	var titles []string
	queries := 0
	for _, p := range all {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if prev, dup := ids[p.ID]; dup || p.ID <= 0 {
			t.Errorf("%s: id taken by %q (or not positive)", where, prev)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v is not within the 24-column grid", where, g)
		}
	overlap:
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, taken := cells[cell{x, y}]; taken {
					t.Errorf("%s overlaps %q at column %d, row %d", where, other, x, y)
					break overlap
				}
				cells[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if !slices.Contains([]string{"timeseries", "stat"}, p.Type) {
			t.Errorf("%s: type %q, want timeseries or stat", where, p.Type)
		}
		if strings.TrimSpace(p.Descr) == "" {
			t.Errorf("%s: no description", where)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("%s: no unit", where)
		}
		if p.Datasource == nil || p.Datasource.UID != datasourceRef || p.Datasource.Type != "prometheus" {
			t.Errorf("%s: data source %+v, want prometheus %s", where, p.Datasource, datasourceRef)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			queries++
			w := fmt.Sprintf("%s, query %s", where, tg.RefID)
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: refId empty or taken", w)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != datasourceRef {
				t.Errorf("%s: data source %+v, want %s", w, tg.Datasource, datasourceRef)
			}
			if strings.TrimSpace(tg.LegendFormat) == "" {
				t.Errorf("%s: no legend", w)
			}
			sels, err := promtest.Selectors(tg.Expr)
			if err != nil || len(sels) == 0 {
				t.Errorf("%s: %q: selects no series (%v)", w, tg.Expr, err)
			}
			for _, s := range sels {
				if !jobMatcher.MatchString(s.Matchers) || !instanceMatcher.MatchString(s.Matchers) {
					t.Errorf("%s: %s{%s} is not scoped to job=\"$job\" and instance=~\"$instance\"", w, s.Name, s.Matchers)
				}
			}
		}
	}
	for _, want := range wantPanels {
		if !slices.ContainsFunc(titles, func(title string) bool { return strings.Contains(title, want) }) {
			t.Errorf("no panel titled with %q among %q", want, titles)
		}
	}
	t.Logf("%d panels, %d queries", len(titles), queries)
}

// The grafana profile of the compose file provisions the monitoring
// profile's Prometheus as the default data source and this dashboard from
// where it mounts it.
func TestProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `json:"apiVersion"`
		Datasources []struct {
			Name      string `json:"name"`
			UID       string `json:"uid"`
			Type      string `json:"type"`
			Access    string `json:"access"`
			URL       string `json:"url"`
			IsDefault bool   `json:"isDefault"`
			Editable  bool   `json:"editable"`
		} `json:"datasources"`
	}
	readYAML(t, datasourceFile, &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || !ds.Datasources[0].IsDefault ||
		ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("%s: %+v, want the default data source, prometheus at http://prometheus:9090 (the compose service)", datasourceFile, ds.Datasources)
	}

	var prov struct {
		APIVersion int `json:"apiVersion"`
		Providers  []struct {
			Name            string `json:"name"`
			Type            string `json:"type"`
			DisableDeletion bool   `json:"disableDeletion"`
			AllowUIUpdates  bool   `json:"allowUiUpdates"`
			Options         struct {
				Path string `json:"path"`
			} `json:"options"`
		} `json:"providers"`
	}
	readYAML(t, providerFile, &prov)
	if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" {
		t.Fatalf("%s: %+v, want one file provider", providerFile, prov.Providers)
	}
	dir := prov.Providers[0].Options.Path

	var c struct {
		Services map[string]struct {
			Volumes     []string          `json:"volumes"`
			Environment map[string]string `json:"environment"`
		} `json:"services"`
	}
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	mounts := map[string]string{}
	for _, v := range c.Services["grafana"].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 {
			mounts[parts[0]] = parts[1]
		}
	}
	if got, want := mounts["./grafana/"+dashboardFile], dir+"/"+dashboardFile; got != want {
		t.Errorf("the grafana service mounts %s at %q, want %q, where %s looks", dashboardFile, got, want, providerFile)
	}
	if got := mounts["./grafana/provisioning"]; got != "/etc/grafana/provisioning" {
		t.Errorf("the grafana service mounts ./grafana/provisioning at %q, want /etc/grafana/provisioning", got)
	}
	if home := c.Services["grafana"].Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != dir+"/"+dashboardFile {
		t.Errorf("the grafana service's home dashboard is %q, want %s", home, dir+"/"+dashboardFile)
	}
}

func readYAML(t *testing.T, file string, into any) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}
