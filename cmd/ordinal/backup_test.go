package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/proccluster"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// backupKey is a key of the CLI backup test: a store and a name.
type backupKey struct{ store, name string }

// takeFromAll takes IDs of every key, STRONG and WEAK, through every node
// of c, and raises high to the highest it got per key.
func takeFromAll(t *testing.T, c *proccluster.Cluster, keys []backupKey, rounds int, high map[backupKey]int64) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, nd := range c.Nodes {
		for _, mode := range []ordinalv1.SequencerOptions_AutoIncrement{ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG, ordinalv1.SequencerOptions_AUTO_INCREMENT_WEAK} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range rounds {
					k := keys[i%len(keys)]
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := nd.Sequencer().GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{StoreName: k.store, Key: k.name,
						Options: &ordinalv1.SequencerOptions{Increment: mode}, Count: int64(1 + i%7)})
					cancel()
					if err != nil {
						t.Errorf("%s %v %v: %v", nd.ID, mode, k, err)
						return
					}
					mu.Lock()
					high[k] = max(high[k], resp.FirstId+resp.Count-1)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
}

// TestBackupRestoreCLI is the operator's path through the real binary: a
// secured three-node cluster; `ordinal backup` through a follower over
// TLS with the admin certificate (refused to an ids certificate); IDs
// handed out after it; `ordinal restore` (refusing a damaged file, a file
// of an unknown version, a non-empty directory and conflicting flags);
// `ordinal serve` on the restored directory and a second node joining it:
// every ID they hand out, STRONG and WEAK, is above every ID handed out
// before, for every key, including one created after the backup.
func TestBackupRestoreCLI(t *testing.T) {
	t.Parallel()
	c := proccluster.Start(t, 3)
	pki := c.PKI()
	keys := []backupKey{{"", "orders"}, {"", "users"}, {"billing", "invoices"}}
	high := map[backupKey]int64{}
	takeFromAll(t, c, keys, 30, high)

	follower := c.Nodes[0]
	if leader := c.Leader(); leader == follower {
		follower = c.Nodes[1]
	}
	adminCert, adminKey := pki.Client(proccluster.AdminName)
	tlsArgs := func(cert, key string) []string {
		return []string{"--addr", follower.GRPCAddr, "--tls-ca-file", pki.ServerCAFile, "--tls-cert-file", cert, "--tls-key-file", key}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.backup")
	out := mustRun(t, nil, append([]string{"backup", file}, tlsArgs(adminCert, adminKey)...)...)
	t.Logf("ordinal backup:\n%s", out)
	for _, want := range []string{"wrote " + file, "raft index", "taken at", "3 keys in 2 stores", "billing", "cluster peak"} {
		if !strings.Contains(out, want) {
			t.Errorf("backup output lacks %q:\n%s", want, out)
		}
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600", st, err)
	}

	// An ids certificate may take IDs, not backups; nothing is written.
	appCert, appKey := pki.Client("orders-service")
	refused := filepath.Join(dir, "refused.backup")
	r := runOrdinal(t, nil, append([]string{"backup", refused}, tlsArgs(appCert, appKey)...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "PermissionDenied") || !strings.Contains(r.stderr, "admin role") {
		t.Fatalf("backup with an ids certificate: exit %d, stderr %q; want PermissionDenied naming the admin role", r.code, r.stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("after a refused backup the directory holds %v, want only the first backup", entries)
	}

	// The old cluster goes on, and a key is created after the backup.
	late := backupKey{"billing", "created-later"}
	takeFromAll(t, c, append(keys, late), 60, high)

	// Damaged files and bad command lines are refused, leaving nothing.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "damaged.backup")
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 0x01
	newer := append([]byte(nil), data...)
	newer[4] = 99
	newerFile := filepath.Join(dir, "newer.backup")
	for name, content := range map[string][]byte{damaged: flipped, newerFile: newer} {
		if err := os.WriteFile(name, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(t.TempDir(), "r1")
	raftAddr := testutil.FreeAddr(t)
	restoreArgs := func(f string, extra ...string) []string {
		return append([]string{"restore", f, "--data-dir", target, "--node-id", "r1", "--raft-addr", raftAddr}, extra...)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{restoreArgs(damaged), 1, "damaged"},
		{restoreArgs(newerFile), 1, "format version 99"},
		{restoreArgs(filepath.Join(dir, "missing")), 1, "no such file"},
		{restoreArgs(file, "--advance", "5", "--advance-for", "1s"), 2, "exclude each other"},
		{restoreArgs(file, "--advance", "5", "--safety", "3"), 2, "--advance is exact"},
		{restoreArgs(file, "--safety", "0.5"), 2, "at least 1"},
		{restoreArgs(file, "--snowflake-margin", "0s"), 2, "--snowflake-margin is 0s"},
		{[]string{"restore", file, "--node-id", "r1"}, 2, "--data-dir is required"},
	} {
		r := runOrdinal(t, nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("ordinal %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.want)
		}
		if _, err := os.Stat(target); !os.IsNotExist(err) {
			t.Fatalf("ordinal %s left %s behind", strings.Join(tc.args, " "), target)
		}
	}

	restoredAt := time.Now()
	out = mustRun(t, nil, restoreArgs(file, "--snowflake-margin", "90s")...)
	t.Logf("ordinal restore:\n%s", out)
	// Snowflake time starts --snowflake-margin past the restore's clock.
	if m := regexp.MustCompile(`every worker's time starts after (\S+) \(--snowflake-margin 1m30s\)`).FindStringSubmatch(out); m == nil {
		t.Errorf("restore output lacks the Snowflake time floor:\n%s", out)
	} else if at, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
		t.Errorf("Snowflake time floor %q: %v", m[1], err)
	} else if d := at.Sub(restoredAt); d < 90*time.Second || d > 90*time.Second+time.Minute {
		t.Errorf("Snowflake time floor %s is %v past the restore's start; want --snowflake-margin 90s past its clock", m[1], d)
	}
	for _, want := range []string{"new cluster", "node r1, peer address " + raftAddr, "STORE", "default", "billing", "SMALLEST ADVANCE",
		"keys not in the backup (created after it) start above", "ordinal serve --data-dir " + target} {
		if !strings.Contains(out, want) {
			t.Errorf("restore output lacks %q:\n%s", want, out)
		}
	}
	if r := runOrdinal(t, nil, restoreArgs(file)...); r.code != 1 || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("a second restore into %s: exit %d, stderr %q", target, r.code, r.stderr)
	}
	if out := mustRun(t, nil, "check", "--data-dir", target); out == "" {
		t.Error("ordinal check printed nothing for the restored directory")
	}

	// The restored node resumes as the leader of a new cluster; a second
	// node joins it.
	g1, g2 := testutil.FreeAddr(t), testutil.FreeAddr(t)
	startServe(t, g1, nil, "--node-id", "r1", "--data-dir", target, "--grpc-addr", g1, "--raft-addr", raftAddr)
	startServe(t, g2, nil, "--node-id", "r2", "--data-dir", filepath.Join(t.TempDir(), "r2"), "--grpc-addr", g2,
		"--raft-addr", testutil.FreeAddr(t), "--join", raftAddr)
	for _, addr := range []string{g1, g2} {
		for _, k := range append(keys, late) {
			for _, mode := range []string{"strong", "weak"} {
				args := []string{"next", "--addr", addr, "--mode", mode, "--timeout", "15s", k.name}
				if k.store != "" {
					args = append(args, "--store", k.store)
				}
				got, err := strconv.ParseInt(strings.TrimSpace(mustRun(t, nil, args...)), 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				if got <= high[k] {
					t.Errorf("%s %s %v: %d from the restored cluster, but %d was handed out before", addr, mode, k, got, high[k])
				}
			}
		}
	}
}
