package fsm

// ForEachKey calls fn for every key with a non-zero high-water mark, in no
// particular order, until fn returns false. It holds the read lock
// throughout, so the keys it reports are one consistent state, and Apply
// waits until it returns: fn must not call back into the FSM's writers.
// It is meant for tools working on an FSM that no Raft instance drives,
// such as one restored from a backup (package backup).
func (f *FSM) ForEachKey(fn func(k Key, hw uint64) bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for store, keys := range f.stores {
		for name, hw := range keys.all() {
			if !fn(Key{Store: store, Name: name}, hw) {
				return
			}
		}
	}
}
