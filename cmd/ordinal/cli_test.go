package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"github.com/ordinal-dev/ordinal/internal/version"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// demoOutput is the output of Layotto's sequencer quick-start demo for the
// ids first..first+9, line for line.
func demoOutput(first int) string {
	var b strings.Builder
	b.WriteString("Try to get next id.Key:key666\n")
	for id := first; id < first+10; id++ {
		fmt.Fprintf(&b, "Next id:next_id:%d\n", id)
	}
	b.WriteString("Demo success!\n")
	return b.String()
}

// blockLine matches what `next --count N` prints for N > 1.
var blockLine = regexp.MustCompile(`^(\d+)\.\.(\d+) \((\d+) ids\)\n$`)

// TestNextAndDemo runs the client commands through the binary against a
// running node, as a user would.
func TestNextAndDemo(t *testing.T) {
	t.Parallel()
	grpcAddr := testutil.FreeAddr(t)
	startServe(t, grpcAddr, nil, "--node-id", "n1", "--data-dir", t.TempDir(), "--grpc-addr", grpcAddr, "--raft-addr", testutil.FreeAddr(t))

	t.Run("next prints ids in order", func(t *testing.T) {
		for _, want := range []string{"1\n", "2\n"} {
			if got := mustRun(t, nil, "next", "--addr", grpcAddr, "order_table"); got != want {
				t.Fatalf("next order_table printed %q, want %q", got, want)
			}
		}
	})

	t.Run("next --count prints a block", func(t *testing.T) {
		out := mustRun(t, nil, "next", "--addr", grpcAddr, "--mode", "strong", "--count", "100", "order_table")
		m := blockLine.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("next --count 100 printed %q, want \"X..Y (100 ids)\"", out)
		}
		first, _ := strconv.ParseInt(m[1], 10, 64)
		last, _ := strconv.ParseInt(m[2], 10, 64)
		if last-first+1 != 100 || m[3] != "100" {
			t.Fatalf("next --count 100 printed %q: not a block of 100 ids", out)
		}
		if first <= 2 {
			t.Fatalf("block %d..%d overlaps the ids 1 and 2 taken before", first, last)
		}
	})

	t.Run("next flags after the key and --store", func(t *testing.T) {
		if got := mustRun(t, nil, "next", "order_table", "--store", "other", "--addr", grpcAddr); got != "1\n" {
			t.Fatalf("next in a fresh store printed %q, want \"1\\n\"", got)
		}
	})

	t.Run("next reads ORDINAL_ADDR", func(t *testing.T) {
		if got := mustRun(t, []string{"ORDINAL_ADDR=" + grpcAddr}, "next", "env_key"); got != "1\n" {
			t.Fatalf("next with ORDINAL_ADDR printed %q, want \"1\\n\"", got)
		}
	})

	t.Run("demo matches Layotto's output and continues on a second run", func(t *testing.T) {
		runs := []struct {
			args  []string
			first int
		}{
			{[]string{"demo", "--addr", grpcAddr, "-s", "sequencer_demo"}, 1},
			{[]string{"demo", "--addr", grpcAddr, "-s", "sequencer_demo"}, 11},
			{[]string{"demo", "--addr", grpcAddr, "--store=sequencer_demo"}, 21},
			{[]string{"demo", "--addr", grpcAddr}, 31}, // sequencer_demo is the default
			{[]string{"demo", "--addr", grpcAddr, "-s=another_store"}, 1},
		}
		for _, run := range runs {
			if got, want := mustRun(t, nil, run.args...), demoOutput(run.first); got != want {
				t.Fatalf("ordinal %s printed\n%s\nwant\n%s", strings.Join(run.args, " "), got, want)
			}
		}
	})
}

// TestServeFromEnv starts serve configured only through environment
// variables.
func TestServeFromEnv(t *testing.T) {
	t.Parallel()
	dataDir, grpcAddr := t.TempDir(), testutil.FreeAddr(t)
	p := startServe(t, grpcAddr, []string{
		"ORDINAL_NODE_ID=n1",
		"ORDINAL_DATA_DIR=" + dataDir,
		"ORDINAL_GRPC_ADDR=" + grpcAddr,
		"ORDINAL_RAFT_ADDR=" + testutil.FreeAddr(t),
	})
	if got := mustRun(t, []string{"ORDINAL_ADDR=" + grpcAddr}, "next", "k"); got != "1\n" {
		t.Fatalf("next against the env-configured node printed %q, want \"1\\n\"", got)
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("ORDINAL_DATA_DIR %s holds %d entries (%v); the node did not use it", dataDir, len(entries), err)
	}
	if _, err := os.Stat(filepath.Join(p.workDir, "data")); err == nil {
		t.Fatalf("serve created ./data despite ORDINAL_DATA_DIR")
	}
}

// TestErrorOutput checks that every failure says what is wrong in exactly
// one line on stderr and exits non-zero: 2 when the command line is wrong,
// 1 when the work failed.
func TestErrorOutput(t *testing.T) {
	t.Parallel()
	unused := testutil.FreeAddr(t)
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		want     string // a part of the stderr line
	}{
		{"next without key", []string{"next"}, nil, 2, "next: key is required"},
		{"next with two keys", []string{"next", "a", "b"}, nil, 2, "next: expected one KEY"},
		{"next unknown mode", []string{"next", "--mode", "bogus", "k"}, nil, 2, `next: unknown --mode "bogus"`},
		{"next count 0", []string{"next", "--count", "0", "k"}, nil, 2, "next: --count is 0"},
		{"next count not a number", []string{"next", "--count", "many", "k"}, nil, 2, "next: invalid value"},
		{"next unknown flag", []string{"next", "--bogus", "k"}, nil, 2, "next: flag provided but not defined"},
		{"next bad env value", []string{"next", "k"}, []string{"ORDINAL_COUNT=x"}, 2, "ORDINAL_COUNT"},
		{"unknown command", []string{"bogus"}, nil, 2, `unknown command "bogus"`},
		{"next nothing listening", []string{"next", "--addr", unused, "k"}, nil, 1,
			"next: Unavailable: "},
		{"next nothing listening hint", []string{"next", "--addr", unused, "k"}, nil, 1,
			"is ordinal running at " + unused + "?"},
		{"next nothing listening at ORDINAL_ADDR", []string{"next", "k"}, []string{"ORDINAL_ADDR=" + unused}, 1,
			"is ordinal running at " + unused + "?"},
		{"demo nothing listening", []string{"demo", "--addr", unused}, nil, 1, "demo: Unavailable: "},
		{"demo unexpected argument", []string{"demo", "key666"}, nil, 2, `demo: unexpected argument "key666"`},
		{"version unexpected argument", []string{"version", "x"}, nil, 2, `version: unexpected argument "x"`},
		{"serve unknown flag", []string{"serve", "--bogus"}, nil, 2, "flag provided but not defined"},
		{"serve access log at info", []string{"serve", "--access-log"}, nil, 2, "--access-log logs at debug level: add --log-level debug"},
		{"serve pprof without listener", []string{"serve", "--pprof", "--metrics-addr", ""}, nil, 2, "--pprof serves profiles on --metrics-addr, which is empty"},
		{"serve config missing", []string{"serve", "--config", "/nonexistent/ordinal.yaml"}, nil, 2, "serve: --config /nonexistent/ordinal.yaml: no such file or directory"},
		{"serve config from the environment missing", []string{"serve"}, []string{"ORDINAL_CONFIG=/nonexistent/ordinal.yaml"}, 2, "serve: --config /nonexistent/ordinal.yaml: no such file or directory"},
		{"serve unknown backend", []string{"serve", "--backend", "zookeeper"}, nil, 2, `serve: unknown --backend "zookeeper": use raft or etcd`},
		{"serve old ORDINAL_STORE=etcd", []string{"serve", "--etcd-endpoints", "127.0.0.1:1"}, []string{"ORDINAL_STORE=etcd"}, 2, "set ORDINAL_BACKEND=etcd"},
		// The load generator is a binary of its own (#16).
		{"bench moved", []string{"bench", "--mode", "strong"}, nil, 2, "bench: the load generator is a binary of its own: use ordinal-bench"},
		{"bench help moved", []string{"help", "bench"}, nil, 2, "use ordinal-bench"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runOrdinal(t, tt.env, tt.args...)
			var problems []string
			if r.code != tt.wantCode {
				problems = append(problems, fmt.Sprintf("exit status %d, want %d", r.code, tt.wantCode))
			}
			if lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasSuffix(r.stderr, "\n") {
				problems = append(problems, fmt.Sprintf("stderr has %d lines, want exactly one:\n%s", len(lines), r.stderr))
			}
			if !strings.HasPrefix(r.stderr, "ordinal: ") || !strings.Contains(r.stderr, tt.want) {
				problems = append(problems, fmt.Sprintf("stderr %q, want a line starting with \"ordinal: \" containing %q", r.stderr, tt.want))
			}
			report(t, problems)
		})
	}
}

// TestHelp checks that --help prints usage, with each flag's environment
// variable, once, and exits 0.
func TestHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string // parts of the usage text
	}{
		{[]string{"--help"}, []string{"ordinal next", "ordinal demo", "ordinal version", "ordinal serve"}},
		{[]string{"help"}, []string{"ordinal next"}},
		{[]string{"help", "next"}, []string{"Usage: ordinal next", "ORDINAL_ADDR"}},
		{[]string{"next", "--help"}, []string{"Usage: ordinal next", "--addr", "ORDINAL_ADDR", "ORDINAL_STORE", "ORDINAL_MODE", "ORDINAL_COUNT", "ORDINAL_TIMEOUT"}},
		{[]string{"next", "-h"}, []string{"Usage: ordinal next"}},
		{[]string{"demo", "--help"}, []string{"Usage: ordinal demo", "-s", "ORDINAL_ADDR", "ORDINAL_STORE", "sequencer_demo"}},
		{[]string{"version", "--help"}, []string{"Usage: ordinal version"}},
		{[]string{"serve", "--help"}, []string{"ordinal serve", "ORDINAL_DATA_DIR", "ORDINAL_GRPC_ADDR", "--config", "ORDINAL_CONFIG", "ORDINAL_BACKEND",
			"\nNode:\n", "\nCluster:\n", "\netcd store (--backend etcd):\n", "\nSecurity:\n", "\nObservability:\n"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runOrdinal(t, nil, tt.args...)
			if r.code != 0 {
				t.Errorf("exit status %d, want 0; stderr:\n%s", r.code, r.stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("usage does not mention %q:\n%s", want, r.stderr)
				}
			}
			if n := strings.Count(r.stderr, "Usage:"); n != 1 {
				report(t, []string{fmt.Sprintf("usage printed %d times, want once:\n%s", n, r.stderr)})
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	want := fmt.Sprintf("ordinal %s (%s %s/%s)\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if got := mustRun(t, nil, args...); got != want {
			t.Errorf("ordinal %s printed %q, want %q", strings.Join(args, " "), got, want)
		}
	}
}

// report fails the test with every problem found.
func report(t *testing.T, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Error(p)
	}
}

// TestServeConfigFile starts serve with its settings in a config file, of
// every kind of value, and ORDINAL_STORE set (the client commands' store
// of keys, which serve does not read), and checks the node uses them.
func TestServeConfigFile(t *testing.T) {
	t.Parallel()
	dataDir, grpcAddr := t.TempDir(), testutil.FreeAddr(t)
	config := filepath.Join(t.TempDir(), "ordinal.yaml")
	yaml := fmt.Sprintf(`# ordinal serve --config
node-id: cfg-node        # string
data-dir: %s
grpc-addr: %s
raft-addr: %s
join: []                 # list: empty
admin-names: []
max-keys: 2              # int
weak-range-ttl: 5s       # duration
log-level: debug
access-log: true         # bool
`, dataDir, grpcAddr, testutil.FreeAddr(t))
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, grpcAddr, []string{"ORDINAL_STORE=orders"}, "--config", config)

	// next reads ORDINAL_STORE as the store of the key: orders.
	if got := mustRun(t, []string{"ORDINAL_ADDR=" + grpcAddr, "ORDINAL_STORE=orders"}, "next", "a"); got != "1\n" {
		t.Fatalf("next in store orders printed %q, want 1", got)
	}
	if got := mustRun(t, nil, "next", "--addr", grpcAddr, "--store", "orders", "a"); got != "2\n" {
		t.Fatalf("next --store orders after ORDINAL_STORE=orders printed %q, want 2: ORDINAL_STORE did not pick the store", got)
	}
	// max-keys: 2 from the file.
	mustRun(t, nil, "next", "--addr", grpcAddr, "b")
	if r := runOrdinal(t, nil, "next", "--addr", grpcAddr, "c"); r.code != 1 || !strings.Contains(r.stderr, "ResourceExhausted") {
		t.Errorf("a third key with max-keys: 2 in the file: exit %d, %s; want ResourceExhausted", r.code, r.stderr)
	}
	if out := mustRun(t, nil, "members", "--addr", grpcAddr); !strings.Contains(out, "cfg-node") {
		t.Errorf("members does not list the file's node-id cfg-node:\n%s", out)
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil || len(entries) == 0 {
		t.Errorf("the file's data-dir %s holds %d entries (%v): the node did not use it", dataDir, len(entries), err)
	}
	// access-log: true with log-level: debug logs every call.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), "ordinal.access") {
		if time.Now().After(deadline) {
			t.Fatalf("no access log line with access-log: true in the file:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}

// TestServeFlagGroups checks that serve --help puts every flag under a
// heading, so that a new flag cannot be left out.
func TestServeFlagGroups(t *testing.T) {
	var f serveFlags
	if err := cli.CheckGroups(newServeFlagSet(&f), serveFlagGroups); err != nil {
		t.Error(err)
	}
}

// TestReadmeConfigExample checks that the config file of the README's
// Configuration section is one serve accepts.
func TestReadmeConfigExample(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## Configuration\n")
	_, example, found := strings.Cut(section, "```yaml\n")
	example, _, closed := strings.Cut(example, "```")
	if !found || !closed {
		t.Fatal("README.md's Configuration section has no ```yaml example")
	}
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, cli.EnvPrefix) {
			t.Setenv(name, "") // empty counts as unset
		}
	}
	path := filepath.Join(t.TempDir(), "ordinal.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	var f serveFlags
	fs := newServeFlagSet(&f)
	if _, err := cli.ParseCommandFlags("serve", fs, []string{"--config", path}); err != nil {
		t.Fatalf("the README's example: %v\n%s", err, example)
	}
	if f.nodeID != "n1" || len(cli.SplitList(f.join)) != 3 || f.bootstrapExpect != 3 || f.logFormat != "json" {
		t.Errorf("the README's example gives node-id %q, join %q, bootstrap-expect %d, log-format %q; want n1, three peers, 3, json",
			f.nodeID, f.join, f.bootstrapExpect, f.logFormat)
	}
	if err := checkStoreFlags(fs, f); err != nil {
		t.Errorf("the README's example: %v", err)
	}
	if sf, err := f.snowflake.config(); err != nil || sf.Stores["orders"] != snowflake.Seconds || sf.Stores["events"] != snowflake.Milliseconds || len(sf.Stores) != 2 {
		t.Errorf("the README's example declares Snowflake stores %v (%v); want orders (seconds) and events (milliseconds)", sf.Stores, err)
	}
	if err := f.security.check(); err != nil {
		t.Errorf("the README's example: %v", err)
	}
}
