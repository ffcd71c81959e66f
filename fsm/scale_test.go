package fsm

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// Budgets of TestKeysAtScale: issue #11's targets for 10M keys, and a
// page of a listing. The time budgets are checked only when make bench
// runs it (ORDINAL_SCALE_KEYS set, on a machine doing nothing else): make
// test runs the same code paths for correctness and memory, but a timed
// assertion there would measure the load of the other tests.
const (
	scaleHeapPerKey  = 100.0 // bytes
	scaleSnapshot    = 10 * time.Second
	scaleRestore     = 10 * time.Second
	scalePage        = 50 * time.Millisecond
	scalePageSize    = 1000
	scalePagesTimed  = 20
	defaultScaleKeys = 50_000
)

// scaleKeys is the number of keys TestKeysAtScale builds: ORDINAL_SCALE_KEYS
// (make bench sets 10000000), else a number small enough for make test,
// which runs the same code paths.
func scaleKeys(t *testing.T) int {
	s := os.Getenv("ORDINAL_SCALE_KEYS")
	if s == "" {
		return defaultScaleKeys
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1000 {
		t.Fatalf("ORDINAL_SCALE_KEYS=%q: want a number of keys, at least 1000", s)
	}
	return n
}

// TestKeysAtScale measures what n keys cost, through the production paths:
// the heap they take when created by Apply (1000 floors per log entry,
// names key-0000000 and up, as in the other large-state tests) and when
// loaded by Restore; Snapshot (the part that blocks Apply) and Persist;
// Restore; and a page of a listing, at the start, in the middle and with a
// prefix. It logs one SCALE line that make bench turns into a table, and
// fails when a budget is exceeded. It must not run in parallel with other
// tests, which would pollute the heap and time measurements.
func TestKeysAtScale(t *testing.T) {
	n := scaleKeys(t)
	timed := os.Getenv("ORDINAL_SCALE_KEYS") != ""
	m := map[string]string{"keys": strconv.Itoa(n)}
	heapBefore := heapAlloc()

	start := time.Now()
	f := New(nil)
	fillKeys(t, f, "default", n)
	m["fill_s"] = seconds(time.Since(start))
	perKey := float64(heapAlloc()-heapBefore) / float64(n)
	m["heap_per_key_apply"] = fmt.Sprintf("%.1f", perKey)
	if perKey > scaleHeapPerKey {
		t.Errorf("%d keys created by Apply: %.1f bytes of heap per key, budget %.0f", n, perKey, scaleHeapPerKey)
	}

	// Pages, on the FSM built by Apply.
	middle := Key{Store: "default", Name: keyName(n / 2)}
	pages := []struct {
		name string
		q    KeysQuery
	}{
		{"first", KeysQuery{Limit: scalePageSize}},
		{"middle", KeysQuery{After: &middle, Limit: scalePageSize}},
		// The first six bytes of the middle key match some tenth of
		// the keys around it.
		{"prefix", KeysQuery{Store: "default", Prefix: middle.Name[:6], Limit: scalePageSize}},
	}
	for _, p := range pages {
		start := time.Now()
		for range scalePagesTimed {
			if keys, _ := f.Keys(p.q); len(keys) == 0 {
				t.Fatalf("page %s listed nothing", p.name)
			}
		}
		per := time.Since(start) / scalePagesTimed
		m["page_"+p.name+"_ms"] = fmt.Sprintf("%.3f", float64(per)/1e6)
		if timed && per > scalePage {
			t.Errorf("a page of %d keys (%s) of %d took %v, budget %v", scalePageSize, p.name, n, per, scalePage)
		}
	}

	// Snapshot: Snapshot() holds up Apply; Persist sorts and writes.
	start = time.Now()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	m["capture_s"] = seconds(time.Since(start))
	sink := &memSink{}
	sink.buf.Grow(16 * n)
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	took := time.Since(start)
	m["snapshot_s"] = seconds(took)
	m["snapshot_mb"] = fmt.Sprintf("%.1f", float64(sink.buf.Len())/1e6)
	if timed && took > scaleSnapshot {
		t.Errorf("snapshot of %d keys took %v, budget %v", n, took, scaleSnapshot)
	}

	// Restore, into a new FSM with the old one gone.
	data := sink.buf.Bytes()
	f, snap, sink = nil, nil, nil
	heapBefore = heapAlloc()
	start = time.Now()
	g := New(nil)
	if err := restoreBytes(g, data); err != nil {
		t.Fatal(err)
	}
	took = time.Since(start)
	m["restore_s"] = seconds(took)
	if timed && took > scaleRestore {
		t.Errorf("restore of %d keys took %v, budget %v", n, took, scaleRestore)
	}
	perKey = float64(heapAlloc()-heapBefore) / float64(n)
	runtime.KeepAlive(data)
	m["heap_per_key_restore"] = fmt.Sprintf("%.1f", perKey)
	if perKey > scaleHeapPerKey {
		t.Errorf("%d keys loaded by Restore: %.1f bytes of heap per key, budget %.0f", n, perKey, scaleHeapPerKey)
	}
	if g.Len() != n || g.HighWater(middle) != uint64(n/2)+1 {
		t.Errorf("restored Len %d, %s at %d; want %d keys, %d", g.Len(), middle.Name, g.HighWater(middle), n, n/2+1)
	}
	if keys, _ := g.Keys(KeysQuery{After: &middle, Limit: 1}); len(keys) != 1 || keys[0].Name != keyName(n/2+1) {
		t.Errorf("restored FSM lists %v after %s", keys, middle.Name)
	}

	line := "SCALE"
	for _, k := range []string{"keys", "heap_per_key_apply", "heap_per_key_restore", "capture_s", "snapshot_s", "snapshot_mb",
		"restore_s", "page_first_ms", "page_middle_ms", "page_prefix_ms", "fill_s"} {
		line += " " + k + "=" + m[k]
	}
	t.Log(line)
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
