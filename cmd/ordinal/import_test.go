package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// importTimeout bounds one run of `ordinal import` in these tests: a node
// started with --weak-range-ttl 1s holds a floor for about 1.2s at most.
const importTimeout = 60 * time.Second

// startImportNode starts a single-node Raft cluster in development mode,
// with a short --weak-range-ttl so that SetFloor's wait in the node's
// first moments as leader (alloc/DESIGN.md, "Floors") stays short.
func startImportNode(t *testing.T, weakRangeTTL string) string {
	t.Helper()
	addr := testutil.FreeAddr(t)
	startServe(t, addr, nil, "--node-id", "n1", "--data-dir", t.TempDir(), "--grpc-addr", addr,
		"--raft-addr", testutil.FreeAddr(t), "--weak-range-ttl", weakRangeTTL)
	return addr
}

// runImportCmd runs the binary with args and stdin to completion.
func runImportCmd(t *testing.T, stdin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), importTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ordinalBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = testEnv(env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) || ctx.Err() != nil {
		t.Fatalf("ordinal %s: %v (ctx: %v)\nstderr:\n%s", strings.Join(args, " "), err, ctx.Err(), stderr.String())
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// mustImport runs `ordinal import` and fails the test unless it exits 0
// and its summary is want.
func mustImport(t *testing.T, stdin, want string, args ...string) result {
	t.Helper()
	r := runImportCmd(t, stdin, nil, append([]string{"import"}, args...)...)
	if r.code != 0 || !strings.Contains(r.stdout, want+"\n") {
		t.Fatalf("ordinal import %s: exit %d, want 0 and summary %q\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// nextOf takes one ID of key through the binary.
func nextOf(t *testing.T, addr, store, key, mode string) int64 {
	t.Helper()
	out := mustRun(t, nil, "next", "--addr", addr, "--store", store, "--mode", mode, key)
	id, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("next %s/%s printed %q", store, key, out)
	}
	return id
}

// highWater reads key's high-water mark, consuming nothing.
func highWater(t *testing.T, addr, store, key string) int64 {
	t.Helper()
	c, err := client.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hw, err := c.Store(store).HighWater(ctx, key)
	if err != nil {
		t.Fatalf("high-water mark of %s/%s: %v", store, key, err)
	}
	return hw
}

// floorCase is a key imported with a value.
type floorCase struct {
	store, key string
	value      int64
}

// checkAbove fails the test unless the next WEAK and STRONG IDs of every
// key are above its imported value, and above the IDs of the same mode in
// seen (WEAK and STRONG IDs come from separate ranges, so a WEAK ID may be
// below an earlier STRONG one), which it then updates.
func checkAbove(t *testing.T, addr string, cases []floorCase, seen map[string]int64) {
	t.Helper()
	for _, c := range cases {
		for _, mode := range []string{"weak", "strong"} {
			name := c.store + "/" + c.key + " " + mode
			id := nextOf(t, addr, c.store, c.key, mode)
			if id <= c.value || id <= seen[name] {
				t.Errorf("%s: next id %d after the import, want above the imported %d and the earlier id %d", name, id, c.value, seen[name])
			}
			seen[name] = id
		}
	}
}

// TestImportCSVAndJSON imports floors from CSV and JSON, as files and
// through stdin, into a real node, then checks that every key continues
// above its value and that importing again changes nothing.
func TestImportCSVAndJSON(t *testing.T) {
	t.Parallel()
	// WEAK ranges serve for 3s: held's below stays valid through the
	// import.
	addr := startImportNode(t, "3s")
	// In its first FloorHold as leader (3.4s) the node cannot trust its
	// member list, and SetFloor waits that out: once this first import
	// returned, SetFloor returns as soon as the node applied the floor.
	mustImport(t, "warm,up,1\n", "import: 1 key, 1 floor raised, 0 already at or above, 0 errors", "--addr", addr, "--csv", "-")

	// busy has handed out an ID, so its high-water mark (its first WEAK
	// range, 1..64) is above the value imported; held's node still holds
	// the rest of that range, which the floor must drop although the
	// high-water mark is above it already.
	if id := nextOf(t, addr, "default", "busy", "weak"); id != 1 {
		t.Fatalf("first id of busy: %d", id)
	}
	if id := nextOf(t, addr, "s1", "held", "weak"); id != 1 {
		t.Fatalf("first id of held: %d", id)
	}
	csvFile := writeFile(t, "floors.csv", "store,key,value\n"+
		",order_table,1000\n"+
		"s1,k1,50\n"+
		"s1,\"with, comma\", 77\n"+
		"s1,held,30\n"+
		",busy,10\n"+
		"s1,zero,0\n")
	csvCases := []floorCase{{"s1", "held", 30}, {"default", "order_table", 1000}, {"s1", "k1", 50},
		{"s1", "with, comma", 77}, {"default", "busy", 10}}
	mustImport(t, "", "import: 6 keys, 3 floors raised, 3 already at or above, 0 errors", "--addr", addr, "--csv", csvFile)
	seen := map[string]int64{}
	checkAbove(t, addr, csvCases, seen)

	// Again: nothing to raise, and no counter went down.
	mustImport(t, "", "import: 6 keys, 0 floors raised, 6 already at or above, 0 errors", "--addr", addr, "--csv", csvFile)
	checkAbove(t, addr, csvCases, seen)

	// A JSON array, from a file; a value may be a string of digits.
	jsonFile := writeFile(t, "floors.json", `[
  {"store": "j", "key": "a", "value": 100},
  {"key": "b", "value": "200"},
  {"store": "j", "key": "huge", "value": 4611686018427387904}
]`)
	jsonCases := []floorCase{{"j", "a", 100}, {"default", "b", 200}, {"j", "huge", 1 << 62}}
	mustImport(t, "", "import: 3 keys, 3 floors raised, 0 already at or above, 0 errors", "--addr", addr, "--json", jsonFile)
	checkAbove(t, addr, jsonCases, seen)
	mustImport(t, "", "import: 3 keys, 0 floors raised, 3 already at or above, 0 errors", "--addr", addr, "--json", jsonFile)

	// JSON lines, through stdin, with a blank line; and CSV through stdin
	// without a header.
	lines := "{\"store\":\"jl\",\"key\":\"x\",\"value\":5}\n\n{\"key\":\"y\",\"value\":6}\n"
	mustImport(t, lines, "import: 2 keys, 2 floors raised, 0 already at or above, 0 errors", "--addr", addr, "--json", "-")
	mustImport(t, "cs,stdin_key,42\n", "import: 1 key, 1 floor raised, 0 already at or above, 0 errors", "--addr", addr, "--csv", "-")
	checkAbove(t, addr, []floorCase{{"jl", "x", 5}, {"default", "y", 6}, {"cs", "stdin_key", 42}}, seen)

	// A dry run reads and reports, and changes nothing.
	r := mustImport(t, "dry,new_key,500\n,order_table,10\n", "import: 2 keys, 1 floor to raise, 1 already at or above, 0 errors (dry run: nothing was changed)",
		"--addr", addr, "--csv", "-", "--dry-run")
	if !strings.Contains(r.stdout, `raise store="dry" key="new_key" value=500 high_water=0`) ||
		!strings.Contains(r.stdout, `keep  store="default" key="order_table" value=10 high_water=`) {
		t.Errorf("dry run printed:\n%s", r.stdout)
	}
	if hw := highWater(t, addr, "dry", "new_key"); hw != 0 {
		t.Errorf("a dry run changed dry/new_key: high-water mark %d", hw)
	}
}

// TestImportInvalidRecords checks that invalid records are reported with
// their line numbers and the rest is imported (exit 1), that --strict
// imports nothing then, and the usage errors.
func TestImportInvalidRecords(t *testing.T) {
	t.Parallel()
	addr := startImportNode(t, "1s")

	csvWith := func(store string) string {
		return "store,key,value\n" + // line 1
			store + ",good1,10\n" + // 2
			store + ",short\n" + // 3
			store + ",neg,-5\n" + // 4
			store + ",big,9223372036854775808\n" + // 5
			store + ",,7\n" + // 6
			store + ",word,abc\n" + // 7
			store + ",frac,1.5\n" + // 8
			store + ",bad\"quote,3\n" + // 9
			store + "," + strings.Repeat("k", 1025) + ",3\n" + // 10
			store + ",max,9223372036854775807\n" + // 11
			store + ",good2,20\n" // 12
	}
	wantErrors := []string{
		"line 3: 2 fields, want 3 (store,key,value)",
		`line 4: key "neg": value -5 is negative`,
		`line 5: key "big": value 9223372036854775808 is above 9223372036854775807 (2^63-1)`,
		"line 6: the key is empty",
		`line 7: key "word": value "abc" is not a whole number`,
		`line 8: key "frac": value "1.5" is not a whole number`,
		`line 9: bare " in non-quoted-field`,
		"line 10: the key is 1025 bytes long; the limit is 1024",
	}
	check := func(t *testing.T, r result, wantSummary string) {
		t.Helper()
		if r.code != 1 || !strings.Contains(r.stdout, wantSummary+"\n") {
			t.Errorf("exit %d, stdout %q; want exit 1 and summary %q\nstderr:\n%s", r.code, r.stdout, wantSummary, r.stderr)
		}
		for _, want := range wantErrors {
			if !strings.Contains(r.stderr, "import: "+want) {
				t.Errorf("stderr does not report %q:\n%s", want, r.stderr)
			}
		}
	}

	t.Run("the rest is imported", func(t *testing.T) {
		r := runImportCmd(t, "", nil, "import", "--addr", addr, "--csv", writeFile(t, "bad.csv", csvWith("lenient")))
		check(t, r, "import: 3 keys, 3 floors raised, 0 already at or above, 8 errors")
		if !strings.Contains(r.stderr, "ordinal: import: 8 errors (invalid records: 8, keys the node refused: 0); every other key was imported") {
			t.Errorf("no final error line:\n%s", r.stderr)
		}
		for key, want := range map[string]int64{"good1": 10, "good2": 20, "max": 9223372036854775807} {
			if hw := highWater(t, addr, "lenient", key); hw != want {
				t.Errorf("lenient/%s: high-water mark %d after the import, want %d", key, hw, want)
			}
		}
	})

	t.Run("--strict imports nothing", func(t *testing.T) {
		r := runImportCmd(t, csvWith("strict"), nil, "import", "--addr", addr, "--csv", "-", "--strict")
		check(t, r, "import: 0 keys, 0 floors raised, 0 already at or above, 8 errors")
		if !strings.Contains(r.stderr, "nothing was imported (--strict)") {
			t.Errorf("stderr does not say nothing was imported:\n%s", r.stderr)
		}
		for _, key := range []string{"good1", "good2", "max"} {
			if hw := highWater(t, addr, "strict", key); hw != 0 {
				t.Errorf("strict/%s: high-water mark %d after a --strict import with invalid lines, want 0", key, hw)
			}
		}
	})

	t.Run("JSON", func(t *testing.T) {
		array := `[
  {"store": "ja", "key": "ok1", "value": 5},
  {"store": "ja", "key": "no_value"},
  {"store": "ja", "key": "typo", "vaule": 5},
  "not an object",
  {"store": "ja", "key": "neg",
   "value": -1},
  {"store": "ja", "key": "float", "value": 2.5},
  {"store": "ja", "key": "ok2", "value": "6"}
]`
		r := runImportCmd(t, "", nil, "import", "--addr", addr, "--json", writeFile(t, "bad.json", array))
		for _, want := range []string{
			`line 3: key "no_value": no "value"`,
			`line 4: unknown field "vaule"`,
			"line 5: a string, not an object",
			`line 6: key "neg": value -1 is negative`,
			`line 8: key "float": value "2.5" is not a whole number`,
		} {
			if !strings.Contains(r.stderr, "import: "+want) {
				t.Errorf("stderr does not report %q:\n%s", want, r.stderr)
			}
		}
		if r.code != 1 || !strings.Contains(r.stdout, "import: 2 keys, 2 floors raised, 0 already at or above, 5 errors\n") {
			t.Errorf("exit %d, stdout %q", r.code, r.stdout)
		}

		// A syntax error ends the array: what came before is imported.
		r = runImportCmd(t, "[{\"store\":\"js\",\"key\":\"before\",\"value\":9},\n{\"key\" 1},\n{\"store\":\"js\",\"key\":\"after\",\"value\":9}]",
			nil, "import", "--addr", addr, "--json", "-")
		if r.code != 1 || !strings.Contains(r.stderr, "line 2: invalid character") || !strings.Contains(r.stderr, "nothing after it was read") {
			t.Errorf("syntax error: exit %d, stderr %q", r.code, r.stderr)
		}
		if hw := highWater(t, addr, "js", "before"); hw != 9 {
			t.Errorf("js/before: high-water mark %d, want 9", hw)
		}
		if hw := highWater(t, addr, "js", "after"); hw != 0 {
			t.Errorf("js/after, past the syntax error: high-water mark %d, want 0", hw)
		}

		// JSON lines go on after a bad line.
		r = runImportCmd(t, "{\"store\":\"jl\",\"key\":\"a\",\"value\":1}\nnot json\n{\"store\":\"jl\",\"key\":\"b\",\"value\":2}\n",
			nil, "import", "--addr", addr, "--json", "-")
		if r.code != 1 || !strings.Contains(r.stderr, "import: line 2: not one JSON object") ||
			!strings.Contains(r.stdout, "import: 2 keys, 2 floors raised, 0 already at or above, 1 error\n") {
			t.Errorf("JSON lines with a bad line: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("usage", func(t *testing.T) {
		file := writeFile(t, "ok.csv", "s,k,1\n")
		for _, tc := range []struct {
			env  []string
			args []string
			want string
		}{
			{nil, []string{"--addr", addr}, "give exactly one of --csv FILE, --json FILE and --from-etcd ENDPOINTS"},
			{nil, []string{"--addr", addr, "--csv", file, "--json", file}, "give exactly one of"},
			{nil, []string{"--addr", addr, "--csv", file, "--store", "x"}, "--store only applies to --from-etcd"},
			{nil, []string{"--addr", addr, "--csv", file, "--etcd-app-id", "x"}, "--etcd-app-id: the --etcd-* flags need --from-etcd"},
			{nil, []string{"--addr", addr, "--from-etcd", "127.0.0.1:1"}, "--from-etcd needs --store NAME on the command line"},
			// ORDINAL_STORE, set for next or keys list, must not pick the store of a bulk import.
			{[]string{"ORDINAL_STORE=etcd"}, []string{"--addr", addr, "--from-etcd", "127.0.0.1:1"}, "--from-etcd needs --store NAME on the command line"},
			{nil, []string{"--addr", addr, "--csv", "/nonexistent/floors.csv"}, "--csv: open /nonexistent/floors.csv"},
			{nil, []string{"--addr", addr, "--csv", file, "--concurrency", "0"}, "--concurrency is 0"},
			{nil, []string{"--addr", addr, "--csv", file, "extra"}, `unexpected argument "extra"`},
			{nil, []string{"--addr", addr, "--from-etcd", "127.0.0.1:1", "--store", "s", "--etcd-app-id", "a||b"}, `must not contain "||"`},
		} {
			r := runImportCmd(t, "", tc.env, append([]string{"import"}, tc.args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("import %s (env %v): exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), tc.env, r.code, r.stderr, tc.want)
			}
		}
		if r := runImportCmd(t, "", nil, "import", "--help"); r.code != 0 || !strings.Contains(r.stderr, "Layotto's etcd sequencer") {
			t.Errorf("import --help: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("an unreachable node stops the import", func(t *testing.T) {
		r := runImportCmd(t, "", nil, "import", "--addr", testutil.FreeAddr(t), "--csv", writeFile(t, "ok.csv", "s,k,1\ns,l,2\n"))
		if r.code != 1 || !strings.Contains(r.stderr, "import stopped: ") || !strings.Contains(r.stderr, "Unavailable") ||
			!strings.Contains(r.stderr, "the import is safe to run again") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// layottoFill is how many IDs the test takes from a key through an
// ordinal node serving Layotto's etcd layout.
type layottoFill struct {
	key string
	ids int
}

// fillLayotto takes IDs as Layotto's callers would, through a node in the
// Layotto layout, and returns each key's last ID.
func fillLayotto(t *testing.T, addr string, fills []layottoFill) map[string]int64 {
	t.Helper()
	c, err := client.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	last := map[string]int64{}
	for _, f := range fills {
		for i := range f.ids {
			mode := client.Weak
			if i%2 == 1 {
				mode = client.Strong
			}
			id, err := c.Store("sequencer_demo").NextID(ctx, f.key, mode)
			if err != nil {
				t.Fatalf("id %d of %s from the Layotto-layout node: %v", i+1, f.key, err)
			}
			if id != last[f.key]+1 {
				t.Fatalf("Layotto-layout node handed out %d after %d for %s", id, last[f.key], f.key)
			}
			last[f.key] = id
		}
	}
	return last
}

// TestImportFromLayottoEtcd fills a real etcd the way Layotto's etcd
// sequencer component does (through ordinal nodes in the Layotto layout,
// which make exactly its transaction: one Put per ID, the ID being the
// key's version), with and without an app ID, imports it into a Raft node,
// and checks that every key continues above its Layotto version.
func TestImportFromLayottoEtcd(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	plain, withApp := testutil.FreeAddr(t), testutil.FreeAddr(t)
	startServe(t, plain, nil, "--store", "etcd", "--etcd-layout", "layotto", "--etcd-endpoints", e.Endpoint,
		"--grpc-addr", plain, "--raft-addr", "127.0.0.1:0", "--node-id", "layotto-plain")
	startServe(t, withApp, nil, "--store", "etcd", "--etcd-layout", "layotto", "--etcd-app-id", "app1", "--etcd-endpoints", e.Endpoint,
		"--grpc-addr", withApp, "--raft-addr", "127.0.0.1:0", "--node-id", "layotto-app1")

	// Layotto's quick-start demo (key666, ids 1..10), one ID through the
	// command, then more keys, with several pages' worth of keys.
	if out := mustRun(t, nil, "demo", "--addr", plain, "-s", "sequencer_demo"); !strings.Contains(out, "Next id:next_id:10\nDemo success!") {
		t.Fatalf("demo printed:\n%s", out)
	}
	if got := mustRun(t, nil, "next", "--addr", plain, "--store", "sequencer_demo", "by_command"); got != "1\n" {
		t.Fatalf("next by_command printed %q", got)
	}
	fills := []layottoFill{{"order_table", 25}, {"user", 3}}
	for i := range 8 {
		fills = append(fills, layottoFill{fmt.Sprintf("k%02d", i), i + 1})
	}
	plainLast := fillLayotto(t, plain, fills)
	plainLast["key666"], plainLast["by_command"] = 10, 1
	appLast := fillLayotto(t, withApp, []layottoFill{{"order_table", 7}, {"app_only", 4}})

	// What is in etcd is Layotto's layout, the version being the last ID,
	// next to keys that are not sequencer keys.
	cli := e.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for key, etcdKey := range map[string]string{"order_table": "/layotto/sequencer|||order_table", "app1/order_table": "/layotto/sequencer|||app1||order_table"} {
		resp, err := cli.Get(ctx, etcdKey)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("etcd key %s: %v, %v", etcdKey, resp, err)
		}
		want := plainLast["order_table"]
		if key != "order_table" {
			want = appLast["order_table"]
		}
		if resp.Kvs[0].Version != want || len(resp.Kvs[0].Value) != 0 {
			t.Fatalf("etcd key %s: version %d, value %q; want version %d and an empty value", etcdKey, resp.Kvs[0].Version, resp.Kvs[0].Value, want)
		}
	}
	for _, k := range []string{"/layotto/key666", "/layotto/lock|||key666", "/other/sequencer|||order_table"} {
		if _, err := cli.Put(ctx, k, "x"); err != nil {
			t.Fatal(err)
		}
	}

	raft := startImportNode(t, "1s")
	etcdArgs := []string{"import", "--addr", raft, "--from-etcd", e.Endpoint, "--etcd-page-size", "3"}

	// A dry run lists every key and changes nothing.
	r := runImportCmd(t, "", nil, append(etcdArgs, "--store", "sequencer_demo", "--dry-run")...)
	wantSummary := fmt.Sprintf("import: %d keys, %d floors to raise, 0 already at or above, 0 errors (dry run: nothing was changed)\n", len(plainLast), len(plainLast))
	if r.code != 0 || !strings.Contains(r.stdout, wantSummary) {
		t.Fatalf("dry run: exit %d, want summary %q\nstdout:\n%s\nstderr:\n%s", r.code, wantSummary, r.stdout, r.stderr)
	}
	for key, v := range plainLast {
		if line := fmt.Sprintf("raise store=%q key=%q value=%d high_water=0\n", "sequencer_demo", key, v); !strings.Contains(r.stdout, line) {
			t.Errorf("dry run does not print %q:\n%s", line, r.stdout)
		}
	}
	if hw := highWater(t, raft, "sequencer_demo", "order_table"); hw != 0 {
		t.Fatalf("the dry run set a floor: high-water mark %d", hw)
	}

	// Without an app ID: the keys of sequencer|||<key>; app1's are left
	// out, and said so.
	r = mustImport(t, "", fmt.Sprintf("import: %d keys, %d floors raised, 0 already at or above, 0 errors", len(plainLast), len(plainLast)),
		append(etcdArgs[1:], "--store", "sequencer_demo")...)
	if !strings.Contains(r.stderr, `left out 2 etcd keys of app IDs (/layotto/sequencer|||<app-id>||<key>): "app1" (2 keys)`) {
		t.Errorf("the app ID's keys left out are not reported:\n%s", r.stderr)
	}
	// With the app ID, into a store of its own; the prefix as Layotto
	// writes it in its configuration, without slashes.
	mustImport(t, "", "import: 2 keys, 2 floors raised, 0 already at or above, 0 errors",
		append(etcdArgs[1:], "--store", "app1_store", "--etcd-app-id", "app1", "--etcd-prefix", "layotto")...)

	var cases []floorCase
	for key, v := range plainLast {
		cases = append(cases, floorCase{"sequencer_demo", key, v})
	}
	for key, v := range appLast {
		cases = append(cases, floorCase{"app1_store", key, v})
	}
	seen := map[string]int64{}
	checkAbove(t, raft, cases, seen)
	if hw := highWater(t, raft, "sequencer_demo", "app_only"); hw != 0 {
		t.Errorf("app1's key app_only was imported without --etcd-app-id: high-water mark %d", hw)
	}

	// Again: nothing changes.
	mustImport(t, "", fmt.Sprintf("import: %d keys, 0 floors raised, %d already at or above, 0 errors", len(plainLast), len(plainLast)),
		append(etcdArgs[1:], "--store", "sequencer_demo")...)
	checkAbove(t, raft, cases, seen)

	// Importing into a node that serves the Layotto layout itself: its
	// SetFloor cannot raise a version, so a key below its value is
	// refused (FailedPrecondition) and reported, and the rest goes on.
	r = runImportCmd(t, ",order_table,5\n,never_used,5\n", nil, "import", "--addr", plain, "--csv", "-")
	if r.code != 1 || !strings.Contains(r.stderr, `import: line 2: store "default" key "never_used": SetFloor: FailedPrecondition`) ||
		!strings.Contains(r.stdout, "import: 1 key, 0 floors raised, 1 already at or above, 1 error\n") {
		t.Errorf("import into a Layotto-layout node: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// TestImportEtcdPages reads more keys than fit in a page and checks that
// every key is read once, with its version. Each ID is one Put, as in
// Layotto's component; Puts to different keys share transactions here, to
// write thousands of keys quickly.
func TestImportEtcdPages(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const keys = 2500
	want := map[string]int64{}
	for round := int64(1); round <= 3; round++ {
		var ops []clientv3.Op
		flush := func() {
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
		for i := range keys {
			if int64(i%3) < round-1 {
				continue // key i gets 1 + i%3 Puts
			}
			key := fmt.Sprintf("key-%04d", i)
			ops = append(ops, clientv3.OpPut("/layotto/sequencer|||"+key, ""))
			want[key] = round
			if len(ops) == 100 { // etcd's --max-txn-ops is 128
				flush()
			}
		}
		if len(ops) > 0 {
			flush()
		}
	}
	f := importFlags{fromEtcd: e.Endpoint, store: "s", pageSize: defaultEtcdPageSize}
	f.etcd.prefix = "/layotto/"
	f.etcd.dialTimeout, f.etcd.requestTimeout = 5*time.Second, 5*time.Second
	src, err := f.openEtcd()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := map[string]int64{}
	pages := 0
	for {
		it, err := src.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := got[it.key]; dup {
			t.Fatalf("key %s read twice", it.key)
		}
		if it.store != "s" {
			t.Fatalf("key %s in store %q, want s", it.key, it.store)
		}
		got[it.key] = it.value
		if len(src.(*etcdSource).page) == 0 {
			pages++
		}
	}
	if len(got) != keys {
		t.Fatalf("read %d keys, want %d", len(got), keys)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key %s: value %d, want its version %d", k, got[k], v)
		}
	}
	if pages < keys/defaultEtcdPageSize {
		t.Fatalf("read in %d pages, want at least %d", pages, keys/defaultEtcdPageSize)
	}
}

// TestImportParseValue checks the values accepted and refused.
func TestImportParseValue(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"0", 0, ""},
		{"42", 42, ""},
		{"9223372036854775807", 9223372036854775807, ""},
		{"9223372036854775808", 0, "above 9223372036854775807"},
		{"99999999999999999999", 0, "above 9223372036854775807"},
		{"-1", 0, "negative"},
		{"-99999999999999999999", 0, "negative"},
		{"", 0, "empty"},
		{"1e3", 0, "not a whole number"},
		{"+5", 0, "not a whole number"},
		{"0x10", 0, "not a whole number"},
		{"1_000", 0, "not a whole number"},
	} {
		got, err := parseImportValue(tc.in)
		if tc.wantErr == "" && (err != nil || got != tc.want) || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("parseImportValue(%q) = %d, %v; want %d, error containing %q", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
