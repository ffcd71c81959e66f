package alloc

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/ordinal-dev/ordinal/fsm"
)

// poolBytesBudget bounds the allocator's memory per key in use (one mode),
// documented in DESIGN.md ("Memory per key").
const poolBytesBudget = 2048

// TestMemoryPerKeyInUse measures what the allocator holds for a key it has
// served, on top of the store's own state: the key's pool with its ranges
// and the map entry that finds it. The keys' state in the store is made
// first, so that only the allocator's share is measured.
func TestMemoryPerKeyInUse(t *testing.T) {
	const n = 20_000
	b := newMemBackend()
	keys := make([]fsm.Key, n)
	for i := range keys {
		keys[i] = fsm.Key{Store: "default", Name: fmt.Sprintf("key-%06d", i)}
		if _, _, err := b.Reserve(context.Background(), keys[i], 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	a := newTestAllocator(t, b, Config{})
	before := heapInUse()
	for _, k := range keys {
		if _, err := a.Next(testCtx(t), k, Weak, 1); err != nil {
			t.Fatal(err)
		}
	}
	perKey := float64(heapInUse()-before) / n
	t.Logf("allocator memory per key in use (WEAK): %.0f bytes", perKey)
	if perKey > poolBytesBudget {
		t.Errorf("%.0f bytes per key in use, budget %d", perKey, poolBytesBudget)
	}
	if a.Pools() != n {
		t.Fatalf("%d pools, want %d", a.Pools(), n)
	}
	runtime.KeepAlive(a)
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
