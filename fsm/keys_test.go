package fsm

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// flatten returns the names of s in block order.
func (s *sortedNames) flatten() []string {
	var out []string
	for _, b := range s.blocks {
		out = append(out, b...)
	}
	return out
}

// checkSorted fails unless s holds exactly want (sorted, unique) and its
// blocks keep their invariants.
func checkSorted(t *testing.T, s *sortedNames, want []string) {
	t.Helper()
	for i, b := range s.blocks {
		if len(b) == 0 || len(b) > maxBlock {
			t.Fatalf("block %d holds %d names, want 1..%d", i, len(b), maxBlock)
		}
	}
	got := s.flatten()
	if s.Len() != len(want) || !slices.Equal(got, want) {
		t.Fatalf("names (Len %d) = %.10q..., want %d names %.10q...", s.Len(), got, len(want), want)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1] >= got[i] {
			t.Fatalf("names not strictly ascending at %d: %q, %q", i, got[i-1], got[i])
		}
	}
}

func TestSortedNamesInsert(t *testing.T) {
	const n = 5000 // about ten blocks, so that blocks split and grow
	ascending := make([]string, n)
	for i := range ascending {
		ascending[i] = fmt.Sprintf("k%05d", i)
	}
	shuffled := slices.Clone(ascending)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	tests := []struct {
		name  string
		order []string
	}{
		{"empty", nil},
		{"one", []string{""}},
		{"ascending", ascending},
		{"descending", reversed(ascending)},
		{"shuffled", shuffled},
		{"evens then odds", append(everyOther(ascending, 0), everyOther(ascending, 1)...)},
		{"binary and prefixes", []string{"a", "", "a\x00", "\xff", "a\x00\x00", "ab", "\x00", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sortedNames
			for _, x := range tt.order {
				s.insert(x)
			}
			checkSorted(t, &s, slices.Sorted(slices.Values(tt.order)))
		})
	}
}

// reversed returns a reversed copy of s.
func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

// everyOther returns s[start], s[start+2], ...
func everyOther(s []string, start int) []string {
	var out []string
	for i := start; i < len(s); i += 2 {
		out = append(out, s[i])
	}
	return out
}

func TestSortedNamesAppendedInOrderFillBlocks(t *testing.T) {
	var s sortedNames
	for i := range 10 * maxBlock {
		s.insert(fmt.Sprintf("k%06d", i))
	}
	for i, b := range s.blocks {
		if len(b) != maxBlock {
			t.Fatalf("block %d holds %d names; names appended in order should fill blocks to %d", i, len(b), maxBlock)
		}
	}
}

func TestSortedNamesSeek(t *testing.T) {
	var s sortedNames
	for _, x := range []string{"b", "d", "f"} {
		s.insert(x)
	}
	tests := []struct {
		x     string
		after bool
		want  string // "" when none
	}{
		{"a", false, "b"},
		{"b", false, "b"},
		{"b", true, "d"},
		{"c", true, "d"},
		{"f", false, "f"},
		{"f", true, ""},
		{"g", false, ""},
	}
	for _, tt := range tests {
		bi, i := s.seek(tt.x, tt.after)
		got := ""
		s.scan(bi, i, func(name string) bool { got = name; return false })
		if got != tt.want {
			t.Errorf("seek(%q, after=%v) lands on %q, want %q", tt.x, tt.after, got, tt.want)
		}
	}
}

// checkIndex fails unless f's sorted names hold exactly the keys and
// stores of its maps.
func checkIndex(t *testing.T, f *FSM) {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	var stores []string
	for store, m := range f.stores {
		stores = append(stores, store)
		names := f.order[store]
		if names == nil {
			t.Fatalf("store %q has no sorted names", store)
		}
		var want []string
		for name := range m.all() {
			want = append(want, name)
		}
		slices.Sort(want)
		checkSorted(t, names, want)
	}
	slices.Sort(stores)
	checkSorted(t, &f.storeOrder, stores)
	if len(f.order) != len(f.stores) {
		t.Fatalf("%d stores indexed, %d held", len(f.order), len(f.stores))
	}
}

// allKeys returns every key of f, sorted by store then name: the
// reference the listing tests compare Keys with.
func allKeys(f *FSM) []KeyMark {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []KeyMark
	for store, m := range f.stores {
		for name, hw := range m.all() {
			out = append(out, KeyMark{Key: Key{Store: store, Name: name}, HighWater: hw})
		}
	}
	slices.SortFunc(out, compareMarks)
	return out
}

func compareMarks(a, b KeyMark) int {
	if c := strings.Compare(a.Store, b.Store); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// listingFSM holds 3000 keys over three stores, including names that are
// prefixes of one another and an empty name.
func listingFSM(t *testing.T) *FSM {
	f := New(nil)
	var ops []Op
	for i := range 1000 {
		for _, store := range []string{"orders", "default", "users"} {
			name := fmt.Sprintf("%s-%d", []string{"a", "ab", "b"}[i%3], i)
			ops = append(ops, floor(store, name, uint64(i)+1))
		}
	}
	ops = append(ops, floor("default", "", 7), floor("default", "a", 8))
	applyLog(t, f, 1, Command{Ops: ops})
	checkIndex(t, f)
	return f
}

func TestKeys(t *testing.T) {
	f := listingFSM(t)
	all := allKeys(f)
	ref := func(q KeysQuery) ([]KeyMark, bool) {
		var out []KeyMark
		for _, k := range all {
			if (q.Store != "" && k.Store != q.Store) || !strings.HasPrefix(k.Name, q.Prefix) {
				continue
			}
			if q.After != nil && compareMarks(k, KeyMark{Key: *q.After}) <= 0 {
				continue
			}
			out = append(out, k)
		}
		if len(out) > q.Limit {
			return out[:q.Limit], true
		}
		return out, false
	}
	at := func(store, name string) *Key { return &Key{Store: store, Name: name} }
	tests := []struct {
		name string
		q    KeysQuery
	}{
		{"everything", KeysQuery{Limit: 10000}},
		{"first page", KeysQuery{Limit: 10}},
		{"one store", KeysQuery{Store: "users", Limit: 10000}},
		{"unknown store", KeysQuery{Store: "nope", Limit: 10}},
		{"prefix in every store", KeysQuery{Prefix: "ab-", Limit: 10000}},
		{"prefix that is a whole name", KeysQuery{Store: "default", Prefix: "a", Limit: 10000}},
		{"prefix matching nothing", KeysQuery{Prefix: "zz", Limit: 10}},
		{"after the empty name", KeysQuery{Store: "default", After: at("default", ""), Limit: 5}},
		{"after a key, across stores", KeysQuery{After: at("default", "b-998"), Limit: 10}},
		{"after a key not held", KeysQuery{After: at("orders", "aa"), Limit: 10}},
		{"after a store not held", KeysQuery{After: at("e", "x"), Limit: 10}},
		{"after the last key", KeysQuery{After: &all[len(all)-1].Key, Limit: 10}},
		{"after, below the prefix", KeysQuery{Prefix: "b-", After: at("orders", "a-3"), Limit: 10}},
		{"after, above the prefix", KeysQuery{Prefix: "a", After: at("orders", "c"), Limit: 10}},
		{"after an earlier store, one store", KeysQuery{Store: "users", After: at("default", "zzz"), Limit: 3}},
		{"after a later store, one store", KeysQuery{Store: "default", After: at("users", ""), Limit: 3}},
		{"page ends exactly at the last match", KeysQuery{Store: "default", Prefix: "ab-99", Limit: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, more := f.Keys(tt.q)
			want, wantMore := ref(tt.q)
			if !slices.Equal(got, want) || more != wantMore {
				t.Errorf("Keys(%+v) = %d keys %.3v..., more %v; want %d keys %.3v..., more %v", tt.q, len(got), got, more, len(want), want, wantMore)
			}
		})
	}
}

// page lists every key q selects, page by page, and fails on a key
// listed twice or out of order.
func page(t *testing.T, f *FSM, q KeysQuery) []KeyMark {
	t.Helper()
	var out []KeyMark
	for pages := 0; ; pages++ {
		keys, more := f.Keys(q)
		if len(keys) == 0 && more {
			t.Fatalf("empty page says more follow")
		}
		for _, k := range keys {
			if len(out) > 0 && compareMarks(out[len(out)-1], k) >= 0 {
				t.Fatalf("page %d: %v listed after %v", pages, k.Key, out[len(out)-1].Key)
			}
			out = append(out, k)
		}
		if !more {
			return out
		}
		q.After = &keys[len(keys)-1].Key
	}
}

func TestKeysPagesCoverEveryKeyOnce(t *testing.T) {
	f := listingFSM(t)
	all := allKeys(f)
	for _, size := range []int{1, 7, 1000, len(all) - 1, len(all), len(all) + 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			if got := page(t, f, KeysQuery{Limit: size}); !slices.Equal(got, all) {
				t.Errorf("pages of %d listed %d keys, want %d", size, len(got), len(all))
			}
		})
	}
}

// TestKeysPagesWhileKeysAreCreated pages through the keys while another
// goroutine creates keys in every part of the order: every key that
// existed before the listing started is listed, none twice, in order.
func TestKeysPagesWhileKeysAreCreated(t *testing.T) {
	f := listingFSM(t)
	before := allKeys(f)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(3, 4))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			store := []string{"default", "orders", "users", "a-new-store", "zz-new-store"}[r.IntN(5)]
			f.ApplyCommand(Command{Ops: []Op{floor(store, fmt.Sprintf("%c-new-%d", 'a'+r.IntN(3), i), 1)}})
		}
	}()
	for range 5 {
		listed := page(t, f, KeysQuery{Limit: 37})
		seen := make(map[Key]bool, len(listed))
		for _, k := range listed {
			seen[k.Key] = true
		}
		for _, k := range before {
			if !seen[k.Key] {
				t.Errorf("key %v existed throughout but was not listed", k.Key)
			}
		}
	}
	close(stop)
	wg.Wait()
	checkIndex(t, f)
}

func TestIndexAfterRestore(t *testing.T) {
	src := listingFSM(t)
	dst := New(nil)
	applyLog(t, dst, 1, Command{Ops: []Op{floor("old", "gone", 1)}})
	if err := restoreBytes(dst, snapshotBytes(t, src)); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, dst)
	if got, want := page(t, dst, KeysQuery{Limit: 100}), allKeys(src); !slices.Equal(got, want) {
		t.Errorf("restored FSM lists %d keys, want %d", len(got), len(want))
	}
	// Keys created after a restore go into the loaded blocks.
	for i := range 2000 {
		dst.ApplyCommand(Command{Ops: []Op{floor("default", fmt.Sprintf("ab-%d-x", i), 1)}})
	}
	checkIndex(t, dst)
}

func TestKeyNamesAreArenaCopies(t *testing.T) {
	f := New(nil)
	long := strings.Repeat("x", MaxKeyLen)
	// More bytes than the largest chunk, so that chunks fill and grow.
	var names []string
	for i := 0; len(names)*MaxKeyLen < 2*arenaMaxChunk; i++ {
		names = append(names, fmt.Sprintf("%d-%s", i, long)[:MaxKeyLen])
	}
	for _, name := range names {
		buf := []byte(name)
		f.ApplyCommand(Command{Ops: []Op{floor("s", unsafeString(buf), 1)}})
		clear(buf) // the FSM must hold its own copy
	}
	checkIndex(t, f)
	for _, name := range names {
		if f.HighWater(Key{Store: "s", Name: name}) != 1 {
			t.Fatalf("key %.20q... lost", name)
		}
	}
}

func TestMissing(t *testing.T) {
	f := New(nil)
	applyLog(t, f, 1, Command{Ops: []Op{floor("s", "a", 1), floor("s", "b", 2), floor("t", "a", 3)}})
	keys := []Key{{Store: "s", Name: "a"}, {Store: "s", Name: "c"}, {Store: "u", Name: "a"}, {Store: "t", Name: "a"}, {Store: "s", Name: ""}}
	missing := make([]bool, len(keys))
	if held := f.Missing(keys, missing); held != 3 {
		t.Errorf("Missing reports %d keys held, want 3", held)
	}
	if want := []bool{false, true, true, false, true}; !slices.Equal(missing, want) {
		t.Errorf("Missing = %v, want %v", missing, want)
	}
}

func TestSortKeysParallel(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	r := rand.New(rand.NewPCG(5, 6))
	tests := []struct {
		name string
		gen  func(i int) string
	}{
		{"distinct prefixes", func(i int) string { return fmt.Sprintf("%08x", r.Uint32()) }},
		// Most keys share their 16-byte prefix, so the pivot's prefix
		// is held by many keys on both sides of its position.
		{"shared prefix", func(i int) string {
			if i%10 == 0 {
				return fmt.Sprintf("k%d", i)
			}
			return fmt.Sprintf("0123456789abcdef-%d", r.IntN(1<<20))
		}},
		{"one prefix", func(i int) string { return fmt.Sprintf("0123456789abcdef%d", i) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := make([]keyEntry, 2*parallelSortMin)
			names := make([]string, len(keys))
			for i := range keys {
				names[i] = tt.gen(i)
				keys[i] = keyEntry{name: names[i]}
			}
			sortKeysParallel(keys)
			slices.Sort(names)
			for i := range names {
				if keys[i].name != names[i] {
					t.Fatalf("position %d holds %q, want %q", i, keys[i].name, names[i])
				}
			}
		})
	}
}
