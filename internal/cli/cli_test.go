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
