package main

import (
	"os"
	"strings"
	"testing"
)

// testdata/events.json is go test -json over four packages: a (a test that
// passes, one that fails in a subtest, three skips), c (does not build), d
// (no test files) and f (its test calls os.Exit); a ends last.
func TestRender(t *testing.T) {
	in, err := os.Open("testdata/events.json")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out strings.Builder
	r := newRenderer(&out)
	if err := r.read(in); err != nil {
		t.Fatal(err)
	}
	r.flush()
	got := out.String() + r.summary() + "\n"
	want := `# github.com/ordinal-dev/ordinal/c [github.com/ordinal-dev/ordinal/c.test]
c/c.go:2:23: cannot use "x" (untyped string constant) as int value in return statement
FAIL	github.com/ordinal-dev/ordinal/c [build failed]
?   	github.com/ordinal-dev/ordinal/d	[no test files]
--- FAIL: TestExit (did not finish)
    f_test.go:3: leaving
FAIL	github.com/ordinal-dev/ordinal/f	0.003s
--- FAIL: TestFail (0.00s)
    a_test.go:4: before
    --- FAIL: TestFail/sub (0.00s)
        a_test.go:4: sub broke
FAIL
FAIL	github.com/ordinal-dev/ordinal/a	0.005s
skipped: 3 tests: 1 needs Docker (a), 1 needs etcd (a), 1 for other reasons (a)
`
	if got != want {
		t.Errorf("rendered:\n%s\nwant:\n%s", got, want)
	}
	if n := len(r.skips); n != 3 {
		t.Fatalf("%d skips, want 3", n)
	}
	if got, want := r.skips[0].reason, "skipping: docker is not installed"; got != want {
		t.Errorf("skip reason %q, want %q", got, want)
	}
}

func TestSummary(t *testing.T) {
	const p = module + "/"
	cases := []struct {
		skips []skip
		want  string
	}{
		{nil, "skipped: no tests"},
		{[]skip{{p + "deploy", "TestCompose", "skipping the compose end-to-end test: docker is not installed"}},
			"skipped: 1 test needs Docker (deploy)"},
		{[]skip{
			{p + "deploy", "TestA", "docker info failed"},
			{p + "deploy", "TestB", "docker info failed"},
		}, "skipped: 2 tests need Docker (deploy)"},
		{[]skip{
			{p + "e2e/prom", "TestP", "skipping: no prometheus binary on PATH"},
			{p + "deploy", "TestA", "no Docker"},
			{p + "deploy/prometheus", "TestR", "skipping: no promtool binary on PATH"},
			{p + "cluster", "TestX", "raft.db has no free page"},
			{module, "TestY", "whatever"},
		}, "skipped: 5 tests: 1 needs Docker (deploy), 2 need Prometheus (deploy/prometheus, e2e/prom), 2 for other reasons (., cluster)"},
	}
	for _, tc := range cases {
		r := newRenderer(nil)
		r.skips = tc.skips
		if got := r.summary(); got != tc.want {
			t.Errorf("summary of %d skips:\n got %s\nwant %s", len(tc.skips), got, tc.want)
		}
	}
}

func TestSkipReason(t *testing.T) {
	for _, tc := range []struct {
		out  []string
		want string
	}{
		{[]string{"    etcd.go:87: skipping: no etcd\n", "--- SKIP: TestX (0.00s)\n"}, "skipping: no etcd"},
		{[]string{"--- SKIP: TestX (0.00s)\n", "    x_test.go:3: reason: with colon\n"}, "reason: with colon"},
		{[]string{"--- SKIP: TestX (0.00s)\n"}, ""},
	} {
		if got := skipReason(tc.out); got != tc.want {
			t.Errorf("skipReason(%q) = %q, want %q", tc.out, got, tc.want)
		}
	}
}
