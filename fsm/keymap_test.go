package fsm

import (
	"fmt"
	"testing"
)

// A store's keyMap splits into shards as it passes shardAt keys; before
// and after, every key keeps one mark, updates find it, and iteration
// yields each key once.
func TestKeyMapSplits(t *testing.T) {
	f := New(nil)
	name := func(i int) string { return fmt.Sprintf("k%07d", i) }
	set := func(from, to int, value uint64) {
		var ops []Op
		for i := from; i < to; i++ {
			ops = append(ops, floor("s", name(i), value+uint64(i)))
			if len(ops) == 1000 || i == to-1 {
				f.ApplyCommand(Command{Ops: ops})
				ops = nil
			}
		}
	}
	const n = shardAt + 5000
	set(0, shardAt-1, 10)
	if got := len(f.stores["s"].shards); got != 1 {
		t.Fatalf("%d shards below shardAt keys, want 1", got)
	}
	set(0, 100, 20) // updates, not keys
	set(shardAt-1, n, 10)
	if got := len(f.stores["s"].shards); got != keyShards {
		t.Fatalf("%d shards at %d keys, want %d", got, n, keyShards)
	}
	set(0, n, 30) // every key again, after the split
	if f.Len() != n || f.stores["s"].Len() != n {
		t.Fatalf("Len %d, keyMap Len %d, want %d", f.Len(), f.stores["s"].Len(), n)
	}
	seen := make(map[string]bool, n)
	for k, hw := range f.stores["s"].all() {
		if seen[k] {
			t.Fatalf("%q yielded twice", k)
		}
		seen[k] = true
		var i int
		fmt.Sscanf(k, "k%d", &i)
		if hw != 30+uint64(i) {
			t.Fatalf("%q at %d, want %d", k, hw, 30+i)
		}
	}
	if len(seen) != n {
		t.Fatalf("all yielded %d keys, want %d", len(seen), n)
	}
	checkIndex(t, f)
	// And through a snapshot: Restore builds the shards directly.
	g := New(nil)
	if err := restoreBytes(g, snapshotBytes(t, f)); err != nil {
		t.Fatal(err)
	}
	if !equalDump(dumpOf(f), dumpOf(g)) || len(g.stores["s"].shards) != keyShards {
		t.Fatalf("restored state differs, or has %d shards", len(g.stores["s"].shards))
	}
	checkIndex(t, g)
}
