package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/ordinal-dev/ordinal/auth"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

// runTokenCmd runs `ordinal token ARGS` and returns what it printed.
func runTokenCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = tokenCommand(args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestTokenUsageErrors(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"no subcommand", nil, "no subcommand"},
		{"unknown subcommand", []string{"delete"}, `unknown subcommand "delete"`},
		{"no role", []string{"create", "--name", "alice"}, "--role is required"},
		{"no name", []string{"create", "--role", "admin"}, "--name is required"},
		{"role peer", []string{"create", "--role", "peer", "--name", "n1"}, "peer is granted only by peer certificates"},
		{"unknown role", []string{"create", "--role", "root", "--name", "alice"}, "must be admin or ids"},
		{"name with a space", []string{"create", "--role", "admin", "--name", "al ice"}, "invalid token name"},
		{"positional argument", []string{"create", "--role", "admin", "--name", "alice", "extra"}, `unexpected argument "extra"`},
		{"unknown flag", []string{"create", "--role", "admin", "--name", "alice", "--ttl", "1h"}, "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append(tc.args, "--out", filepath.Join(dir, "tok"), "--tokens-file", filepath.Join(dir, "tokens"))
			if len(tc.args) < 2 {
				args = tc.args // the subcommand itself is wrong: no flags
			}
			stdout, _, err := runTokenCmd(t, args...)
			if err == nil || cli.ExitCode(err) != 2 {
				t.Fatalf("token %q: %v (exit %d), want a usage error (exit 2)", args, err, cli.ExitCode(err))
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not say %q", err, tc.wantMsg)
			}
			if stdout != "" {
				t.Errorf("printed %q to stdout", stdout)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("a refused command wrote %d files", len(entries))
			}
		})
	}
}

func TestTokenHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"create", "--help"}} {
		if _, _, err := runTokenCmd(t, args...); !errors.Is(err, cli.ErrHelp) || cli.ExitCode(err) != 0 {
			t.Errorf("token %q: %v, want help (exit 0)", args, err)
		}
	}
}

// authorizes reports whether token, checked by an Authorizer reading
// tokensFile, may call method.
func authorizes(t *testing.T, tokensFile, token, method string) bool {
	t.Helper()
	a, err := auth.New(auth.Config{TokensFile: tokensFile})
	if err != nil {
		t.Fatalf("the tokens file the command wrote does not load: %v", err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
	_, err = a.Authorize(ctx, method)
	return err == nil
}

const (
	setFloorMethod  = "/ordinal.v1.SequencerService/SetFloor"
	getNextIDMethod = "/ordinal.v1.SequencerService/GetNextId"
)

// TestTokenCreatePrints checks the default output: the token on stdout,
// the tokens file line on stderr, and that the two fit.
func TestTokenCreatePrints(t *testing.T) {
	stdout, stderr, err := runTokenCmd(t, "create", "--role", "ids", "--name", "ci-bot")
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSuffix(stdout, "\n")
	if !strings.HasPrefix(token, "ordt_") || strings.ContainsAny(token, " \n") {
		t.Fatalf("stdout %q is not one token", stdout)
	}
	if want := "ids ci-bot " + auth.HashToken(token) + "\n"; stderr != want {
		t.Fatalf("stderr %q, want the tokens file line %q", stderr, want)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(stderr), 0o600); err != nil {
		t.Fatal(err)
	}
	if !authorizes(t, path, token, getNextIDMethod) || authorizes(t, path, token, setFloorMethod) {
		t.Fatalf("the ids token does not work as an ids token")
	}
	again, _, err := runTokenCmd(t, "create", "--role", "ids", "--name", "ci-bot")
	if err != nil || again == stdout {
		t.Fatalf("a second run printed %q (%v): not a new token", again, err)
	}
}

func TestTokenCreateOut(t *testing.T) {
	out := filepath.Join(t.TempDir(), "alice.token")
	stdout, stderr, err := runTokenCmd(t, "create", "--role", "admin", "--name", "alice", "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	if stdout != "" {
		t.Errorf("with --out the token went to stdout too: %q", stdout)
	}
	content, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSuffix(string(content), "\n")
	if want := "admin alice " + auth.HashToken(token) + "\n"; stderr != want {
		t.Fatalf("stderr %q, want %q", stderr, want)
	}
	info, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("--out file has mode %v, want 0600", perm)
	}

	_, _, err = runTokenCmd(t, "create", "--role", "admin", "--name", "alice2", "--out", out)
	if err == nil || cli.ExitCode(err) != 1 || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second run onto the same --out: %v (exit %d), want a refusal (exit 1)", err, cli.ExitCode(err))
	}
	if after, _ := os.ReadFile(out); string(after) != string(content) {
		t.Fatalf("the refused run changed the --out file")
	}
}

func TestTokenCreateTokensFile(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")

	create := func(role, name, out string) (string, error) {
		t.Helper()
		args := []string{"create", "--role", role, "--name", name, "--tokens-file", tokens}
		if out != "" {
			args = append(args, "--out", out)
		}
		stdout, stderr, err := runTokenCmd(t, args...)
		if err == nil && !strings.Contains(stderr, "added "+name) {
			t.Errorf("stderr %q does not confirm the line was added", stderr)
		}
		if err == nil && strings.Contains(stderr, "sha256:") {
			t.Errorf("stderr %q prints the line although it went to the file", stderr)
		}
		return strings.TrimSuffix(stdout, "\n"), err
	}

	alice, err := create("admin", "alice", "")
	if err != nil {
		t.Fatalf("creating the tokens file: %v", err)
	}
	info, err := os.Stat(tokens)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("new tokens file has mode %v, want 0600", perm)
	}

	// A file edited by hand, without a final newline.
	f, err := os.OpenFile(tokens, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("# CI"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	bob, err := create("ids", "bob", "")
	if err != nil {
		t.Fatalf("appending: %v", err)
	}
	if !authorizes(t, tokens, alice, setFloorMethod) || !authorizes(t, tokens, bob, getNextIDMethod) || authorizes(t, tokens, bob, setFloorMethod) {
		t.Fatalf("the tokens do not work with their roles; file:\n%s", readFile(t, tokens))
	}

	t.Run("duplicate name refused", func(t *testing.T) {
		before := readFile(t, tokens)
		out := filepath.Join(dir, "dup.token")
		_, err := create("ids", "alice", out)
		if err == nil || cli.ExitCode(err) != 1 || !strings.Contains(err.Error(), `token named "alice" (line 1)`) {
			t.Fatalf("duplicate name: %v (exit %d), want a refusal naming line 1", err, cli.ExitCode(err))
		}
		if readFile(t, tokens) != before {
			t.Errorf("the refused run changed the tokens file")
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("the refused run left a token in --out (%v)", err)
		}
		if !authorizes(t, tokens, alice, setFloorMethod) {
			t.Errorf("alice's token stopped working")
		}
	})

	t.Run("invalid tokens file refused", func(t *testing.T) {
		bad := filepath.Join(dir, "bad")
		content := "admin alice " + auth.HashToken("x") + "\npeer n1 " + auth.HashToken("y") + "\n"
		if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := runTokenCmd(t, "create", "--role", "ids", "--name", "carol", "--tokens-file", bad)
		if err == nil || !errors.Is(err, auth.ErrInvalidTokensFile) || !strings.Contains(err.Error(), "line 2") {
			t.Fatalf("appending to an invalid file: %v, want a refusal naming line 2", err)
		}
		if readFile(t, bad) != content {
			t.Errorf("the refused run changed the invalid file")
		}
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTokenIsACommand checks that run dispatches to the token command.
func TestTokenIsACommand(t *testing.T) {
	err := run([]string{"token", "create", "--role", "peer", "--name", "n1"})
	if err == nil || cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "peer is granted only by peer certificates") {
		t.Fatalf("ordinal token create --role peer: %v (exit %d), want the token command's usage error", err, cli.ExitCode(err))
	}
}
