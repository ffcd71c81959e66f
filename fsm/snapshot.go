package fsm

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// Snapshot format, versions 1 and 2. Integers are shortest-form uvarints
// and strings are a uvarint length plus bytes, exactly as in commands.
//
//	snapshot  = magic:"ORDS" version:byte(1 or 2)
//	            applied_index:uvarint
//	            cluster_id:string                      ("" if not initialised)
//	            node_count:uvarint  (node_id:string addr:string)*
//	            store_count:uvarint store*
//	            [version 2 only:
//	             snowflake_count:uvarint (store:string layout:string bits:uvarint)*
//	             worker_count:uvarint (worker:uvarint node_id:string incarnation:string free_at:uvarint)*]
//	            crc:uint32 big-endian                 (CRC-32C of all bytes before it)
//	store     = name:string key_count:uvarint (key:string high_water:uvarint)*
//
// Nodes, stores, keys, Snowflake stores and workers are written in strictly
// ascending order (byte order for names), stores are never empty and
// high-water marks are in 1..MaxID. A state without Snowflake stores (and
// so without workers) is written as version 1, anything else as version 2
// with at least one Snowflake store. So a given state has exactly one
// encoding: replicas holding the same state write byte-identical
// snapshots, and Restore can detect duplicates by order alone. Restore
// rejects anything else.
const (
	snapshotMagic = "ORDS"
	// snapshotVersionV1 is the layout without Snowflake stores and
	// workers. Persist still writes it for a state that has none, so
	// nodes that read only version 1 keep working until a Snowflake store
	// is declared.
	snapshotVersionV1 = 1
	// snapshotVersion adds the Snowflake stores and the worker table.
	snapshotVersion = 2

	// snapshotBufSize is the I/O chunk size in both directions. It must
	// exceed the longest single field (a MaxKeyLen key plus its prefix).
	snapshotBufSize = 64 << 10

	// maxPresize caps the room Restore makes in a store's maps from the
	// key count the snapshot gives: larger stores still restore, their
	// maps grow. At 16M keys it covers the 10M keys make bench measures:
	// growing a map from a 2M hint to 10M keys made Restore twice as slow
	// (19.6 s against 9.2 s, when a store was one map), and a store's 256
	// maps left to grow on their own still made it slower by a third or
	// more (2.6-3.5 s against 2.0-2.3 s).
	//
	// But the count is read long before the checksum that vouches for it,
	// so Restore makes that room only as the keys actually read earn it.
	// A store starts as one map with room for restoreRoom keys (or the
	// count, if less); each time the keys read fill the room and the count
	// claims more, the room grows restoreGrowth-fold, up to
	// min(count, maxPresize), and the keys read so far move into the
	// larger maps (keyShards of them once the room reaches shardAt, the
	// shape newKeyMap gives that many keys). A genuine 10M-key store
	// still ends in maps presized for 10M, after moving 4k, 64k and 1M
	// keys, which made no measurable difference at 1M or 10M keys (a few
	// ms at 100k). A damaged count costs room for at most restoreGrowth
	// times the keys the stream really holds (and, past restoreRoom keys,
	// the fill batches of keyShards maps, 48 MiB, as any store of shardAt
	// keys does): a few hundred kilobytes for a short stream. Taking the
	// count at its word made every damaged count allocate 0.9 GB of maps,
	// which stalled FuzzRestore for most of a run and killed it where
	// memory was short.
	maxPresize = 1 << 24
	// restoreRoom is the room for keys a store starts with in Restore,
	// and restoreGrowth the factor the room grows by.
	restoreRoom   = 1 << 12
	restoreGrowth = 16
)

// castagnoli is the CRC-32C table; hash/crc32 uses the CPU's CRC32
// instruction for it where available.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshot is a point-in-time copy of the FSM state. It implements
// raft.FSMSnapshot. Strings are shared with the live maps, which is safe
// because Go strings are immutable.
type snapshot struct {
	applied    uint64
	clusterID  string
	nodes      []nodeEntry
	stores     []storeEntries
	snowflakes []snowflakeEntry
	workers    []Worker
}

// snowflakeEntry is one declared Snowflake store.
type snowflakeEntry struct {
	name string
	SnowflakeStore
}

// nodeEntry is one node metadata record.
type nodeEntry struct{ id, addr string }

// storeEntries holds the keys of one store.
type storeEntries struct {
	name string
	keys []keyEntry
}

// keyEntry is one key and its high-water mark. p0 and p1 hold the first 16
// bytes of the name, zero-padded and big-endian; Persist fills them in so
// that sorting mostly compares integers instead of chasing a pointer to
// each string (see sortKeys).
type keyEntry struct {
	name   string
	hw     uint64
	p0, p1 uint64
}

var _ raft.FSMSnapshot = (*snapshot)(nil)

// capture copies the state into a snapshot. The caller holds at least the
// read lock. All keys go into one backing array, so capturing a million
// keys is one allocation and one pass over the maps.
func (f *FSM) capture() *snapshot {
	s := &snapshot{
		applied:   f.applied,
		clusterID: f.clusterID,
		nodes:     make([]nodeEntry, 0, len(f.nodes)),
		stores:    make([]storeEntries, 0, len(f.stores)),
	}
	for id, addr := range f.nodes {
		s.nodes = append(s.nodes, nodeEntry{id: id, addr: addr})
	}
	all := make([]keyEntry, 0, f.keys)
	for name, m := range f.stores {
		start := len(all)
		for k, hw := range m.all() {
			all = append(all, keyEntry{name: k, hw: hw})
		}
		s.stores = append(s.stores, storeEntries{name: name, keys: all[start:len(all):len(all)]})
	}
	for name, sf := range f.snowflakes {
		s.snowflakes = append(s.snowflakes, snowflakeEntry{name: name, SnowflakeStore: sf})
	}
	for _, w := range f.workers {
		s.workers = append(s.workers, w)
	}
	return s
}

// Persist writes the snapshot to sink and closes it, or cancels the sink if
// anything fails. It runs concurrently with Apply, touching only its own
// copy.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	err := s.writeTo(sink)
	if err == nil {
		err = sink.Close()
	}
	if err != nil {
		if cerr := sink.Cancel(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cancel sink: %w", cerr))
		}
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return nil
}

// Release drops the snapshot's references so the copy can be collected even
// if Raft holds on to the FSMSnapshot.
func (s *snapshot) Release() {
	s.nodes, s.stores, s.snowflakes, s.workers = nil, nil, nil, nil
}

// writeTo sorts the snapshot into canonical order and streams it to w.
// Sorting happens here rather than in Snapshot because Persist runs off the
// FSM goroutine and does not hold up Apply.
func (s *snapshot) writeTo(w io.Writer) error {
	s.sort()
	sw := &snapWriter{w: w, buf: make([]byte, 0, snapshotBufSize+binary.MaxVarintLen64+MaxKeyLen)}
	version := byte(snapshotVersionV1)
	if len(s.snowflakes) > 0 || len(s.workers) > 0 {
		version = snapshotVersion
	}
	sw.buf = append(sw.buf, snapshotMagic...)
	sw.buf = append(sw.buf, version)
	sw.uvarint(s.applied)
	sw.string(s.clusterID)
	sw.uvarint(uint64(len(s.nodes)))
	for _, n := range s.nodes {
		sw.string(n.id)
		sw.string(n.addr)
	}
	sw.uvarint(uint64(len(s.stores)))
	for _, st := range s.stores {
		sw.string(st.name)
		sw.uvarint(uint64(len(st.keys)))
		for _, k := range st.keys {
			sw.string(k.name)
			sw.uvarint(k.hw)
		}
	}
	if version == snapshotVersion {
		sw.uvarint(uint64(len(s.snowflakes)))
		for _, sf := range s.snowflakes {
			sw.string(sf.name)
			sw.string(sf.Layout)
			sw.uvarint(uint64(sf.WorkerBits))
		}
		sw.uvarint(uint64(len(s.workers)))
		for _, w := range s.workers {
			sw.uvarint(w.ID)
			sw.string(w.NodeID)
			sw.string(w.Incarnation)
			sw.uvarint(w.FreeAt)
		}
	}
	return sw.finish()
}

// sort puts nodes, stores and keys in the canonical ascending order.
func (s *snapshot) sort() {
	slices.SortFunc(s.nodes, func(a, b nodeEntry) int { return strings.Compare(a.id, b.id) })
	slices.SortFunc(s.stores, func(a, b storeEntries) int { return strings.Compare(a.name, b.name) })
	for _, st := range s.stores {
		sortKeysParallel(st.keys)
	}
	slices.SortFunc(s.snowflakes, func(a, b snowflakeEntry) int { return strings.Compare(a.name, b.name) })
	slices.SortFunc(s.workers, func(a, b Worker) int { return cmp.Compare(a.ID, b.ID) })
}

// sortKeys sorts keys by name in byte order. Comparing strings directly
// costs a cache miss per comparison once there are millions of keys
// scattered over the heap, which made sorting most of the snapshot time;
// comparing a 16-byte prefix held in the entry first is several times
// faster. The prefix order agrees with byte order because zero padding
// sorts a string before every longer string that starts with it, and ties
// fall back to the full comparison.
func sortKeys(keys []keyEntry) {
	setPrefixes(keys)
	sortPrefixed(keys)
}

// setPrefixes fills in the prefix fields of keys.
func setPrefixes(keys []keyEntry) {
	for i := range keys {
		var b [16]byte
		copy(b[:], keys[i].name)
		keys[i].p0 = binary.BigEndian.Uint64(b[:8])
		keys[i].p1 = binary.BigEndian.Uint64(b[8:])
	}
}

// comparePrefix orders keys by their 16-byte prefixes only.
func comparePrefix(a, b keyEntry) int {
	if c := cmp.Compare(a.p0, b.p0); c != 0 {
		return c
	}
	return cmp.Compare(a.p1, b.p1)
}

// sortPrefixed sorts keys whose prefixes are set.
func sortPrefixed(keys []keyEntry) {
	slices.SortFunc(keys, func(a, b keyEntry) int {
		if c := comparePrefix(a, b); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
}

// snapWriter buffers snapshot output and folds each chunk into the CRC as
// it is written. The first write error is kept and later writes are
// dropped, so writeTo checks once at the end.
type snapWriter struct {
	w   io.Writer
	buf []byte
	crc uint32
	err error
}

// uvarint appends v.
func (sw *snapWriter) uvarint(v uint64) {
	sw.buf = binary.AppendUvarint(sw.buf, v)
	sw.maybeFlush()
}

// string appends a length-prefixed string.
func (sw *snapWriter) string(v string) {
	sw.buf = appendString(sw.buf, v)
	sw.maybeFlush()
}

// maybeFlush writes the buffer out once it reaches the chunk size.
func (sw *snapWriter) maybeFlush() {
	if len(sw.buf) >= snapshotBufSize {
		sw.flush()
	}
}

// flush folds the buffer into the CRC and writes it.
func (sw *snapWriter) flush() {
	if sw.err == nil && len(sw.buf) > 0 {
		sw.crc = crc32.Update(sw.crc, castagnoli, sw.buf)
		_, sw.err = sw.w.Write(sw.buf)
	}
	sw.buf = sw.buf[:0]
}

// finish flushes the body and writes the CRC trailer.
func (sw *snapWriter) finish() error {
	sw.flush()
	if sw.err != nil {
		return sw.err
	}
	_, err := sw.w.Write(binary.BigEndian.AppendUint32(nil, sw.crc))
	return err
}

// restored is fully parsed and verified snapshot state, ready to be swapped
// into an FSM.
type restored struct {
	stores    map[string]*keyMap
	keys      int
	nodes     map[string]string
	clusterID string
	applied   uint64

	// order and storeOrder index the names, built as they are read: a
	// snapshot lists them in ascending order already (keys.go).
	order      map[string]*sortedNames
	storeOrder sortedNames
	names      nameArena // holds the key names

	snowflakes map[string]SnowflakeStore
	workers    map[uint64]Worker
	held       map[string]uint64 // node ID -> the worker it holds
	lastWorker uint64            // the last worker ID read, for the order check
}

// readSnapshot parses and verifies a whole snapshot. Format violations
// return an error wrapping ErrMalformed; read errors are returned wrapped
// as they are, since the data may be fine and the transport at fault.
func readSnapshot(r io.Reader) (*restored, error) {
	sr := &snapReader{r: r, buf: make([]byte, snapshotBufSize)}
	st := &restored{
		snowflakes: make(map[string]SnowflakeStore),
		workers:    make(map[uint64]Worker),
		held:       make(map[string]uint64),
	}
	version := sr.header()
	st.applied = sr.uvarint("applied index")
	st.clusterID = sr.string("cluster id", MaxNodeFieldLen)
	st.nodes = sr.nodes()
	sr.stores(st)
	if version == snapshotVersion {
		sr.snowflakes(st)
		sr.workers(st)
	}
	sr.trailer()
	if sr.err != nil {
		return nil, sr.err
	}
	return st, nil
}

// snapReader parses the snapshot stream from its own buffer, folding every
// consumed byte into the CRC when the buffer is recycled, so the stream is
// read exactly once and never held in memory whole. Like the command
// decoder, the first error is sticky and turns later reads into no-ops.
type snapReader struct {
	r      io.Reader
	buf    []byte
	pos    int    // next unread byte in buf
	end    int    // end of valid data in buf
	hashed int    // buf[:hashed] is already folded into crc
	base   int64  // stream offset of buf[0], for error messages
	crc    uint32 // CRC-32C of the stream up to buf[hashed]
	eof    bool
	err    error
}

// malformed records a format error at the current offset, unless an error
// is already recorded.
func (sr *snapReader) malformed(format string, args ...any) {
	if sr.err == nil {
		sr.err = fmt.Errorf("%w: offset %d: %s", ErrMalformed, sr.base+int64(sr.pos), fmt.Sprintf(format, args...))
	}
}

// fill tries to make at least n bytes available at buf[pos:]. It reports
// false if the stream ends (or fails) first; only a read failure is
// recorded as an error, since the caller decides whether a short stream is
// truncation.
func (sr *snapReader) fill(n int) bool {
	for empty := 0; sr.end-sr.pos < n; {
		if sr.eof || sr.err != nil {
			return false
		}
		sr.compact()
		m, err := sr.r.Read(sr.buf[sr.end:])
		sr.end += m
		switch {
		case errors.Is(err, io.EOF):
			sr.eof = true
		case err != nil:
			sr.err = fmt.Errorf("read: %w", err)
		case m == 0:
			// Guard against readers that return (0, nil) forever.
			if empty++; empty >= 100 {
				sr.err = fmt.Errorf("read: %w", io.ErrNoProgress)
			}
		}
	}
	return true
}

// compact folds the consumed bytes into the CRC and moves the unread bytes
// to the front of the buffer.
func (sr *snapReader) compact() {
	sr.crc = crc32.Update(sr.crc, castagnoli, sr.buf[sr.hashed:sr.pos])
	n := copy(sr.buf, sr.buf[sr.pos:sr.end])
	sr.base += int64(sr.pos)
	sr.pos, sr.hashed, sr.end = 0, 0, n
}

// sum returns the CRC of every byte consumed so far.
func (sr *snapReader) sum() uint32 {
	sr.crc = crc32.Update(sr.crc, castagnoli, sr.buf[sr.hashed:sr.pos])
	sr.hashed = sr.pos
	return sr.crc
}

// next returns the next n bytes, valid until the following read, or nil
// after recording truncation.
func (sr *snapReader) next(n int, field string) []byte {
	if sr.err != nil {
		return nil
	}
	if !sr.fill(n) {
		sr.malformed("truncated reading %s: need %d bytes, have %d", field, n, sr.end-sr.pos)
		return nil
	}
	b := sr.buf[sr.pos : sr.pos+n]
	sr.pos += n
	return b
}

// uvarint reads one canonical uvarint.
func (sr *snapReader) uvarint(field string) uint64 {
	if sr.err != nil {
		return 0
	}
	sr.fill(binary.MaxVarintLen64) // A short read is fine near the end.
	v, n, err := readUvarint(sr.buf[sr.pos:sr.end])
	if err != nil {
		sr.malformed("%s: %v", field, err)
		return 0
	}
	sr.pos += n
	return v
}

// string reads a length-prefixed string of at most limit bytes, checking
// the length before allocating. The result is a fresh allocation of
// exactly that size.
func (sr *snapReader) string(field string, limit int) string {
	n := sr.uvarint(field)
	if sr.err != nil {
		return ""
	}
	if n > uint64(limit) {
		sr.malformed("%s is %d bytes, limit is %d", field, n, limit)
		return ""
	}
	return string(sr.next(int(n), field))
}

// header checks the magic and version and returns the version.
func (sr *snapReader) header() byte {
	if magic := sr.next(len(snapshotMagic), "magic"); magic != nil && string(magic) != snapshotMagic {
		sr.malformed("bad magic %q", magic)
	}
	v := sr.next(1, "version")
	if v == nil {
		return 0
	}
	if v[0] != snapshotVersionV1 && v[0] != snapshotVersion {
		sr.malformed("unsupported snapshot version %d (want %d or %d)", v[0], snapshotVersionV1, snapshotVersion)
	}
	return v[0]
}

// nodes reads the node metadata section.
func (sr *snapReader) nodes() map[string]string {
	count := sr.uvarint("node count")
	nodes := make(map[string]string, min(count, 1024))
	prev := ""
	for i := uint64(0); i < count && sr.err == nil; i++ {
		id := sr.string("node id", MaxNodeFieldLen)
		addr := sr.string("node address", MaxNodeFieldLen)
		switch {
		case sr.err != nil:
		case id == "" || addr == "":
			sr.malformed("node %d has an empty id or address", i)
		case i > 0 && id <= prev:
			sr.malformed("node id %q is not after %q", id, prev)
		}
		nodes[id] = addr
		prev = id
	}
	return nodes
}

// stores reads every store into st: the high-water marks, the total key
// count, and the sorted names of stores and keys.
func (sr *snapReader) stores(st *restored) {
	count := sr.uvarint("store count")
	st.stores = make(map[string]*keyMap, min(count, 1024))
	st.order = make(map[string]*sortedNames, min(count, 1024))
	prev := ""
	for i := uint64(0); i < count && sr.err == nil; i++ {
		name := sr.string("store name", MaxStoreLen)
		if sr.err == nil && i > 0 && name <= prev {
			sr.malformed("store %q is not after %q", name, prev)
		}
		keys, names := sr.keys(name, &st.names)
		st.stores[name] = keys
		st.order[name] = names
		st.storeOrder.appendSorted(name)
		st.keys += keys.Len()
		prev = name
	}
}

// keys reads one store's key count and (key, high-water) pairs, the key
// names into arena.
func (sr *snapReader) keys(store string, arena *nameArena) (*keyMap, *sortedNames) {
	count := sr.uvarint("key count")
	if sr.err == nil && count == 0 {
		sr.malformed("store %q has no keys", store)
	}
	// The room in the maps grows with the keys actually read, not with
	// the count, which the checksum vouches for only at the end (see
	// maxPresize).
	limit := min(count, maxPresize)
	room := min(limit, restoreRoom)
	keys := newKeyMap(int(room)) // one map: restoreRoom < shardAt
	fill := newMapFiller(keys, arena)
	names := &sortedNames{}
	prev := ""
	for i := uint64(0); i < count && sr.err == nil; i++ {
		if i == room && room < limit {
			room = min(limit, room*restoreGrowth)
			fill = grow(keys, fill, int(room), arena)
		}
		name, shard := fill.name(sr.bytesField("key", MaxKeyLen))
		hw := sr.uvarint("high-water mark")
		switch {
		case sr.err != nil:
		case i > 0 && name <= prev:
			sr.malformed("key %q in store %q is not after %q", name, store, prev)
		case hw == 0 || hw > MaxID:
			sr.malformed("key %q in store %q has high-water mark %d outside 1..%d", name, store, hw, MaxID)
		}
		fill.add(shard, name, hw)
		names.appendSorted(name)
		prev = name
	}
	fill.wait()
	return keys, names
}

// snowflakes reads version 2's Snowflake stores into st. There is at
// least one: a state without any is written as version 1.
func (sr *snapReader) snowflakes(st *restored) {
	count := sr.uvarint("snowflake store count")
	if sr.err == nil && count == 0 {
		sr.malformed("version %d snapshot declares no snowflake store (that state is written as version %d)", snapshotVersion, snapshotVersionV1)
	}
	prev := ""
	for i := uint64(0); i < count && sr.err == nil; i++ {
		name := sr.string("snowflake store name", MaxStoreLen)
		layout := sr.string("layout", MaxLayoutLen)
		bits := sr.uvarint("worker bits")
		if sr.err != nil {
			return
		}
		if i > 0 && name <= prev {
			sr.malformed("snowflake store %q is not after %q", name, prev)
			return
		}
		// The rules of the op that declared it.
		if err := (Op{Kind: OpDeclareSnowflake, Key: Key{Store: name}, Layout: layout, Value: bits}).validate(); err != nil {
			sr.malformed("snowflake store %q: %v", name, err)
			return
		}
		st.snowflakes[name] = SnowflakeStore{Layout: layout, WorkerBits: uint8(bits)}
		prev = name
	}
}

// workers reads version 2's worker table into st, checking what Apply
// keeps true: IDs are below 1<<MaxWorkerBits, a held worker is below the
// limit the declared stores set, and a node holds at most one worker.
func (sr *snapReader) workers(st *restored) {
	count := sr.uvarint("worker count")
	limit := uint64(1) << MaxWorkerBits
	for _, s := range st.snowflakes {
		limit = min(limit, uint64(1)<<s.WorkerBits)
	}
	for i := uint64(0); i < count && sr.err == nil; i++ {
		id := sr.uvarint("worker id")
		node := sr.string("worker node id", MaxNodeFieldLen)
		inc := sr.string("worker incarnation", MaxNodeFieldLen)
		freeAt := sr.uvarint("worker free time")
		w := Worker{ID: id, NodeID: node, Incarnation: inc, FreeAt: freeAt}
		other, holds := st.held[node]
		switch {
		case sr.err != nil:
			return
		case i > 0 && id <= st.lastWorker:
			sr.malformed("worker %d is not after %d", id, st.lastWorker)
		case id >= 1<<MaxWorkerBits:
			sr.malformed("worker %d is not below 1<<%d", id, MaxWorkerBits)
		case node == "" || inc == "":
			sr.malformed("worker %d has an empty node id or incarnation", id)
		case w.held() && id >= limit:
			sr.malformed("held worker %d is not below the limit %d of the declared stores", id, limit)
		case w.held() && holds:
			sr.malformed("node %q holds workers %d and %d", node, other, id)
		}
		if sr.err != nil {
			return
		}
		st.workers[id] = w
		if w.held() {
			st.held[node] = id
		}
		st.lastWorker = id
	}
}

// trailer checks the CRC and that the stream ends right after it.
func (sr *snapReader) trailer() {
	if sr.err != nil {
		return
	}
	want := sr.sum()
	b := sr.next(4, "checksum")
	if b == nil {
		return
	}
	if got := binary.BigEndian.Uint32(b); got != want {
		sr.err = fmt.Errorf("%w: %w: stored %08x, computed %08x over %d bytes", ErrMalformed, ErrChecksum, got, want, sr.base+int64(sr.pos)-4)
		return
	}
	if sr.fill(1) {
		sr.malformed("trailing data after checksum")
	}
}

// grow gives m, which fill is filling, room for room keys in all, moving
// the keys it holds into larger maps, and returns the filler to go on
// with. m takes the shape newKeyMap(room) would give it: keyShards maps
// once room reaches shardAt, one map until then. Growing keyShards maps
// keeps every name in its shard, so fill's pending batches stay valid.
func grow(m *keyMap, fill *mapFiller, room int, arena *nameArena) *mapFiller {
	if len(m.shards) == 1 && room >= shardAt {
		fill.wait()
		one := m.shards[0]
		*m = *newKeyMap(room)
		for name, hw := range one {
			m.shards[shardOf(name, keyShards)][name] = hw
		}
		return newMapFiller(m, arena)
	}
	per := room / len(m.shards)
	for i, s := range m.shards {
		t := make(map[string]uint64, per)
		for name, hw := range s {
			t[name] = hw
		}
		m.shards[i] = t
	}
	return fill
}
