// Command testsummary runs go test and ends with one line on the tests that
// skipped, and why: `make test` runs it so that a test that could not run
// (Docker, Prometheus or etcd missing) says so instead of hiding behind
// "ok".
//
//	go run ./internal/tools/testsummary [go test flags and packages]
//
// It runs `go test -json` with the arguments and prints what go test
// prints without -json: the ok line of a package that passes, the output of
// the tests that fail and the package's own output when a package fails,
// build errors; then the summary, e.g.
//
//	skipped: 4 tests: 3 need Docker (deploy), 1 needs Prometheus (e2e/prom)
//
// Its exit code is go test's. A skip that ORDINAL_REQUIRE_* forbids is a
// failure of its test, not a skip, so it fails the run as before.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// module is stripped from package paths in the summary.
const module = "github.com/ordinal-dev/ordinal"

func main() {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.Command(goBin, append([]string{"test", "-json"}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fatal(err)
	}
	// Ctrl-C reaches go test too (same process group); let it finish and
	// report.
	signal.Ignore(syscall.SIGINT)
	if err := cmd.Start(); err != nil {
		fatal(err)
	}
	r := newRenderer(os.Stdout)
	if err := r.read(stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
	}
	err = cmd.Wait()
	r.flush()
	if err != nil {
		fmt.Fprintln(os.Stdout, "FAIL")
	}
	fmt.Fprintln(os.Stdout, r.summary())
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		os.Exit(exit.ExitCode())
	case err != nil:
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "testsummary:", err)
	os.Exit(1)
}

// event is one line of go test -json (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output and build-fail
}

// renderer turns go test -json's events back into go test's own output,
// and collects the skipped tests.
type renderer struct {
	w     io.Writer
	pkgs  map[string]*pkgState
	order []string // packages in order of their first event
	skips []skip
}

type pkgState struct {
	out    []string            // output outside any test
	tests  map[string][]string // output of each test still running
	failed []string            // output of the tests that failed, in order
}

type skip struct {
	pkg, test, reason string
}

func newRenderer(w io.Writer) *renderer {
	return &renderer{w: w, pkgs: map[string]*pkgState{}}
}

func (r *renderer) pkg(name string) *pkgState {
	p := r.pkgs[name]
	if p == nil {
		p = &pkgState{tests: map[string][]string{}}
		r.pkgs[name] = p
		r.order = append(r.order, name)
	}
	return p
}

// read consumes the event stream. Lines that are not events (go test
// writes some before any test runs) are printed as they are.
func (r *renderer) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			fmt.Fprintf(r.w, "%s\n", line)
			continue
		}
		r.handle(ev)
	}
	return sc.Err()
}

func (r *renderer) handle(ev event) {
	if ev.Action == "build-output" {
		io.WriteString(r.w, ev.Output)
		return
	}
	if ev.Package == "" {
		return
	}
	p := r.pkg(ev.Package)
	if ev.Test == "" {
		switch ev.Action {
		case "output":
			p.out = append(p.out, ev.Output)
		case "pass", "skip":
			// As go test without -v: a package that passes shows its
			// ok (or "no test files") line and nothing else.
			for _, l := range p.out {
				if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "?") {
					io.WriteString(r.w, l)
				}
			}
			delete(r.pkgs, ev.Package)
		case "fail":
			r.printFailed(ev.Package, p)
			delete(r.pkgs, ev.Package)
		}
		return
	}
	switch ev.Action {
	case "run":
		p.tests[ev.Test] = []string{}
	case "output":
		if !isFraming(ev.Output) {
			p.tests[ev.Test] = append(p.tests[ev.Test], ev.Output)
		}
	case "pass":
		delete(p.tests, ev.Test)
	case "skip":
		r.skips = append(r.skips, skip{pkg: ev.Package, test: ev.Test, reason: skipReason(p.tests[ev.Test])})
		delete(p.tests, ev.Test)
	case "fail":
		block := failBlock(ev.Test, p.tests[ev.Test])
		delete(p.tests, ev.Test)
		// A subtest's failure goes inside its parent's, indented, as go
		// test prints it.
		if i := strings.LastIndexByte(ev.Test, '/'); i > 0 {
			if parent, ok := p.tests[ev.Test[:i]]; ok {
				for _, l := range block {
					parent = append(parent, "    "+l)
				}
				p.tests[ev.Test[:i]] = parent
				return
			}
		}
		p.failed = append(p.failed, block...)
	}
}

// failBlock returns a failed test's output as go test without -v prints
// it: its "--- FAIL: name (time)" line first, then what it logged. (With
// -json the tests run verbose, which prints the logs as they come and the
// result line after them.)
func failBlock(name string, out []string) []string {
	prefix := "--- FAIL: " + name + " ("
	for i := len(out) - 1; i >= 0; i-- {
		if l := strings.TrimLeft(out[i], " "); strings.HasPrefix(l, prefix) {
			block := append([]string{l}, out[:i]...)
			return append(block, out[i+1:]...)
		}
	}
	return out
}

// printFailed prints a failed package: its failed tests' output, that of
// tests that never finished (the binary crashed or timed out in them),
// then its own, which ends with its FAIL line.
func (r *renderer) printFailed(name string, p *pkgState) {
	for _, l := range p.failed {
		io.WriteString(r.w, l)
	}
	var running []string
	for t := range p.tests {
		running = append(running, t)
	}
	sort.Strings(running)
	for _, t := range running {
		fmt.Fprintf(r.w, "--- FAIL: %s (did not finish)\n", t)
		for _, l := range p.tests[t] {
			io.WriteString(r.w, l)
		}
	}
	for _, l := range p.out {
		io.WriteString(r.w, l)
	}
}

// flush prints what is left of packages whose end never came (go test
// killed, say), as failed.
func (r *renderer) flush() {
	for _, name := range r.order {
		if p, ok := r.pkgs[name]; ok {
			r.printFailed(name, p)
			delete(r.pkgs, name)
		}
	}
}

// isFraming reports whether a line is test2json's framing of verbose
// output, which go test without -v does not print.
func isFraming(l string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME"} {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

// skipReason returns the message of a skipped test: the last line it
// logged before its --- SKIP line, without the file:line prefix.
func skipReason(out []string) string {
	reason := ""
	for _, l := range out {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		reason = t
	}
	// "etcd.go:87: skipping: ..." -> "skipping: ..."
	if i := strings.Index(reason, ": "); i > 0 && strings.Contains(reason[:i], ".go:") && !strings.Contains(reason[:i], " ") {
		reason = reason[i+2:]
	}
	return reason
}

// needs names what a skip reason says is missing, for the summary.
var needs = []struct{ keyword, name string }{
	{"docker", "Docker"},
	{"prometheus", "Prometheus"},
	{"promtool", "Prometheus"},
	{"etcd", "etcd"},
	{"python", "Python's grpcio"},
}

func category(reason string) string {
	low := strings.ToLower(reason)
	for _, n := range needs {
		if strings.Contains(low, n.keyword) {
			return n.name
		}
	}
	return ""
}

// summary is the final line: how many tests skipped, grouped by what they
// need, with their packages.
func (r *renderer) summary() string {
	if len(r.skips) == 0 {
		return "skipped: no tests"
	}
	type group struct {
		n    int
		pkgs []string
	}
	groups := map[string]*group{}
	var names []string
	for _, s := range r.skips {
		c := category(s.reason)
		g := groups[c]
		if g == nil {
			g = &group{}
			groups[c] = g
			names = append(names, c)
		}
		g.n++
		pkg := shortPkg(s.pkg)
		if len(g.pkgs) == 0 || !contains(g.pkgs, pkg) {
			g.pkgs = append(g.pkgs, pkg)
		}
	}
	// What is missing first, in the order of needs, then the rest.
	rank := func(c string) int {
		for i, n := range needs {
			if n.name == c {
				return i
			}
		}
		return len(needs)
	}
	sort.SliceStable(names, func(i, j int) bool { return rank(names[i]) < rank(names[j]) })
	describe := func(c string, n int, withCount bool) string {
		var what string
		switch {
		case c == "":
			what = "for other reasons"
		case n == 1:
			what = "needs " + c
		default:
			what = "need " + c
		}
		count := fmt.Sprint(n)
		if withCount {
			count = plural(n)
		}
		return fmt.Sprintf("%s %s (%s)", count, what, strings.Join(groups[c].pkgs, ", "))
	}
	for _, c := range names {
		sort.Strings(groups[c].pkgs)
	}
	if len(names) == 1 {
		return "skipped: " + describe(names[0], len(r.skips), true)
	}
	var parts []string
	for _, c := range names {
		parts = append(parts, describe(c, groups[c].n, false))
	}
	return fmt.Sprintf("skipped: %s: %s", plural(len(r.skips)), strings.Join(parts, ", "))
}

func plural(n int) string {
	if n == 1 {
		return "1 test"
	}
	return fmt.Sprintf("%d tests", n)
}

func shortPkg(p string) string {
	if p == module {
		return "."
	}
	return strings.TrimPrefix(p, module+"/")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
