package e2e

import (
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/internal/proccluster"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// TestSnowflakeSkewedClockKillNine runs a Snowflake store on three
// processes, one of whose clocks runs 3 s behind the others (an injected
// clock source), under STRONG and WEAK load on every node, then kills the
// leader and the skewed node with SIGKILL and restarts them: no ID repeats,
// each node's WEAK IDs increase, and STRONG IDs are linearizable
// (porcupine and the exact check).
func TestSnowflakeSkewedClockKillNine(t *testing.T) {
	c := proccluster.StartWith(t, 3, func(id string) []string {
		args := []string{"--snowflake-stores", "sf:milliseconds", "--snowflake-lease", "1s", "--snowflake-max-drift", "8s"}
		if id == "n2" {
			args = append(args, "--snowflake-clock-offset", "-3s")
		}
		return args
	})
	l := startStoreLoad(c, "sf", 4, 1, "orders-")
	l.progress(t, 300, "before faults")

	leader := c.Leader()
	leader.Kill()
	c.Leader(leader)
	l.progress(t, 300, "after kill -9 of the leader")
	leader.Restart()
	l.progress(t, 200, "after the old leader restarted")

	skewed := c.Nodes[1]
	skewed.Kill()
	l.progress(t, 200, "after kill -9 of the skewed node")
	skewed.Restart()
	l.progress(t, 200, "after the skewed node restarted")
	ops := l.finish(t)

	// The IDs are Snowflake IDs: they decode to about now, and every node
	// stamped its own worker ID.
	workers := map[uint64]string{}
	for _, op := range ops {
		if op.Err != nil || op.Strong {
			continue
		}
		p, err := snowflake.Milliseconds.Decode(uint64(op.First))
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(p.Time); d < -15*time.Second || d > time.Minute {
			t.Fatalf("%s stamped %s, %v from now", op.Node, p.Time, d)
		}
		if other, ok := workers[p.Worker]; ok && other != op.Node {
			t.Fatalf("worker %d stamped by %s and %s", p.Worker, other, op.Node)
		}
		workers[p.Worker] = op.Node
	}
	if len(workers) != 3 {
		t.Fatalf("WEAK IDs came from workers %v, want one per node", workers)
	}
}
