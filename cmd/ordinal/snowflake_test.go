package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/internal/testutil"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// TestSnowflakeCommands serves Snowflake stores from the binary, as a user
// would: next hands out IDs that decode (here and on the node) to about
// now, worker 0 and a counting sequence, in the store's layout; a counter
// store is refused by decode, and bad flags are usage errors.
func TestSnowflakeCommands(t *testing.T) {
	t.Parallel()
	grpcAddr := testutil.FreeAddr(t)
	startServe(t, grpcAddr, nil, "--node-id", "n1", "--data-dir", t.TempDir(), "--grpc-addr", grpcAddr, "--raft-addr", testutil.FreeAddr(t),
		"--snowflake-stores", "orders,events:milliseconds")

	for _, tc := range []struct {
		store  string
		layout snowflake.Layout
		name   string
	}{{"orders", snowflake.Seconds, "seconds"}, {"events", snowflake.Milliseconds, "milliseconds"}} {
		t.Run(tc.store, func(t *testing.T) {
			var ids []string
			for range 2 {
				ids = append(ids, strings.TrimSpace(mustRun(t, nil, "next", "--addr", grpcAddr, "--store", tc.store, "k")))
			}
			byNode := mustRun(t, nil, "decode", "--addr", grpcAddr, "--store", tc.store, ids[0], ids[1])
			here := mustRun(t, nil, "decode", "--layout", tc.name, ids[0], ids[1])
			if byNode != here {
				t.Fatalf("the node decodes\n%s\nthe layout here\n%s", byNode, here)
			}
			lines := strings.Split(strings.TrimSpace(here), "\n")
			if len(lines) != 2 {
				t.Fatalf("decode printed %q, want a line per ID", here)
			}
			for i, line := range lines {
				var id uint64
				var ts string
				var worker, seq uint64
				if _, err := fmt.Sscanf(line, "%d\ttime=%s\tworker=%d\tsequence=%d", &id, &ts, &worker, &seq); err != nil {
					t.Fatalf("decode line %q: %v", line, err)
				}
				when, err := time.Parse(time.RFC3339Nano, ts)
				if err != nil {
					t.Fatal(err)
				}
				p, _ := tc.layout.Decode(id)
				if fmt.Sprint(id) != ids[i] || worker != 0 || seq != p.Seq || !when.Equal(p.Time) || time.Since(when) > time.Minute || time.Until(when) > 15*time.Second {
					t.Fatalf("decode line %q: id %d, time %s, worker %d, sequence %d; want %s, about now, worker 0, %+v", line, id, when, worker, seq, ids[i], p)
				}
			}
		})
	}

	if r := runOrdinal(t, nil, "decode", "--addr", grpcAddr, "--store", "default", "5"); r.code == 0 || !strings.Contains(r.stderr, "not a Snowflake store") {
		t.Errorf("decode of a counter store: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"decode"}, {"decode", "--layout", "seconds", "-5"}, {"decode", "--layout", "time=70,worker=1,seq=1", "5"}} {
		if r := runOrdinal(t, nil, args...); r.code != 2 {
			t.Errorf("ordinal %s: exit %d, want 2 (usage)\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if r := runOrdinal(t, nil, "serve", "--snowflake-stores", "x:hours"); r.code != 2 || !strings.Contains(r.stderr, "seconds or milliseconds") {
		t.Errorf("serve with an unknown layout: exit %d, stderr %q", r.code, r.stderr)
	}
}
