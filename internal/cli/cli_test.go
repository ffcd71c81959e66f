package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// clearEnv unsets every ORDINAL_ variable for the test; they come back
// when it ends.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, EnvPrefix) {
			t.Setenv(name, "")
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Flags come before and after positional arguments, else from their
// environment variables; the command line wins.
func TestParseCommandFlags(t *testing.T) {
	clearEnv(t)
	t.Setenv("ORDINAL_KEY_DIST", "zipf")
	t.Setenv("ORDINAL_MODE", "weak")
	fs := NewFlagSet("next", "ordinal next [flags] KEY")
	mode := fs.String("mode", "strong", "")
	count := fs.Int("count", 1, "")
	dist := fs.String("key-dist", "cycle", "")
	fs.String("store", "", "")
	positional, err := ParseCommandFlags("next", fs, []string{"--count", "3", "k1", "--mode", "batch", "--", "--k2"})
	if err != nil {
		t.Fatal(err)
	}
	if *mode != "batch" || *count != 3 || *dist != "zipf" || !slices.Equal(positional, []string{"k1", "--k2"}) {
		t.Errorf("mode %q, count %d, key-dist %q, positional %q; want batch, 3, zipf, [k1 --k2]", *mode, *count, *dist, positional)
	}
	if !ExplicitlySet(fs, "key-dist") || !ExplicitlySet(fs, "count") || ExplicitlySet(fs, "store") {
		t.Errorf("ExplicitlySet: key-dist %v, count %v, store %v; want true, true, false",
			ExplicitlySet(fs, "key-dist"), ExplicitlySet(fs, "count"), ExplicitlySet(fs, "store"))
	}
}

// Every way a command line can be wrong is a UsageError (exit status 2)
// naming the command; --help is ErrHelp (exit 0), with usage printed once.
func TestParseCommandFlagsErrors(t *testing.T) {
	clearEnv(t)
	newFS := func(usages *int) *flag.FlagSet {
		fs := NewFlagSet("run", "ordinal-bench run")
		fs.Int("concurrency", 1, "")
		fs.Usage = func() { *usages++ }
		return fs
	}
	for _, tt := range []struct {
		name, env string
		args      []string
		want      string
	}{
		{"unknown flag", "", []string{"--bogus"}, "run: flag provided but not defined: -bogus"},
		{"bad value", "", []string{"--concurrency", "x"}, `run: invalid value "x" for flag -concurrency`},
		{"bad environment value", "ORDINAL_CONCURRENCY=many", nil, `run: invalid ORDINAL_CONCURRENCY="many"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				name, value, _ := strings.Cut(tt.env, "=")
				t.Setenv(name, value)
			}
			var usages int
			_, err := ParseCommandFlags("run", newFS(&usages), tt.args)
			var u *UsageError
			if !errors.As(err, &u) || ExitCode(err) != 2 || !strings.HasPrefix(err.Error(), tt.want) || usages != 0 {
				t.Errorf("error %v (exit %d, usage printed %d times); want a usage error starting %q, no usage", err, ExitCode(err), usages, tt.want)
			}
		})
	}
	var usages int
	if _, err := ParseCommandFlags("run", newFS(&usages), []string{"--help"}); !errors.Is(err, ErrHelp) || ExitCode(err) != 0 || usages != 1 {
		t.Errorf("--help: %v (exit %d), usage printed %d times; want ErrHelp, exit 0, once", err, ExitCode(err), usages)
	}
	if err := NoArgs("failover", NewFlagSet("failover", ""), []string{"x"}); ExitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), `failover: unexpected argument "x"`) {
		t.Errorf("NoArgs with an argument: %v; want a usage error", err)
	}
	if code := ExitCode(errors.New("no call succeeded")); code != 1 {
		t.Errorf("ExitCode of a failure: %d, want 1", code)
	}
}

func TestSplitList(t *testing.T) {
	if got := SplitList(" a, b,,c ,"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("SplitList = %q, want [a b c]", got)
	}
	if got := SplitList(""); got != nil {
		t.Errorf("SplitList(\"\") = %q, want nil", got)
	}
}

// The connection flags' errors are usage errors naming the command and
// the flag, found before any connection is made.
func TestConnFlags(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) *ConnFlags {
		t.Helper()
		var f ConnFlags
		fs := NewFlagSet("failover", "")
		f.Register(fs)
		if _, err := ParseCommandFlags("failover", fs, args); err != nil {
			t.Fatal(err)
		}
		return &f
	}
	if f := parse(); f.TLSEnabled() || f.Cmd != "failover" {
		t.Errorf("no flags: TLS %v, Cmd %q; want off, failover", f.TLSEnabled(), f.Cmd)
	}
	if opts, err := parse("--tls", "--token-file", tok).ClientOptions(); err != nil || len(opts) != 2 {
		t.Errorf("--tls --token-file: %d options, %v; want 2", len(opts), err)
	}
	t.Setenv("ORDINAL_TLS_SERVER_NAME", "n1.example.com")
	if cfg, err := parse().TLSConfig(); err != nil || cfg == nil || cfg.ServerName != "n1.example.com" {
		t.Errorf("ORDINAL_TLS_SERVER_NAME: %+v, %v; want TLS verifying n1.example.com", cfg, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert-file", "c.pem"}, "failover: --tls-cert-file needs --tls-key-file"},
		{[]string{"--tls-ca-file", filepath.Join(dir, "missing.pem")}, "failover: --tls-ca-file: open "},
		{[]string{"--tls-ca-file", tok}, "failover: --tls-ca-file " + tok + " holds no PEM certificate"},
		{[]string{"--token-file", filepath.Join(dir, "missing")}, "failover: --token-file: open "},
	} {
		_, err := parse(tt.args...).ClientOptions()
		if ExitCode(err) != 2 || !strings.HasPrefix(fmt.Sprint(err), tt.want) {
			t.Errorf("%q: %v; want a usage error starting %q", tt.args, err, tt.want)
		}
	}
}

// writeConfig writes a config file for a test and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ordinal.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A flag comes from the command line, else its environment variable,
// else the config file, else its default: every source alone, each pair
// and all three.
func TestPrecedence(t *testing.T) {
	clearEnv(t)
	const (
		fromFlag = "flag:1"
		fromEnv  = "env:1"
		fromFile = "file:1"
		def      = "default:1"
	)
	for _, tt := range []struct {
		name            string
		flag, env, file bool
		want            string
	}{
		{"default", false, false, false, def},
		{"flag", true, false, false, fromFlag},
		{"env", false, true, false, fromEnv},
		{"file", false, false, true, fromFile},
		{"flag over env", true, true, false, fromFlag},
		{"flag over file", true, false, true, fromFlag},
		{"env over file", false, true, true, fromEnv},
		{"flag over env over file", true, true, true, fromFlag},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			fs := NewFlagSet("serve", "")
			AddConfigFlag(fs)
			addr := fs.String("grpc-addr", def, "")
			// A second flag the file always sets: the file is read in
			// every case, also when it loses the first.
			level := fs.String("log-level", "info", "")
			args := []string{"--config", writeConfig(t, func() string {
				if tt.file {
					return "grpc-addr: " + fromFile + "\nlog-level: debug\n"
				}
				return "log-level: debug\n"
			}())}
			if tt.flag {
				args = append(args, "--grpc-addr", fromFlag)
			}
			if tt.env {
				t.Setenv("ORDINAL_GRPC_ADDR", fromEnv)
			}
			if _, err := ParseCommandFlags("serve", fs, args); err != nil {
				t.Fatal(err)
			}
			if *addr != tt.want || *level != "debug" {
				t.Errorf("grpc-addr %q, log-level %q; want %q, debug", *addr, *level, tt.want)
			}
			if got, want := ExplicitlySet(fs, "grpc-addr"), tt.flag || tt.env || tt.file; got != want {
				t.Errorf("ExplicitlySet(grpc-addr) = %v, want %v", got, want)
			}
		})
	}
}

// The config file holds every kind of value: strings, bools, ints,
// durations, lists (as YAML lists or comma-separated strings) and empty
// values; ORDINAL_CONFIG names it too.
func TestConfigFileValues(t *testing.T) {
	clearEnv(t)
	fs := NewFlagSet("serve", "")
	AddConfigFlag(fs)
	addr := fs.String("grpc-addr", "", "")
	metrics := fs.String("metrics-addr", "127.0.0.1:34906", "")
	pprof := fs.Bool("pprof", false, "")
	accessLog := fs.Bool("access-log", true, "")
	maxKeys := fs.Int("max-keys", 1, "")
	streams := fs.Uint("max-concurrent-streams", 1, "")
	ttl := fs.Duration("weak-range-ttl", time.Second, "")
	var join, endpoints, names string
	ListVar(fs, &join, "join", "", "")
	ListVar(fs, &endpoints, "etcd-endpoints", "", "")
	ListVar(fs, &names, "admin-names", "x", "")
	t.Setenv("ORDINAL_CONFIG", writeConfig(t, `# a comment
grpc-addr: 0.0.0.0:34904
metrics-addr: ""
pprof: true
access-log: false
max-keys: 1000000
max-concurrent-streams: 64
weak-range-ttl: 1m30s
join: [n1:34905, "n2:34905"]
etcd-endpoints: e1:2379,e2:2379
admin-names:
  - admin
`))
	if _, err := ParseCommandFlags("serve", fs, nil); err != nil {
		t.Fatal(err)
	}
	if *addr != "0.0.0.0:34904" || *metrics != "" || !*pprof || *accessLog || *maxKeys != 1_000_000 || *streams != 64 || *ttl != 90*time.Second {
		t.Errorf("grpc-addr %q, metrics-addr %q, pprof %v, access-log %v, max-keys %d, max-concurrent-streams %d, weak-range-ttl %v",
			*addr, *metrics, *pprof, *accessLog, *maxKeys, *streams, *ttl)
	}
	if join != "n1:34905,n2:34905" || endpoints != "e1:2379,e2:2379" || names != "admin" {
		t.Errorf("join %q, etcd-endpoints %q, admin-names %q; want n1:34905,n2:34905, e1:2379,e2:2379, admin", join, endpoints, names)
	}
	if !ExplicitlySet(fs, "metrics-addr") || ExplicitlySet(fs, "bootstrap-expect") {
		t.Error("ExplicitlySet: metrics-addr, set to empty by the file, not set")
	}
}

// What is wrong with a config file is a usage error naming the file and
// the key, on one line; a command without --config reads no file.
func TestConfigFileErrors(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		file string // contents; "" for a file that does not exist
		want []string
	}{
		{"missing file", "", []string{"serve: --config ", "missing.yaml: no such file or directory"}},
		{"unknown key", "grpc-addr: a:1\nbogus: 1\n", []string{`unknown key "bogus"`, "flags of serve"}},
		{"unknown keys", "grcp-addr: a:1\nbogus: 1\n", []string{`unknown keys "bogus", "grcp-addr"`}},
		{"nested key", "etcd:\n  endpoints: a:2379\n", []string{`unknown key "etcd.endpoints"`, "top level"}},
		{"environment variable name", "ORDINAL_GRPC_ADDR: a:1\n", []string{`unknown key "ORDINAL_GRPC_ADDR"`}},
		{"config in the config", "config: other.yaml\n", []string{`unknown key "config"`}},
		{"alias", "store: etcd\n", []string{`key "store": --store is a deprecated command-line spelling; the file takes backend:`}},
		{"list for one value", "grpc-addr: [a:1, b:2]\n", []string{"grpc-addr: a list of 2 values; --grpc-addr takes one"}},
		{"bad int", "max-keys: many\n", []string{`max-keys: invalid value "many"`}},
		{"bad duration", "weak-range-ttl: 10\n", []string{`weak-range-ttl: invalid value "10"`}},
		{"bad bool", "pprof: maybe\n", []string{`pprof: invalid value "maybe"`}},
		{"not YAML", "grpc-addr: [\n", []string{"yaml: line"}},
		{"not a mapping", "- grpc-addr\n", []string{"yaml: unmarshal errors: line 1: cannot unmarshal"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "missing.yaml")
			if tt.file != "" {
				path = writeConfig(t, tt.file)
			}
			fs := NewFlagSet("serve", "")
			AddConfigFlag(fs)
			fs.String("grpc-addr", "", "")
			fs.Int("max-keys", 0, "")
			fs.Duration("weak-range-ttl", 0, "")
			fs.Bool("pprof", false, "")
			fs.String("backend", "raft", "")
			DeprecatedAlias(fs, "store", "backend")
			_, err := ParseCommandFlags("serve", fs, []string{"--config", path})
			msg := fmt.Sprint(err)
			if ExitCode(err) != 2 || !strings.HasPrefix(msg, "serve: --config "+path) || strings.Contains(msg, "\n") {
				t.Errorf("error %q (exit %d); want a usage error on one line starting %q", msg, ExitCode(err), "serve: --config "+path)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
		})
	}
	// Without AddConfigFlag, --config is an unknown flag and
	// ORDINAL_CONFIG means nothing.
	t.Setenv("ORDINAL_CONFIG", filepath.Join(dir, "missing.yaml"))
	fs := NewFlagSet("next", "")
	if _, err := ParseCommandFlags("next", fs, nil); err != nil {
		t.Errorf("ORDINAL_CONFIG for a command without --config: %v", err)
	}
	if _, err := ParseCommandFlags("next", NewFlagSet("next", ""), []string{"--config", "x.yaml"}); ExitCode(err) != 2 {
		t.Errorf("--config for a command without it: %v, want a usage error", err)
	}
}

// A variable that is set but empty counts as unset, as ff has it.
func TestEmptyEnvironmentVariable(t *testing.T) {
	clearEnv(t)
	t.Setenv("ORDINAL_METRICS_ADDR", "")
	fs := NewFlagSet("serve", "")
	metrics := fs.String("metrics-addr", "127.0.0.1:34906", "")
	if _, err := ParseCommandFlags("serve", fs, nil); err != nil || *metrics != "127.0.0.1:34906" || ExplicitlySet(fs, "metrics-addr") {
		t.Errorf("ORDINAL_METRICS_ADDR empty: metrics-addr %q, set %v, %v; want the default, unset", *metrics, ExplicitlySet(fs, "metrics-addr"), err)
	}
}

// A deprecated alias sets its flag from the command line only: its own
// variable (serve's ORDINAL_STORE, the client commands' store of keys)
// and config key are not read, the flag's are.
func TestDeprecatedAlias(t *testing.T) {
	parse := func(env map[string]string, file string, args ...string) (string, *Alias, error) {
		t.Helper()
		clearEnv(t)
		for k, v := range env {
			t.Setenv(k, v)
		}
		fs := NewFlagSet("serve", "")
		AddConfigFlag(fs)
		backend := fs.String("backend", "raft", "")
		alias := DeprecatedAlias(fs, "store", "backend")
		if file != "" {
			args = append(args, "--config", writeConfig(t, file))
		}
		_, err := ParseCommandFlags("serve", fs, args)
		return *backend, alias, err
	}
	for _, tt := range []struct {
		name     string
		env      map[string]string
		file     string
		args     []string
		want     string
		wantUsed bool
	}{
		{"alias on the command line", nil, "", []string{"--store", "etcd"}, "etcd", true},
		{"alias with =", nil, "", []string{"--store=etcd"}, "etcd", true},
		{"alias's variable is not read", map[string]string{"ORDINAL_STORE": "orders"}, "", nil, "raft", false},
		{"flag's variable is", map[string]string{"ORDINAL_STORE": "orders", "ORDINAL_BACKEND": "etcd"}, "", nil, "etcd", false},
		{"alias beats the flag's variable", map[string]string{"ORDINAL_BACKEND": "raft"}, "", []string{"--store", "etcd"}, "etcd", true},
		{"alias beats the file", nil, "backend: raft\n", []string{"--store", "etcd"}, "etcd", true},
		{"flag's key in the file", map[string]string{"ORDINAL_STORE": "orders"}, "backend: etcd\n", nil, "etcd", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, alias, err := parse(tt.env, tt.file, tt.args...)
			if err != nil || got != tt.want || alias.Used() != tt.wantUsed {
				t.Errorf("backend %q, alias used %v, %v; want %q, %v", got, alias.Used(), err, tt.want, tt.wantUsed)
			}
		})
	}
	_, alias, _ := parse(nil, "", "--store", "etcd")
	if w := alias.Warning(); !strings.Contains(w, "--store is deprecated: use --backend") || !strings.Contains(w, "ORDINAL_BACKEND") {
		t.Errorf("Warning() = %q", w)
	}
}

// Usage lists the flags under their groups' headings, in the groups'
// order, with their variables (none for an alias) and anything no group
// names at the end; CheckGroups finds what is missing.
func TestGroupedUsage(t *testing.T) {
	var out strings.Builder
	stderr = &out
	t.Cleanup(func() { stderr = os.Stderr })
	fs := NewFlagSet("serve", "")
	AddConfigFlag(fs)
	fs.String("node-id", "", "this node's ID")
	fs.String("backend", "raft", "raft or etcd")
	DeprecatedAlias(fs, "store", "backend")
	fs.String("log-level", "info", "how much to log")
	fs.String("forgotten", "", "a flag in no group")
	groups := []FlagGroup{
		{Heading: "Node", Flags: []string{"node-id", "config", "backend", "store"}},
		{Heading: "Observability", Flags: []string{"log-level"}},
	}
	SetUsage(fs, "ordinal serve [flags]", groups)
	fs.Usage()
	text := out.String()
	last := -1
	for _, want := range []string{"Usage: ordinal serve [flags]", "ORDINAL_<FLAG>", "\nNode:\n", "  --node-id\n", "[env ORDINAL_NODE_ID]", "  --config\n", "[env ORDINAL_CONFIG]",
		"  --backend\n", `(default "raft") [env ORDINAL_BACKEND]`, "  --store\n        deprecated: the same as --backend, accepted on the command line only\n",
		"\nObservability:\n", "  --log-level\n", "\nOther flags:\n", "  --forgotten\n"} {
		i := strings.Index(text, want)
		if i <= last {
			t.Errorf("usage lacks %q after what came before, or has it out of order:\n%s", want, text)
			break
		}
		last = i
	}
	if strings.Contains(text, "ORDINAL_STORE") {
		t.Errorf("usage gives the alias --store a variable:\n%s", text)
	}
	err := CheckGroups(fs, append(groups, FlagGroup{Heading: "Other", Flags: []string{"log-level", "gone"}}))
	for _, want := range []string{"--forgotten is in no group", "--log-level is listed twice", `group "Other" lists --gone, which is no flag`} {
		if !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("CheckGroups: %v; want it to say %q", err, want)
		}
	}
	// Without groups, every flag in name order.
	out.Reset()
	plain := NewFlagSet("next", "ordinal next KEY")
	plain.String("mode", "weak", "")
	plain.String("addr", "", "")
	plain.Usage()
	if text := out.String(); !strings.Contains(text, "Flags:\n  --addr\n") || strings.Index(text, "--addr") > strings.Index(text, "--mode") || strings.Contains(text, "ORDINAL_<FLAG>") {
		t.Errorf("usage without groups:\n%s", text)
	}
}
