package auth

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/metadata"
)

func bearerContext(token string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
}

func mustLine(t *testing.T, role Role, name, token string) string {
	t.Helper()
	line, err := FormatTokenLine(role, name, token)
	if err != nil {
		t.Fatal(err)
	}
	return line + "\n"
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReloadWithinInterval steps a fake clock to check the reload rules
// exactly: a removed token works until the interval ends and not a moment
// after; an invalid or missing file keeps the tokens loaded before and is
// logged once per change.
func TestReloadWithinInterval(t *testing.T) {
	const interval = time.Minute
	alice, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	bob, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, mustLine(t, RoleAdmin, "alice", alice)+mustLine(t, RoleIDs, "bob", bob))

	var logs bytes.Buffer // one goroutine: no locking needed
	a, err := New(Config{TokensFile: path, ReloadInterval: interval, Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
	if err != nil {
		t.Fatal(err)
	}
	var now time.Duration
	a.tokens.since = func() time.Duration { return now }
	a.tokens.next.Store(int64(interval))

	works := func(token string) bool {
		_, err := a.Authorize(bearerContext(token), "/ordinal.v1.SequencerService/GetNextId")
		return err == nil
	}
	logged := func(s string) int { return strings.Count(logs.String(), s) }

	steps := []struct {
		name     string
		change   func() // applied before the step, at time at
		at       time.Duration
		alice    bool
		bob      bool
		invalid  int // "is invalid" log lines so far
		unread   int // "cannot read" log lines so far
		reloaded int // "reloaded" log lines so far
	}{
		{name: "both tokens work", at: 0, alice: true, bob: true},
		{name: "alice removed; the interval has not passed", change: func() { writeFile(t, path, mustLine(t, RoleIDs, "bob", bob)) }, at: interval - 1, alice: true, bob: true},
		{name: "the interval has passed: alice refused", at: interval, alice: false, bob: true, reloaded: 1},
		{name: "invalid file: bob kept", change: func() { writeFile(t, path, mustLine(t, RoleIDs, "bob", bob)+"peer n1 "+HashToken("n1")+"\n") }, at: 2 * interval, bob: true, invalid: 1, reloaded: 1},
		{name: "unchanged invalid file: not logged again", at: 3 * interval, bob: true, invalid: 1, reloaded: 1},
		{name: "changed, still invalid: logged again", change: func() { writeFile(t, path, mustLine(t, RoleIDs, "bob", bob)+"ids n1\n") }, at: 4 * interval, bob: true, invalid: 2, reloaded: 1},
		{name: "file removed: bob kept", change: func() { os.Remove(path) }, at: 5 * interval, bob: true, invalid: 2, unread: 1, reloaded: 1},
		{name: "still removed: not logged again", at: 6 * interval, bob: true, invalid: 2, unread: 1, reloaded: 1},
		{name: "file back with alice", change: func() { writeFile(t, path, mustLine(t, RoleAdmin, "alice", alice)+mustLine(t, RoleIDs, "bob", bob)) }, at: 7 * interval, alice: true, bob: true, invalid: 2, unread: 1, reloaded: 2},
		{name: "emptied: nobody", change: func() { writeFile(t, path, "# revoked everyone\n") }, at: 8 * interval, invalid: 2, unread: 1, reloaded: 3},
	}
	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		now = s.at
		if got := works(alice); got != s.alice {
			t.Fatalf("%s: alice works = %v, want %v", s.name, got, s.alice)
		}
		if got := works(bob); got != s.bob {
			t.Fatalf("%s: bob works = %v, want %v", s.name, got, s.bob)
		}
		if n, m, r := logged("is invalid"), logged("cannot read"), logged("reloaded"); n != s.invalid || m != s.unread || r != s.reloaded {
			t.Fatalf("%s: logged %d invalid, %d unreadable, %d reloaded; want %d, %d, %d; log:\n%s", s.name, n, m, r, s.invalid, s.unread, s.reloaded, logs.String())
		}
	}
	for _, secret := range []string{alice, bob, HashToken(alice)[7:], HashToken(bob)[7:], HashToken("n1")[7:]} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the log holds a token or a hash:\n%s", logs.String())
		}
	}
}

// TestConcurrentReload has callers use a token while the file holding it
// is rewritten, with a reload due at every call, so that the race detector
// sees the reload path under contention; the token must never fail.
func TestConcurrentReload(t *testing.T) {
	bob, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	bobLine := mustLine(t, RoleIDs, "bob", bob)
	writeFile(t, path, bobLine)
	a, err := New(Config{TokensFile: path, ReloadInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := a.Authorize(bearerContext(bob), "/ordinal.v1.SequencerService/GetNextId"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 200 {
		extra, _ := NewToken()
		tmp := path + ".tmp"
		writeFile(t, tmp, bobLine+strings.Repeat(mustLine(t, RoleIDs, "extra", extra), i%2))
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("bob's token failed while the file was rewritten: %v", err)
	}
}

func TestRoleSet(t *testing.T) {
	cases := []struct {
		set      RoleSet
		has      []Role
		hasNot   []Role
		str      string
		asString []Role
	}{
		{0, nil, []Role{RoleIDs, RoleAdmin, RolePeer, "root"}, "none", nil},
		{grant(RoleIDs), []Role{RoleIDs}, []Role{RoleAdmin, RolePeer}, "ids", []Role{RoleIDs}},
		{grant(RoleAdmin), []Role{RoleIDs, RoleAdmin}, []Role{RolePeer, ""}, "admin", []Role{RoleAdmin, RoleIDs}},
		{grant(RolePeer) | grant(RoleIDs), []Role{RolePeer, RoleIDs}, []Role{RoleAdmin}, "peer+ids", []Role{RolePeer, RoleIDs}},
	}
	for _, tc := range cases {
		for _, r := range tc.has {
			if !tc.set.Has(r) {
				t.Errorf("%s: Has(%q) = false", tc.str, r)
			}
		}
		for _, r := range tc.hasNot {
			if tc.set.Has(r) {
				t.Errorf("%s: Has(%q) = true", tc.str, r)
			}
		}
		if got := tc.set.String(); got != tc.str {
			t.Errorf("String() = %q, want %q", got, tc.str)
		}
		if got := tc.set.Roles(); strings.Join(roleStrings(got), ",") != strings.Join(roleStrings(tc.asString), ",") {
			t.Errorf("%s: Roles() = %v, want %v", tc.str, got, tc.asString)
		}
	}
}

func roleStrings(rs []Role) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}
