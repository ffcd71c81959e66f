package fsm

import (
	"hash/maphash"
	"iter"
)

// keyMap holds the high-water marks of one store's keys: name -> mark.
//
// A store of up to shardAt keys is one Go map. A larger one is keyShards
// maps, each holding the names of one hash bucket. The split exists for
// Restore (see DESIGN.md, "At 10M keys"): filling one map of 10M keys puts
// every insert on a random part of a 400 MB table, a cache and TLB miss or
// two, and took 7 s of the 9 s a restore took. Filled a shard at a time,
// each insert lands in a table a few megabytes large. Lookups cost a hash
// of the name more; iteration and memory are the same.
type keyMap struct {
	shards []map[string]uint64 // 1 or keyShards
}

const (
	keyShards = 256
	shardAt   = 1 << 16
)

// shardSeed picks the shard of a name. The layout is this process's own
// (snapshots are sorted by name), so a random seed is fine.
var shardSeed = maphash.MakeSeed()

// newKeyMap returns an empty keyMap sized for hint keys.
func newKeyMap(hint int) *keyMap {
	if hint < shardAt {
		return &keyMap{shards: []map[string]uint64{make(map[string]uint64, hint)}}
	}
	m := &keyMap{shards: make([]map[string]uint64, keyShards)}
	per := hint / keyShards
	for i := range m.shards {
		m.shards[i] = make(map[string]uint64, per)
	}
	return m
}

// shardOf returns the index of name's shard among n.
func shardOf(name string, n int) int {
	if n == 1 {
		return 0
	}
	return int(maphash.String(shardSeed, name) % uint64(n))
}

// get returns name's mark, 0 when it has none or m is nil.
func (m *keyMap) get(name string) uint64 {
	if m == nil {
		return 0
	}
	return m.shards[shardOf(name, len(m.shards))][name]
}

// has reports whether name has a mark.
func (m *keyMap) has(name string) bool {
	if m == nil {
		return false
	}
	_, ok := m.shards[shardOf(name, len(m.shards))][name]
	return ok
}

// set gives name the mark hw. For a name it did not hold, it stores
// intern(name) in its place, and reports the stored name and true.
func (m *keyMap) set(name string, hw uint64, intern func(string) string) (string, bool) {
	s := m.shards[shardOf(name, len(m.shards))]
	before := len(s)
	s[name] = hw
	if len(s) == before {
		return name, false
	}
	// A new key: keep the interned copy, not the caller's string.
	delete(s, name)
	name = intern(name)
	s[name] = hw
	if len(m.shards) == 1 && len(s) >= shardAt {
		m.split()
	}
	return name, true
}

// put adds name -> hw to shard i, for Restore, which knows name is new.
func (m *keyMap) put(i int, name string, hw uint64) {
	m.shards[i][name] = hw
}

// split spreads a single map over keyShards maps, once a store reaches
// shardAt keys (about 10 ms, once).
func (m *keyMap) split() {
	one := m.shards[0]
	m.shards = make([]map[string]uint64, keyShards)
	for i := range m.shards {
		m.shards[i] = make(map[string]uint64, len(one)/keyShards)
	}
	for name, hw := range one {
		m.shards[shardOf(name, keyShards)][name] = hw
	}
}

// Len returns the number of keys.
func (m *keyMap) Len() int {
	if m == nil {
		return 0
	}
	n := 0
	for _, s := range m.shards {
		n += len(s)
	}
	return n
}

// all yields every name and mark, in no particular order.
func (m *keyMap) all() iter.Seq2[string, uint64] {
	return func(yield func(string, uint64) bool) {
		if m == nil {
			return
		}
		for _, s := range m.shards {
			for name, hw := range s {
				if !yield(name, hw) {
					return
				}
			}
		}
	}
}
