// Package systemd_test checks ordinal.service, the example ordinal.env and
// ordinal.sysusers without systemd: it parses the unit as systemd's INI
// format and checks the settings the deployment depends on (user, state
// and configuration directories, hardening, restarts), and builds ordinal
// to check that every ORDINAL_<FLAG> of the example environment file is a
// flag of ordinal serve. `systemd-analyze verify` checks the rest where
// systemd is installed (deploy/README.md, "systemd"). Nothing here skips.
package systemd_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ordinal-dev/ordinal/internal/proccluster"
)

// unit is a parsed unit file: section -> key -> every value assigned, in
// order.
type unit map[string]map[string][]string

// parseUnit parses systemd's unit file syntax: [Section] headers,
// Key=Value assignments (repeatable), comments starting with # or ;, and
// lines continued with a trailing backslash.
func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	var pending string
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending += cont + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				t.Fatalf("%s:%d: malformed section header %q", path, n+1, line)
			}
			section = line[1 : len(line)-1]
			if u[section] != nil {
				t.Fatalf("%s:%d: section [%s] twice", path, n+1, section)
			}
			u[section] = map[string][]string{}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: %q is not Key=Value in a section", path, n+1, line)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		u[section][key] = append(u[section][key], value)
	}
	return u
}

// one returns the single value of key in section, failing if it is
// missing or assigned more than once.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("[%s] %s is set %d times, want once", section, key, len(vs))
	}
	return vs[0]
}

func TestUnitSettings(t *testing.T) {
	u := parseUnit(t, "ordinal.service")
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Fatalf("no [%s] section", s)
		}
	}
	for _, tc := range []struct {
		section, key, want string
	}{
		{"Unit", "Wants", "network-online.target"},
		{"Unit", "After", "network-online.target"},
		{"Service", "Type", "exec"},
		{"Service", "DynamicUser", "no"},
		{"Service", "User", "ordinal"},
		{"Service", "Group", "ordinal"},
		{"Service", "EnvironmentFile", "/etc/ordinal/ordinal.env"}, // no leading '-': required
		{"Service", "StateDirectory", "ordinal"},
		{"Service", "StateDirectoryMode", "0700"},
		{"Service", "ConfigurationDirectory", "ordinal"},
		{"Service", "Restart", "on-failure"},
		{"Service", "RestartPreventExitStatus", "1"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "PrivateDevices", "yes"},
		{"Service", "CapabilityBoundingSet", ""},
		{"Service", "AmbientCapabilities", ""},
		{"Service", "UMask", "0077"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if got := u.one(t, tc.section, tc.key); got != tc.want {
			t.Errorf("[%s] %s=%s, want %q", tc.section, tc.key, got, tc.want)
		}
	}
	for _, tc := range []struct {
		section, key string
		min          int
	}{
		{"Unit", "StartLimitBurst", 2},
		{"Service", "LimitNOFILE", 65536},
	} {
		n, err := strconv.Atoi(u.one(t, tc.section, tc.key))
		if err != nil || n < tc.min {
			t.Errorf("[%s] %s=%s: want a number, at least %d", tc.section, tc.key, u.one(t, tc.section, tc.key), tc.min)
		}
	}
	for _, key := range []string{"RestartSec", "TimeoutStopSec"} {
		if u.one(t, "Service", key) == "" {
			t.Errorf("[Service] %s is empty", key)
		}
	}
	if u.one(t, "Unit", "StartLimitIntervalSec") == "" {
		t.Error("[Unit] StartLimitIntervalSec is empty")
	}
	// The start limit lives in [Unit]; systemd ignores it in [Service]
	// with a warning.
	for _, key := range []string{"StartLimitBurst", "StartLimitIntervalSec"} {
		if _, ok := u["Service"][key]; ok {
			t.Errorf("%s is in [Service]; it belongs in [Unit]", key)
		}
	}
	if _, ok := u["Service"]["ReadWritePaths"]; ok {
		t.Error("ReadWritePaths: the state directory is the only place the service writes")
	}
}

// TestExecStart checks the command line: ordinal serve, with the data
// directory in the unit's state directory (%S is /var/lib for system
// units).
func TestExecStart(t *testing.T) {
	u := parseUnit(t, "ordinal.service")
	args := strings.Fields(u.one(t, "Service", "ExecStart"))
	if len(args) < 2 || !filepath.IsAbs(args[0]) || filepath.Base(args[0]) != "ordinal" || args[1] != "serve" {
		t.Fatalf("ExecStart %q: want /absolute/path/ordinal serve ...", args)
	}
	want := "--data-dir=%S/" + u.one(t, "Service", "StateDirectory")
	if !slices.Contains(args, want) {
		t.Errorf("ExecStart %q does not set %s: the state directory is the one place the service may write", args, want)
	}
	for _, e := range u["Service"]["Environment"] {
		if strings.Contains(e, "ORDINAL_DATA_DIR") {
			t.Errorf("Environment=%s: the data directory is set on the command line", e)
		}
	}
}

func TestSysusers(t *testing.T) {
	u := parseUnit(t, "ordinal.service")
	data, err := os.ReadFile("ordinal.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	user := u.one(t, "Service", "User")
	home := "/var/lib/" + u.one(t, "Service", "StateDirectory")
	re := regexp.MustCompile(`^u\s+(\S+)\s+(\S+)\s+"[^"]*"\s+(\S+)\s+(\S+)$`)
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("ordinal.sysusers: %q is not a 'u NAME ID \"GECOS\" HOME SHELL' line", line)
			continue
		}
		if m[1] == user {
			found = true
			if m[3] != home || m[4] != "/usr/sbin/nologin" {
				t.Errorf("user %s: home %s, shell %s; want %s and /usr/sbin/nologin", user, m[3], m[4], home)
			}
		}
	}
	if !found {
		t.Errorf("ordinal.sysusers does not create the unit's user %s", user)
	}
}

// envAssignment is one ORDINAL_ line of ordinal.env, set or suggested in
// a comment.
type envAssignment struct {
	line         int
	name, value  string
	commentedOut bool
	flag         string // the flag it stands for
}

// readEnvExample reads the ORDINAL_ assignments of ordinal.env, including
// the commented-out suggestions (#ORDINAL_X=...), which must be valid too.
func readEnvExample(t *testing.T) []envAssignment {
	t.Helper()
	data, err := os.ReadFile("ordinal.env")
	if err != nil {
		t.Fatal(err)
	}
	assign := regexp.MustCompile(`^(#?)([A-Z][A-Z0-9_]*)=(.*)$`)
	var out []envAssignment
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		m := assign.FindStringSubmatch(line)
		switch {
		case m == nil && (line == "" || line[0] == '#'):
			continue
		case m == nil:
			t.Errorf("ordinal.env:%d: %q is neither a comment nor NAME=value", n, line)
			continue
		case !strings.HasPrefix(m[2], "ORDINAL_"):
			t.Errorf("ordinal.env:%d: %s: only ORDINAL_<FLAG> variables mean anything to ordinal", n, m[2])
			continue
		}
		out = append(out, envAssignment{
			line: n, name: m[2], value: m[3], commentedOut: m[1] == "#",
			flag: strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(m[2], "ORDINAL_"), "_", "-")),
		})
	}
	return out
}

func TestEnvExample(t *testing.T) {
	env := readEnvExample(t)
	set := map[string]string{}
	for _, a := range env {
		if a.commentedOut {
			continue
		}
		if _, dup := set[a.name]; dup {
			t.Errorf("ordinal.env:%d: %s is set twice", a.line, a.name)
		}
		set[a.name] = a.value
	}
	if _, ok := set["ORDINAL_DATA_DIR"]; ok {
		t.Error("ordinal.env sets ORDINAL_DATA_DIR: the unit's --data-dir wins over it, so it would only mislead")
	}
	for _, name := range []string{"ORDINAL_NODE_ID", "ORDINAL_JOIN", "ORDINAL_BOOTSTRAP_EXPECT",
		"ORDINAL_ADVERTISE_RAFT", "ORDINAL_PEER_CERT_FILE", "ORDINAL_TLS_CERT_FILE", "ORDINAL_TLS_CLIENT_CA_FILE"} {
		if set[name] == "" {
			t.Errorf("ordinal.env does not set %s", name)
		}
	}
	// Files the service reads live in its configuration directory:
	// ProtectHome hides /home and /root, and PrivateTmp has a /tmp of its
	// own.
	for _, a := range env {
		if strings.HasSuffix(a.name, "_FILE") && !strings.HasPrefix(a.value, "/etc/ordinal/") {
			t.Errorf("ordinal.env:%d: %s=%s is outside /etc/ordinal, the unit's ConfigurationDirectory", a.line, a.name, a.value)
		}
	}
	// The node lists its own peer address in the join list, as every node
	// of the cluster does (it skips itself).
	if !slices.Contains(strings.Split(set["ORDINAL_JOIN"], ","), set["ORDINAL_ADVERTISE_RAFT"]) {
		t.Errorf("ORDINAL_JOIN=%s does not list this node's ORDINAL_ADVERTISE_RAFT=%s", set["ORDINAL_JOIN"], set["ORDINAL_ADVERTISE_RAFT"])
	}
	if n, err := strconv.Atoi(set["ORDINAL_BOOTSTRAP_EXPECT"]); err != nil || n != len(strings.Split(set["ORDINAL_JOIN"], ",")) {
		t.Errorf("ORDINAL_BOOTSTRAP_EXPECT=%s, ORDINAL_JOIN lists %d nodes", set["ORDINAL_BOOTSTRAP_EXPECT"], len(strings.Split(set["ORDINAL_JOIN"], ",")))
	}
	id := set["ORDINAL_NODE_ID"]
	for name, file := range map[string]string{"ORDINAL_PEER_CERT_FILE": id + "-peer.pem", "ORDINAL_PEER_KEY_FILE": id + "-peer-key.pem",
		"ORDINAL_TLS_CERT_FILE": id + "-server.pem", "ORDINAL_TLS_KEY_FILE": id + "-server-key.pem"} {
		if filepath.Base(set[name]) != file {
			t.Errorf("%s=%s: want the file ordinal tls init names after node %s, %s", name, set[name], id, file)
		}
	}
}

// TestEnvExampleNamesServeFlags builds ordinal from this module and checks
// that every ORDINAL_<FLAG> of ordinal.env, set or suggested, is a flag
// `ordinal serve --help` lists.
func TestEnvExampleNamesServeFlags(t *testing.T) {
	env := readEnvExample(t)
	known := proccluster.ServeFlags(t)
	for _, a := range env {
		if !known[a.flag] {
			t.Errorf("ordinal.env:%d: %s: ordinal serve has no flag --%s", a.line, a.name, a.flag)
		}
	}
}
