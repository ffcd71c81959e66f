package fsm

import (
	"runtime"
	"testing"
)

// TestMemoryPerKey enforces the memory budget of under 100 bytes of heap
// per key for short key names in one store. Keys are inserted through
// Apply, the production path, so retained decode buffers or oversized key
// strings would show up here. It must not run in parallel with other
// tests, which would pollute the heap measurement.
func TestMemoryPerKey(t *testing.T) {
	const n, budget = 200_000, 100.0
	before := heapAlloc()

	f := New(nil)
	fillKeys(t, f, "default", n)

	after := heapAlloc()
	runtime.KeepAlive(f)
	if f.Len() != n {
		t.Fatalf("Len = %d, want %d", f.Len(), n)
	}
	perKey := (float64(after) - float64(before)) / n
	t.Logf("%d keys: %.1f bytes of heap per key", n, perKey)
	if perKey >= budget {
		t.Errorf("%.1f bytes of heap per key, budget is under %.0f", perKey, budget)
	}
}

// TestMemoryPerKeyAfterRestore checks the same budget for state built by
// Restore, whose maps are presized and whose strings come from the
// snapshot reader.
func TestMemoryPerKeyAfterRestore(t *testing.T) {
	const n, budget = 200_000, 100.0
	src := New(nil)
	fillKeys(t, src, "default", n)
	data := snapshotBytes(t, src) // src is dead from here on.
	before := heapAlloc()

	f := New(nil)
	if err := restoreBytes(f, data); err != nil {
		t.Fatal(err)
	}

	after := heapAlloc()
	runtime.KeepAlive(f)
	runtime.KeepAlive(data)
	perKey := (float64(after) - float64(before)) / n
	t.Logf("%d restored keys: %.1f bytes of heap per key", n, perKey)
	if perKey >= budget {
		t.Errorf("%.1f bytes of heap per key, budget is under %.0f", perKey, budget)
	}
}

// heapAlloc returns the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
