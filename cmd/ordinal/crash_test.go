package main

import (
	"context"
	"github.com/ordinal-dev/ordinal/internal/testutil"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/ordinal-dev/ordinal/client"
)

// crashKey is the key the restart test takes IDs of, in both modes; a key
// has one counter shared by the modes, so every ID of either mode handed
// out after a restart must be above every ID of either mode before it.
const crashKey = "crash_key"

// TestServeRestartNeverRepeatsIDs is the durability acceptance test: a node
// killed with SIGKILL, or stopped with SIGTERM, and started again on the
// same data directory hands out only IDs above every ID it handed out
// before, in both modes.
func TestServeRestartNeverRepeatsIDs(t *testing.T) {
	t.Parallel()
	grpcAddr := testutil.FreeAddr(t)
	args := []string{"--node-id", "n1", "--data-dir", t.TempDir(), "--grpc-addr", grpcAddr, "--raft-addr", testutil.FreeAddr(t)}

	p := startServe(t, grpcAddr, nil, args...)
	seen := takeCrashIDs(t, grpcAddr)
	requireUnique(t, seen)

	// SIGKILL runs no shutdown code: only what Raft made durable counts.
	if st := p.signal(t, syscall.SIGKILL); st.Success() {
		t.Fatalf("ordinal serve exited successfully after SIGKILL: %v", st)
	}
	p = startServe(t, grpcAddr, nil, args...)
	seen = takeAbove(t, grpcAddr, "after SIGKILL and restart", seen)

	// SIGTERM is a clean shutdown: it must exit 0 and say it stopped.
	if st := p.signal(t, syscall.SIGTERM); !st.Success() {
		t.Fatalf("ordinal serve exited with %v after SIGTERM, want status 0", st)
	}
	if !hasLogLine(p.stderr.String(), "stopped") {
		t.Fatalf("log of ordinal serve stopped by SIGTERM has no %q line", "stopped")
	}
	startServe(t, grpcAddr, nil, args...)
	takeAbove(t, grpcAddr, "after SIGTERM and restart", seen)
}

// takeAbove takes IDs and fails the test unless every one is above every ID
// in before and none repeats. It returns before plus the new IDs.
func takeAbove(t *testing.T, grpcAddr, when string, before []int64) []int64 {
	t.Helper()
	after := takeCrashIDs(t, grpcAddr)
	if lo, hi := slices.Min(after), slices.Max(before); lo <= hi {
		t.Fatalf("%s: id %d handed out, not above %d handed out before", when, lo, hi)
	}
	all := append(slices.Clone(before), after...)
	requireUnique(t, all)
	return all
}

// takeCrashIDs takes IDs of crashKey through the client package in every
// way a caller can: 50 WEAK and 50 STRONG single IDs and a block of 100 in
// each mode. It returns every ID taken, blocks expanded.
func takeCrashIDs(t *testing.T, grpcAddr string) []int64 {
	t.Helper()
	c, err := client.New(grpcAddr)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()

	var ids []int64
	for _, mode := range []client.Mode{client.Weak, client.Strong} {
		for range 50 {
			id, err := c.NextID(ctx, crashKey, mode)
			if err != nil {
				t.Fatalf("NextID(%s): %v", mode, err)
			}
			ids = append(ids, id)
		}
		const count = 100
		first, err := c.NextIDs(ctx, crashKey, mode, count)
		if err != nil {
			t.Fatalf("NextIDs(%s, %d): %v", mode, count, err)
		}
		for id := first; id < first+count; id++ {
			ids = append(ids, id)
		}
	}
	return ids
}

// hasLogLine reports whether log has a line whose message is msg, in the
// text format ("... ordinal: stopped") or the JSON one.
func hasLogLine(log, msg string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.HasSuffix(strings.TrimSpace(line), " "+msg) || strings.Contains(line, `"@message":"`+msg+`"`) {
			return true
		}
	}
	return false
}

func requireUnique(t *testing.T, ids []int64) {
	t.Helper()
	seen := make(map[int64]int, len(ids))
	for i, id := range ids {
		if j, ok := seen[id]; ok {
			t.Fatalf("id %d handed out twice: as id #%d and #%d", id, j, i)
		}
		seen[id] = i
	}
}
