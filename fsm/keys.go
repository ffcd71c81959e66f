package fsm

import (
	"hash/maphash"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"unsafe"
)

// Listing keys (see DESIGN.md, "Listing keys"). The maps that hold the
// high-water marks have no order, and sorting millions of keys for every
// page of a listing would cost seconds per page. So the FSM also keeps
// every store's key names, and the store names, in a sortedNames: ascending
// byte order, in blocks of at most maxBlock names. A page starts with two
// binary searches and reads its names in order; creating a key inserts its
// name into one block. The names share their bytes with the map keys, so
// the index costs one string header (16 bytes) per key and a little slack.

const (
	// maxBlock bounds a block. Inserting into a block moves up to this
	// many string headers (8 KiB); a full block splits in two.
	maxBlock = 512
	// loadBlock is how full Restore fills its blocks, leaving room for
	// later inserts before a block must grow or split.
	loadBlock = 448
)

// sortedNames is a set of strings kept in ascending byte order. Blocks
// are never empty, and every name of a block is below every name of the
// next one. The FSM's lock guards it.
type sortedNames struct {
	blocks [][]string
	n      int
}

// Len returns the number of names.
func (s *sortedNames) Len() int { return s.n }

// seek returns the position of the first name at or above x (strictly
// above x when after is set): block bi, offset i. bi == len(s.blocks)
// when there is none.
func (s *sortedNames) seek(x string, after bool) (bi, i int) {
	// The first block whose last name is at or above (above) x holds it.
	bi = sort.Search(len(s.blocks), func(j int) bool {
		last := s.blocks[j][len(s.blocks[j])-1]
		return last > x || (!after && last == x)
	})
	if bi == len(s.blocks) {
		return bi, 0
	}
	b := s.blocks[bi]
	i = sort.Search(len(b), func(j int) bool { return b[j] > x || (!after && b[j] == x) })
	return bi, i
}

// insert adds x, which must not be present (the FSM inserts a name only
// when it creates the key or store). Appending past the last name, the
// common case for names that grow like counters, fills blocks completely;
// an insert elsewhere grows its block by a quarter at a time and splits a
// full one in two.
func (s *sortedNames) insert(x string) {
	s.n++
	if len(s.blocks) == 0 {
		s.blocks = append(s.blocks, make([]string, 1, 16))
		s.blocks[0][0] = x
		return
	}
	bi, i := s.seek(x, false)
	if bi == len(s.blocks) { // above every name: append to the last block
		bi--
		i = len(s.blocks[bi])
	}
	b := s.blocks[bi]
	if len(b) == maxBlock {
		if bi == len(s.blocks)-1 && i == len(b) {
			// Past the end of a full last block: start a new one and
			// leave this one full, so names appended in order cost no
			// slack.
			nb := make([]string, 1, 16)
			nb[0] = x
			s.blocks = append(s.blocks, nb)
			return
		}
		half := len(b) / 2
		left := make([]string, half, half+half/4)
		right := make([]string, len(b)-half, half+half/4)
		copy(left, b[:half])
		copy(right, b[half:])
		s.blocks[bi] = left
		s.blocks = append(s.blocks, nil)
		copy(s.blocks[bi+2:], s.blocks[bi+1:])
		s.blocks[bi+1] = right
		if i > half {
			bi, i = bi+1, i-half
		}
		b = s.blocks[bi]
	}
	if len(b) == cap(b) {
		nb := make([]string, len(b), min(maxBlock, len(b)+len(b)/4+4))
		copy(nb, b)
		b = nb
	}
	b = b[:len(b)+1]
	copy(b[i+1:], b[i:])
	b[i] = x
	s.blocks[bi] = b
}

// appendSorted adds x, which must be above every name held: Restore reads
// names in ascending order and fills blocks to loadBlock.
func (s *sortedNames) appendSorted(x string) {
	s.n++
	if k := len(s.blocks); k > 0 && len(s.blocks[k-1]) < loadBlock {
		s.blocks[k-1] = append(s.blocks[k-1], x)
		return
	}
	b := make([]string, 1, loadBlock)
	b[0] = x
	s.blocks = append(s.blocks, b)
}

// scan calls fn for every name at or after position (bi, i), in order,
// until fn returns false.
func (s *sortedNames) scan(bi, i int, fn func(string) bool) {
	for ; bi < len(s.blocks); bi, i = bi+1, 0 {
		for _, name := range s.blocks[bi][i:] {
			if !fn(name) {
				return
			}
		}
	}
}

// KeyMark is one key and its high-water mark, as Keys lists them.
type KeyMark struct {
	Key
	HighWater uint64
}

// KeysQuery selects the keys Keys lists.
type KeysQuery struct {
	// Store limits the listing to one store; "" lists every store.
	Store string
	// Prefix limits it to key names that start with it.
	Prefix string
	// After, when set, lists only keys after it in (store, name) order:
	// the last key of the previous page.
	After *Key
	// Limit is the most keys to return; at least 1.
	Limit int
}

// Keys returns up to q.Limit of the keys q selects, in ascending byte
// order of store and then name, and whether more follow. A page costs two
// binary searches per store it visits plus a map lookup per key returned,
// however many keys the FSM holds. Paging with After set to the last key
// of the previous page returns every key that existed throughout exactly
// once, since keys are never deleted; keys created meanwhile appear if
// they sort after the page being read.
func (f *FSM) Keys(q KeysQuery) (keys []KeyMark, more bool) {
	limit := max(q.Limit, 1)
	f.mu.RLock()
	defer f.mu.RUnlock()
	// visit lists store's matching keys; it returns false once the page
	// is full and it knows whether more follow.
	visit := func(store string) bool {
		names := f.order[store]
		if names == nil {
			return true
		}
		from, after := q.Prefix, false
		if q.After != nil && q.After.Store == store && q.After.Name >= q.Prefix {
			from, after = q.After.Name, true
		}
		bi, i := names.seek(from, after)
		marks := f.stores[store]
		cont := true
		names.scan(bi, i, func(name string) bool {
			if !strings.HasPrefix(name, q.Prefix) {
				return false
			}
			if len(keys) == limit {
				more, cont = true, false
				return false
			}
			keys = append(keys, KeyMark{Key: Key{Store: store, Name: name}, HighWater: marks.get(name)})
			return true
		})
		return cont
	}
	switch {
	case q.Store != "":
		if q.After == nil || q.After.Store <= q.Store {
			visit(q.Store)
		}
	default:
		bi, i := 0, 0
		if q.After != nil {
			bi, i = f.storeOrder.seek(q.After.Store, false)
		}
		f.storeOrder.scan(bi, i, visit)
	}
	return keys, more
}

// Missing sets missing[i] for each keys[i] that has no high-water mark
// (which an OpReserve, or an OpFloor above 0, would create) and returns
// the number of keys held in all, both read at one instant. missing must
// be as long as keys. The cluster's --max-keys check uses it.
func (f *FSM) Missing(keys []Key, missing []bool) (held int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for i, k := range keys {
		missing[i] = !f.stores[k.Store].has(k.Name)
	}
	return f.keys
}

// indexKey adds the name of k, a key just created, to its store's sorted
// names, and the store's name to the sorted store names if the store is
// new. The caller holds the write lock.
func (f *FSM) indexKey(k Key) {
	names := f.order[k.Store]
	if names == nil {
		if f.order == nil {
			f.order = make(map[string]*sortedNames)
		}
		names = &sortedNames{}
		f.order[k.Store] = names
		f.storeOrder.insert(k.Store)
	}
	names.insert(k.Name)
}

// created finishes set for k, a key it just created (its name already
// the copy in the name arena that the keyMap holds): the key is counted
// and indexed. The caller holds the write lock.
func (f *FSM) created(k Key) {
	f.keys++
	f.indexKey(k)
}

// Name arena. A key name allocated on its own is one small heap object,
// and the garbage collector marks every object in every cycle: with 10M
// keys a full cycle took 3 to 5 s of CPU on the benchmark machine,
// against 0.3 s with the names packed in chunks (see DESIGN.md, "Memory
// per key"). Keys are never deleted and live until Restore replaces the
// whole state, arena included, so packing them wastes nothing; a name is
// never a slice of a buffer that it would pin.
const (
	arenaMinChunk = 1 << 10
	arenaMaxChunk = 1 << 20
)

// nameArena hands out immutable strings backed by large byte chunks. The
// FSM's lock guards it.
type nameArena struct {
	chunk []byte
}

// room makes room for n more bytes in the current chunk, starting a new
// one (twice the last, up to arenaMaxChunk) if needed.
func (a *nameArena) room(n int) {
	if cap(a.chunk)-len(a.chunk) >= n {
		return
	}
	size := min(max(2*cap(a.chunk), arenaMinChunk), arenaMaxChunk)
	a.chunk = make([]byte, 0, max(size, n))
}

// copy returns a copy of s in the arena.
func (a *nameArena) copy(s string) string {
	if s == "" {
		return ""
	}
	a.room(len(s))
	start := len(a.chunk)
	a.chunk = append(a.chunk, s...)
	return unsafe.String(&a.chunk[start], len(s))
}

// copyBytes returns a copy of b in the arena, as a string.
func (a *nameArena) copyBytes(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	a.room(len(b))
	start := len(a.chunk)
	a.chunk = append(a.chunk, b...)
	return unsafe.String(&a.chunk[start], len(b))
}

// bytesField reads a length-prefixed string of at most limit bytes, like
// snapReader.string, but returns its bytes, valid until the next read,
// for the caller to copy where it keeps them.
func (sr *snapReader) bytesField(field string, limit int) []byte {
	n := sr.uvarint(field)
	if sr.err != nil {
		return nil
	}
	if n > uint64(limit) {
		sr.malformed("%s is %d bytes, limit is %d", field, n, limit)
		return nil
	}
	return sr.next(int(n), field)
}

// Filling the maps is most of what Restore costs (keymap.go): an insert
// into a large table is a cache and TLB miss or two, and hashing a name
// read long ago is another. So a large store's pairs are batched per
// shard, with each shard's names copied into an arena of their own: a
// batch then fills one table a few megabytes large from names that lie
// side by side. At 10M keys that took Restore from 8–9 s to 4 s.
const fillBatch = 8192 // pairs per shard inserted at a time

// nameMark is one pair for a mapFiller.
type nameMark struct {
	name string
	hw   uint64
}

// mapFiller fills a keyMap for Restore. Call wait before reading the map.
type mapFiller struct {
	m       *keyMap
	arena   *nameArena   // for a map of one shard
	arenas  []nameArena  // per shard, for a sharded map
	pending [][]nameMark // per shard, for a sharded map
}

// newMapFiller returns a filler for m, whose names of a single-shard map
// go into arena.
func newMapFiller(m *keyMap, arena *nameArena) *mapFiller {
	f := &mapFiller{m: m, arena: arena}
	if n := len(m.shards); n > 1 {
		f.arenas = make([]nameArena, n)
		f.pending = make([][]nameMark, n)
	}
	return f
}

// name copies the name in b, valid until the reader's next read, and
// returns it and its shard.
func (f *mapFiller) name(b []byte) (string, int) {
	if f.pending == nil {
		return f.arena.copyBytes(b), 0
	}
	i := int(maphash.Bytes(shardSeed, b) % uint64(len(f.pending)))
	return f.arenas[i].copyBytes(b), i
}

// add inserts name -> hw into shard i, now or with its shard's batch.
func (f *mapFiller) add(i int, name string, hw uint64) {
	if f.pending == nil {
		f.m.put(i, name, hw)
		return
	}
	if f.pending[i] == nil {
		f.pending[i] = make([]nameMark, 0, fillBatch)
	}
	f.pending[i] = append(f.pending[i], nameMark{name, hw})
	if len(f.pending[i]) == fillBatch {
		f.flush(i)
	}
}

// flush inserts shard i's batch.
func (f *mapFiller) flush(i int) {
	for _, e := range f.pending[i] {
		f.m.put(i, e.name, e.hw)
	}
	f.pending[i] = f.pending[i][:0]
}

// wait inserts what is left.
func (f *mapFiller) wait() {
	for i := range f.pending {
		f.flush(i)
	}
	f.pending = nil
}

// parallelSortMin is the smallest store whose keys sortKeysParallel
// splits between two goroutines.
const parallelSortMin = 1 << 16

// sortKeysParallel sorts keys as sortKeys does, on two goroutines for a
// large store: sorting was most of what Persist costs at 10M keys (about
// 4 of 7 s). It partitions the keys around a sampled pivot prefix, so that
// every key of the lower part sorts before every key of the upper part,
// and sorts the parts at once. Keys with the pivot's prefix all go to the
// upper part, where sortKeys orders them by the full name.
func sortKeysParallel(keys []keyEntry) {
	if len(keys) < parallelSortMin || runtime.GOMAXPROCS(0) < 2 {
		sortKeys(keys)
		return
	}
	setPrefixes(keys)
	// The median prefix of 1023 keys spread over the slice (the order is
	// the maps' iteration order, which is random enough).
	samples := make([]keyEntry, 0, 1023)
	for i := range cap(samples) {
		samples = append(samples, keys[i*len(keys)/cap(samples)])
	}
	slices.SortFunc(samples, comparePrefix)
	pivot := samples[len(samples)/2]
	// Lomuto partition: keys[:lo] have a prefix below the pivot's.
	lo := 0
	for i := range keys {
		if comparePrefix(keys[i], pivot) < 0 {
			keys[i], keys[lo] = keys[lo], keys[i]
			lo++
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sortPrefixed(keys[:lo])
	}()
	sortPrefixed(keys[lo:])
	wg.Wait()
}
