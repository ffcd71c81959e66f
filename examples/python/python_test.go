// Package python_test runs the Python example client of examples/python
// against a real ordinal node, and checks that its committed gRPC stubs
// (gen/) are what generate.sh makes from api/proto.
//
// It needs a Python 3 that can import grpc and grpc_tools (Debian:
// apt-get install python3-grpcio python3-grpc-tools): /usr/bin/python3,
// else python3 on PATH. Without one the tests skip, unless
// ORDINAL_REQUIRE_PYTHON=1 (which CI sets), which turns the skip into a
// failure.
package python_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/internal/proccluster"
)

// requireEnv set to 1 makes a missing Python fail the tests instead of
// skipping them.
const requireEnv = "ORDINAL_REQUIRE_PYTHON"

// runTimeout bounds each run of the interpreter.
const runTimeout = 2 * time.Minute

var (
	pythonOnce   sync.Once
	pythonPath   string
	pythonReason string
)

// python returns an interpreter that imports grpc and grpc_tools, or skips
// tb (fails it under ORDINAL_REQUIRE_PYTHON=1).
func python(tb testing.TB) string {
	tb.Helper()
	pythonOnce.Do(func() {
		candidates := []string{"/usr/bin/python3"}
		if p, err := exec.LookPath("python3"); err == nil {
			candidates = append(candidates, p)
		}
		var tried []string
		for _, p := range candidates {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := exec.CommandContext(ctx, p, "-c", "import grpc, grpc_tools").CombinedOutput()
			cancel()
			if err == nil {
				pythonPath = p
				return
			}
			tried = append(tried, p+": "+firstLine(out, err))
		}
		pythonReason = "no python3 that imports grpc and grpc_tools (tried " + strings.Join(tried, "; ") +
			"): install Debian's python3-grpcio and python3-grpc-tools (apt-get install python3-grpcio python3-grpc-tools)"
	})
	if pythonPath == "" {
		if os.Getenv(requireEnv) == "1" {
			tb.Fatalf("%s; %s=1 requires the Python tests to run", pythonReason, requireEnv)
		}
		tb.Skipf("skipping: %s (set %s=1 to fail instead)", pythonReason, requireEnv)
	}
	return pythonPath
}

func firstLine(out []byte, err error) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return last
	}
	return err.Error()
}

// run runs the interpreter py on args in this directory, bounded by
// runTimeout, with extra environment variables env, and returns its
// standard output; a failure fails t with both outputs.
func run(t *testing.T, py string, env []string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, args...)
	// No __pycache__ in gen/; no ORDINAL_ variables of the caller's shell.
	cmd.Env = append(withoutOrdinalEnv(os.Environ()), "PYTHONDONTWRITEBYTECODE=1", "PYTHONPATH=")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v (context: %v)\nstdout:\n%s\nstderr:\n%s", py, args, err, ctx.Err(), stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

func withoutOrdinalEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "ORDINAL_") {
			out = append(out, kv)
		}
	}
	return out
}

// TestStubsUpToDate regenerates the stubs with generate.sh into a
// temporary directory and compares them with gen/.
func TestStubsUpToDate(t *testing.T) {
	py := python(t)
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("skipping: no sh to run generate.sh: %v", err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, sh, "generate.sh", out)
	cmd.Env = append(os.Environ(), "PYTHON="+py, "PYTHONDONTWRITEBYTECODE=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, b)
	}
	want, got := pyFiles(t, out), pyFiles(t, "gen")
	if len(want) == 0 {
		t.Fatal("generate.sh wrote no .py files")
	}
	stale := false
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("gen/%s is missing", name)
			stale = true
		case !bytes.Equal(g, w):
			t.Errorf("gen/%s differs from what generate.sh makes from api/proto", name)
			stale = true
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("gen/%s is not made from any proto of api/proto", name)
			stale = true
		}
	}
	if stale {
		t.Log("regenerate with: PYTHON=" + py + " examples/python/generate.sh")
	}
}

// pyFiles returns the .py files under dir by their slash-separated paths
// relative to it.
func pyFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "__pycache__" {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".py") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// result is one JSON line of ordinal_example.py.
type result struct {
	Call    string `json:"call"`
	Mode    string `json:"mode"`
	ID      *int64 `json:"id"`
	FirstID *int64 `json:"first_id"`
	Count   *int64 `json:"count"`
}

// TestExample runs ordinal_example.py against a secured single node (TLS,
// with a client certificate of the ids role) and checks the IDs it prints.
func TestExample(t *testing.T) {
	py := python(t)
	c := proccluster.Start(t, 1)
	nd := c.Nodes[0]
	pki := c.PKI()
	// Not the admin certificate: any certificate of the client CA holds
	// the ids role, which is all the example needs.
	cert, key := pki.Client("python-example")
	const count = 100
	out := run(t, py, []string{"ORDINAL_TLS_CA_FILE=" + pki.ServerCAFile},
		"ordinal_example.py", "--addr", nd.GRPCAddr, "--tls-cert-file", cert, "--tls-key-file", key,
		"--store", "python", "--key", "example", "--count", strconv.Itoa(count), "--timeout", "20")

	var results []result
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v\nstdout:\n%s", sc.Text(), err, out)
		}
		results = append(results, r)
	}
	t.Logf("ordinal_example.py printed:\n%s", out)
	want := []struct{ call, mode string }{
		{"SequencerService/GetNextId", "STRONG"},
		{"SequencerService/GetNextId", "STRONG"},
		{"SequencerService/GetNextId", "WEAK"},
		{"SequencerService/GetNextIds", "STRONG"},
		{"Runtime/GetNextId", "STRONG"},
	}
	if len(results) != len(want) {
		t.Fatalf("%d results, want %d", len(results), len(want))
	}
	for i, w := range want {
		if results[i].Call != w.call || results[i].Mode != w.mode {
			t.Fatalf("result %d is %s %s, want %s %s", i, results[i].Mode, results[i].Call, w.mode, w.call)
		}
	}
	id := func(i int) int64 {
		t.Helper()
		if results[i].ID == nil {
			t.Fatalf("result %d (%s) has no id", i, results[i].Call)
		}
		return *results[i].ID
	}
	strong1, strong2, weak, layotto := id(0), id(1), id(2), id(4)
	batch := results[3]
	if batch.FirstID == nil || batch.Count == nil {
		t.Fatalf("GetNextIds result has no first_id or count: %+v", batch)
	}
	first, n := *batch.FirstID, *batch.Count

	if strong1 <= 0 || weak <= 0 || first <= 0 || layotto <= 0 {
		t.Errorf("IDs must be positive: STRONG %d, %d, WEAK %d, block from %d, Layotto %d", strong1, strong2, weak, first, layotto)
	}
	if strong2 <= strong1 {
		t.Errorf("STRONG IDs do not increase: %d then %d", strong1, strong2)
	}
	if n != count {
		t.Errorf("GetNextIds returned %d IDs, want %d", n, count)
	}
	// STRONG IDs are above every ID handed out before, in either mode.
	if first <= max(strong2, weak) {
		t.Errorf("GetNextIds block starts at %d, not above the earlier IDs (STRONG %d, WEAK %d)", first, strong2, weak)
	}
	if last := first + n - 1; layotto <= last {
		t.Errorf("Layotto's GetNextId (STRONG) returned %d, not above the block's last ID %d", layotto, last)
	}
	// All unique: the single IDs, and none inside the block.
	seen := map[int64]string{}
	for _, s := range []struct {
		name string
		id   int64
	}{{"first STRONG", strong1}, {"second STRONG", strong2}, {"WEAK", weak}, {"Layotto", layotto}} {
		if other, dup := seen[s.id]; dup {
			t.Errorf("%s ID %d duplicates the %s ID", s.name, s.id, other)
		}
		seen[s.id] = s.name
		if s.id >= first && s.id < first+n {
			t.Errorf("%s ID %d lies inside the GetNextIds block %d..%d", s.name, s.id, first, first+n-1)
		}
	}
}
