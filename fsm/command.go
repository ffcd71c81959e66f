package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/ordinal-dev/ordinal/keyspace"
)

// MaxID is the largest ID the FSM ever hands out (keyspace.MaxID).
const MaxID = keyspace.MaxID

// Limits enforced by Decode and by snapshot restore. They bound the memory a
// single command or snapshot entry can make the FSM allocate, so that a
// corrupt or hostile log entry cannot exhaust memory on every replica.
const (
	// MaxStoreLen is the longest store name, in bytes.
	MaxStoreLen = keyspace.MaxStoreLen
	// MaxKeyLen is the longest key name, in bytes.
	MaxKeyLen = keyspace.MaxKeyLen
	// MaxOpsPerCommand is the largest number of ops one Command may carry.
	MaxOpsPerCommand = 65536
	// MaxNodeFieldLen is the longest node ID, node address, cluster ID or
	// incarnation, in bytes.
	MaxNodeFieldLen = 1024
	// MaxLayoutLen is the longest Snowflake layout text, in bytes.
	MaxLayoutLen = 128
	// MaxWorkerBits is the most bits of a Snowflake ID that may hold the
	// worker ID, so worker IDs are below 1<<MaxWorkerBits.
	MaxWorkerBits = 31
)

// Command format versions: the first byte of every encoded Command. Bump
// commandVersion (and keep decoding every older value) whenever the layout
// changes, because old entries stay in Raft logs for as long as a node has
// not compacted them.
const (
	// commandVersionV1 is the original layout, without a checksum. Encode
	// no longer writes it; Decode still reads it so that logs written
	// before version 2 replay.
	commandVersionV1 = 1
	// commandVersion is what Encode writes: version 1's layout followed by
	// a CRC-32C of every byte before it.
	commandVersion = 2
	// crcLen is the size of version 2's checksum trailer.
	crcLen = 4
)

var (
	// ErrMalformed is returned, wrapped with a precise reason, when command
	// or snapshot bytes are not valid. State is never changed by malformed
	// input.
	ErrMalformed = errors.New("malformed command or snapshot")

	// ErrChecksum is returned, together with ErrMalformed, when a command or
	// snapshot does not match the CRC-32C it carries: its bytes changed
	// after they were written (a damaged disk, file or transfer), so
	// nothing in it can be trusted, not even the parts that still parse.
	ErrChecksum = errors.New("checksum mismatch")

	// ErrOverflow is reported in Result.Err when an OpReserve cannot get
	// Need IDs without passing MaxID. Nothing was reserved and the key's
	// high-water mark is unchanged. It is keyspace.ErrOverflow.
	ErrOverflow = keyspace.ErrOverflow
)

// Key names one counter (keyspace.Key). Store is a namespace; the FSM
// stores it exactly as given (callers normalise an empty store to
// "default" before proposing).
type Key = keyspace.Key

// OpKind identifies the operation an Op performs. Its numeric value is part
// of the wire format and must never be reused for a different meaning.
type OpKind uint8

// Operation kinds.
const (
	// OpReserve grants between Need and Want IDs just above the key's
	// high-water mark and raises the mark to the last granted ID.
	OpReserve OpKind = 1
	// OpFloor raises the key's high-water mark to at least Value; it never
	// lowers it.
	OpFloor OpKind = 2
	// OpSetNode records NodeID -> Addr (the node's gRPC address) in cluster
	// metadata, replacing any previous address.
	OpSetNode OpKind = 3
	// OpRemoveNode deletes NodeID from cluster metadata. Removing an unknown
	// node is a no-op.
	OpRemoveNode OpKind = 4
	// OpInit sets the cluster ID to ClusterID if none is set yet. Later
	// OpInit ops are no-ops; their Result reports the ID in force.
	OpInit OpKind = 5
	// OpDeclareSnowflake declares Key.Store a Snowflake store with the
	// given Layout and Value worker bits. Declaring it again alike is a
	// no-op; any other declaration of it fails with ErrSnowflakeConflict,
	// as does declaring a store that holds counters or fewer worker bits
	// than a held worker ID needs. Every node must read this kind before
	// one is proposed (see DESIGN.md, "Compatibility rule").
	OpDeclareSnowflake OpKind = 6
	// OpAcquireWorker gives NodeID, in its data directory's incarnation
	// Incarnation, a worker ID (Result.Worker): the one it holds already,
	// or else the lowest free one, after releasing any worker NodeID holds
	// in another incarnation (FreeAt computed from At and Hold as for
	// OpReleaseWorker). ErrNoWorker when none is free or no Snowflake
	// store is declared.
	OpAcquireWorker OpKind = 7
	// OpReleaseWorker releases the worker NodeID holds (a node holds at
	// most one): it becomes free once a later op's At reaches max(At, the
	// worker's reserved time) + Hold. Releasing for a node that holds
	// none is a no-op.
	OpReleaseWorker OpKind = 8
)

// String returns the lower-case name of the kind, for logs and errors.
func (k OpKind) String() string {
	switch k {
	case OpReserve:
		return "reserve"
	case OpFloor:
		return "floor"
	case OpSetNode:
		return "set-node"
	case OpRemoveNode:
		return "remove-node"
	case OpInit:
		return "init"
	case OpDeclareSnowflake:
		return "declare-snowflake"
	case OpAcquireWorker:
		return "acquire-worker"
	case OpReleaseWorker:
		return "release-worker"
	default:
		return fmt.Sprintf("OpKind(%d)", uint8(k))
	}
}

// Op is one operation. Which fields are used depends on Kind; the others
// are ignored by Encode and left zero by Decode.
type Op struct {
	Kind OpKind
	// Key is the counter of OpReserve and OpFloor. OpDeclareSnowflake
	// uses Key.Store only: at most MaxStoreLen bytes, not starting with
	// ReservedStorePrefix.
	Key        Key
	Want, Need uint64 // OpReserve: 1 <= Need <= Want.
	// Value is OpFloor's floor (at most MaxID) and OpDeclareSnowflake's
	// worker bits (1..MaxWorkerBits).
	Value uint64
	// NodeID names the node of OpSetNode, OpRemoveNode, OpAcquireWorker
	// and OpReleaseWorker: 1..MaxNodeFieldLen bytes.
	NodeID    string
	Addr      string // OpSetNode: 1..MaxNodeFieldLen bytes.
	ClusterID string // OpInit: 1..MaxNodeFieldLen bytes.
	// Layout is OpDeclareSnowflake's layout text, 1..MaxLayoutLen bytes,
	// which the FSM compares byte for byte and never parses.
	Layout string
	// Incarnation is OpAcquireWorker's identity of the node's data
	// directory, 1..MaxNodeFieldLen bytes: a wiped node comes back with
	// another one and so gets another worker ID.
	Incarnation string
	// At is the proposer's wall clock in unix milliseconds, for
	// OpAcquireWorker and OpReleaseWorker: at most MaxID. It travels in
	// the entry, so every replica applies the same time and none reads a
	// clock.
	At uint64
	// Hold is how long, in milliseconds, a worker released by
	// OpAcquireWorker or OpReleaseWorker stays taken after its reserved
	// time: at most MaxID.
	Hold uint64
}

// Command is what one Raft log entry carries: a batch of ops applied in
// order. Each op succeeds or fails on its own; a failed op does not undo or
// prevent the others.
type Command struct {
	Ops []Op
}

// Validate reports whether c would survive an encode/decode round trip. It
// returns nil, or an error wrapping ErrMalformed that names the first bad op.
// Proposers should call it before submitting a command to Raft so that
// mistakes surface locally instead of as a rejected log entry.
func (c Command) Validate() error {
	if len(c.Ops) > MaxOpsPerCommand {
		return fmt.Errorf("fsm: validate command: %w: %d ops exceeds the limit of %d", ErrMalformed, len(c.Ops), MaxOpsPerCommand)
	}
	for i, op := range c.Ops {
		if err := op.validate(); err != nil {
			return fmt.Errorf("fsm: validate command: %w: op %d (%s): %w", ErrMalformed, i, op.Kind, err)
		}
	}
	return nil
}

// validate checks the fields used by op.Kind. The returned error is a bare
// reason; callers add position and wrap ErrMalformed.
func (op Op) validate() error {
	switch op.Kind {
	case OpReserve:
		if err := validateKey(op.Key); err != nil {
			return err
		}
		if op.Need == 0 {
			return errors.New("need is 0, must be at least 1")
		}
		if op.Need > op.Want {
			return fmt.Errorf("need %d exceeds want %d", op.Need, op.Want)
		}
	case OpFloor:
		if err := validateKey(op.Key); err != nil {
			return err
		}
		if op.Value > MaxID {
			return fmt.Errorf("value %d exceeds the maximum id %d", op.Value, MaxID)
		}
	case OpSetNode:
		if err := checkNodeField("node id", op.NodeID); err != nil {
			return err
		}
		return checkNodeField("address", op.Addr)
	case OpRemoveNode:
		return checkNodeField("node id", op.NodeID)
	case OpInit:
		return checkNodeField("cluster id", op.ClusterID)
	case OpDeclareSnowflake:
		if err := checkSnowflakeStore(op.Key.Store); err != nil {
			return err
		}
		if err := checkLayout(op.Layout); err != nil {
			return err
		}
		if op.Value == 0 || op.Value > MaxWorkerBits {
			return fmt.Errorf("worker bits %d outside 1..%d", op.Value, MaxWorkerBits)
		}
	case OpAcquireWorker:
		if err := checkNodeField("node id", op.NodeID); err != nil {
			return err
		}
		if err := checkNodeField("incarnation", op.Incarnation); err != nil {
			return err
		}
		return checkTimes(op.At, op.Hold)
	case OpReleaseWorker:
		if err := checkNodeField("node id", op.NodeID); err != nil {
			return err
		}
		return checkTimes(op.At, op.Hold)
	default:
		return fmt.Errorf("unknown op kind %d", uint8(op.Kind))
	}
	return nil
}

// checkSnowflakeStore checks the name of a store to declare: the length
// limit of every store name, and not one of the FSM's own stores.
func checkSnowflakeStore(store string) error {
	if len(store) > MaxStoreLen {
		return fmt.Errorf("store name is %d bytes, limit is %d", len(store), MaxStoreLen)
	}
	if strings.HasPrefix(store, ReservedStorePrefix) {
		return fmt.Errorf("store name %q starts with %q, which is reserved", store, ReservedStorePrefix)
	}
	return nil
}

// checkLayout rejects an empty or over-long layout text.
func checkLayout(layout string) error {
	if layout == "" {
		return errors.New("layout is empty")
	}
	if len(layout) > MaxLayoutLen {
		return fmt.Errorf("layout is %d bytes, limit is %d", len(layout), MaxLayoutLen)
	}
	return nil
}

// checkTimes bounds a worker op's clock and hold by MaxID, so that
// max(at, a reserved time) + hold cannot wrap.
func checkTimes(at, hold uint64) error {
	if at > MaxID {
		return fmt.Errorf("at %d exceeds %d", at, MaxID)
	}
	if hold > MaxID {
		return fmt.Errorf("hold %d exceeds %d", hold, MaxID)
	}
	return nil
}

// validate checks the length limits of a key. Empty store and key names are
// allowed: normalisation is the caller's business, not the log's.
func validateKey(k Key) error {
	if len(k.Store) > MaxStoreLen {
		return fmt.Errorf("store name is %d bytes, limit is %d", len(k.Store), MaxStoreLen)
	}
	if len(k.Name) > MaxKeyLen {
		return fmt.Errorf("key name is %d bytes, limit is %d", len(k.Name), MaxKeyLen)
	}
	return nil
}

// checkNodeField rejects empty and over-long node metadata fields. Empty
// values are refused because "" means "unset" for the cluster ID and would
// be a useless node ID or address.
func checkNodeField(field, v string) error {
	if v == "" {
		return fmt.Errorf("%s is empty", field)
	}
	if len(v) > MaxNodeFieldLen {
		return fmt.Errorf("%s is %d bytes, limit is %d", field, len(v), MaxNodeFieldLen)
	}
	return nil
}

// Command wire format, version 2. All integers are unsigned LEB128 varints
// (encoding/binary uvarint) in their shortest form; strings are a uvarint
// byte length followed by the bytes.
//
//	command     = version:byte(2) body crc:uint32 big-endian (CRC-32C of every byte before it)
//	body        = count:uvarint op*count
//	op          = kind:byte fields
//	reserve(1)  = store:string name:string want:uvarint need:uvarint
//	floor(2)    = store:string name:string value:uvarint
//	set-node(3) = node_id:string addr:string
//	remove(4)   = node_id:string
//	init(5)     = cluster_id:string
//	declare(6)  = store:string layout:string bits:uvarint
//	acquire(7)  = node_id:string incarnation:string at:uvarint hold:uvarint
//	release(8)  = node_id:string at:uvarint hold:uvarint
//
// Kinds 6 to 8 joined version 2 later; nodes that do not know them stop
// on them, so they are proposed only once every node reads them.
// Version 1 is version:byte(1) body, without the checksum, and kinds 1 to
// 5 only; Decode still accepts it. Decode rejects non-shortest varints
// and trailing bytes, so every valid encoding is canonical:
// Encode(Decode(b)) == b for version 2 input (version 1 input re-encodes
// as version 2).

// Encode returns the binary encoding of c. It does not validate c: an
// invalid command encodes to bytes that Decode (and therefore Apply)
// rejects. Call Validate first to catch such mistakes early.
func (c Command) Encode() []byte {
	return c.AppendEncode(make([]byte, 0, c.encodedLen()))
}

// AppendEncode appends the binary encoding of c to dst and returns the
// extended slice, so callers can reuse buffers.
func (c Command) AppendEncode(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, commandVersion)
	dst = c.appendBody(dst)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// appendBody appends the op count and the ops, the part of the encoding
// that versions 1 and 2 share.
func (c Command) appendBody(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(c.Ops)))
	for _, op := range c.Ops {
		dst = op.appendEncode(dst)
	}
	return dst
}

// appendEncode appends op's kind byte and the fields its kind uses.
func (op Op) appendEncode(dst []byte) []byte {
	dst = append(dst, byte(op.Kind))
	switch op.Kind {
	case OpReserve:
		dst = appendString(dst, op.Key.Store)
		dst = appendString(dst, op.Key.Name)
		dst = binary.AppendUvarint(dst, op.Want)
		dst = binary.AppendUvarint(dst, op.Need)
	case OpFloor:
		dst = appendString(dst, op.Key.Store)
		dst = appendString(dst, op.Key.Name)
		dst = binary.AppendUvarint(dst, op.Value)
	case OpSetNode:
		dst = appendString(dst, op.NodeID)
		dst = appendString(dst, op.Addr)
	case OpRemoveNode:
		dst = appendString(dst, op.NodeID)
	case OpInit:
		dst = appendString(dst, op.ClusterID)
	case OpDeclareSnowflake:
		dst = appendString(dst, op.Key.Store)
		dst = appendString(dst, op.Layout)
		dst = binary.AppendUvarint(dst, op.Value)
	case OpAcquireWorker:
		dst = appendString(dst, op.NodeID)
		dst = appendString(dst, op.Incarnation)
		dst = binary.AppendUvarint(dst, op.At)
		dst = binary.AppendUvarint(dst, op.Hold)
	case OpReleaseWorker:
		dst = appendString(dst, op.NodeID)
		dst = binary.AppendUvarint(dst, op.At)
		dst = binary.AppendUvarint(dst, op.Hold)
	}
	return dst
}

// encodedLen returns the exact length of c's encoding, so Encode allocates
// once.
func (c Command) encodedLen() int {
	n := 1 + uvarintLen(uint64(len(c.Ops))) + crcLen
	for _, op := range c.Ops {
		n++
		switch op.Kind {
		case OpReserve:
			n += stringLen(op.Key.Store) + stringLen(op.Key.Name) + uvarintLen(op.Want) + uvarintLen(op.Need)
		case OpFloor:
			n += stringLen(op.Key.Store) + stringLen(op.Key.Name) + uvarintLen(op.Value)
		case OpSetNode:
			n += stringLen(op.NodeID) + stringLen(op.Addr)
		case OpRemoveNode:
			n += stringLen(op.NodeID)
		case OpInit:
			n += stringLen(op.ClusterID)
		case OpDeclareSnowflake:
			n += stringLen(op.Key.Store) + stringLen(op.Layout) + uvarintLen(op.Value)
		case OpAcquireWorker:
			n += stringLen(op.NodeID) + stringLen(op.Incarnation) + uvarintLen(op.At) + uvarintLen(op.Hold)
		case OpReleaseWorker:
			n += stringLen(op.NodeID) + uvarintLen(op.At) + uvarintLen(op.Hold)
		}
	}
	return n
}

// Decode parses an encoded Command of any supported version. It never
// panics. Any deviation from the format (unknown version or kind,
// truncation, trailing bytes, non-shortest varints, over-limit lengths or
// counts, or field values that Validate rejects) yields an error wrapping
// ErrMalformed with the reason. A version 2 command whose checksum does not
// match is rejected before anything else is read from it, with an error
// wrapping both ErrMalformed and ErrChecksum.
//
// Strings in the result are freshly allocated and never alias b, so the FSM
// can keep them as map keys without pinning the Raft log buffer.
func Decode(b []byte) (Command, error) {
	c, err := decode(b)
	if err != nil {
		return Command{}, fmt.Errorf("fsm: %w", err)
	}
	return c, nil
}

// decode is Decode without the package prefix on errors, for callers that
// add their own context.
func decode(b []byte) (Command, error) {
	d := decoder{b: b}
	c, err := d.command()
	if err != nil {
		return Command{}, fmt.Errorf("decode command: %w: %w", ErrMalformed, err)
	}
	return c, nil
}

// decoder reads the command format from b. The first failure is kept in
// err and turns every later read into a no-op, so parsing code can read a
// whole op straight through and check for an error once.
type decoder struct {
	b       []byte
	off     int
	err     error
	version byte
	// store is the last store name decoded. Batches almost always target
	// one store, so reusing the string saves an allocation per op.
	store string
}

// command parses a whole command and insists that nothing follows it. A
// version 2 command's checksum is verified first and the trailer cut off,
// so the parser only ever reads bytes the checksum vouches for.
func (d *decoder) command() (Command, error) {
	version := d.byte("version")
	d.version = version
	switch {
	case d.err != nil:
		return Command{}, d.err
	case version == commandVersion:
		if err := d.verifyChecksum(); err != nil {
			return Command{}, err
		}
	case version != commandVersionV1:
		return Command{}, fmt.Errorf("unsupported command version %d (this version reads %d and %d)", version, commandVersionV1, commandVersion)
	}
	count := d.uvarint("op count")
	if d.err != nil {
		return Command{}, d.err
	}
	if count > MaxOpsPerCommand {
		return Command{}, fmt.Errorf("op count %d exceeds the limit of %d", count, MaxOpsPerCommand)
	}
	var c Command
	if count > 0 {
		// Every op takes at least two bytes, so the remaining input bounds
		// the allocation even when the count field lies.
		c.Ops = make([]Op, 0, min(count, uint64(len(d.b)-d.off)/2))
	}
	for i := range count {
		op, err := d.op(i)
		if err != nil {
			return Command{}, err
		}
		c.Ops = append(c.Ops, op)
	}
	if d.off != len(d.b) {
		return Command{}, fmt.Errorf("%d trailing bytes at offset %d", len(d.b)-d.off, d.off)
	}
	return c, nil
}

// verifyChecksum checks the CRC-32C trailer of a version 2 command against
// every byte before it and removes the trailer from d.b.
func (d *decoder) verifyChecksum() error {
	if len(d.b) < 1+crcLen {
		return fmt.Errorf("checksum: truncated: the command is %d bytes, version %d needs at least %d", len(d.b), commandVersion, 1+crcLen)
	}
	end := len(d.b) - crcLen
	stored := binary.BigEndian.Uint32(d.b[end:])
	if computed := crc32.Checksum(d.b[:end], castagnoli); computed != stored {
		return fmt.Errorf("%w: stored %08x, computed %08x over %d bytes", ErrChecksum, stored, computed, end)
	}
	d.b = d.b[:end]
	return nil
}

// op parses op number i and validates it.
func (d *decoder) op(i uint64) (Op, error) {
	kind := d.byte("kind")
	if d.err != nil {
		return Op{}, fmt.Errorf("op %d: %w", i, d.err)
	}
	op := Op{Kind: OpKind(kind)}
	switch op.Kind {
	case OpReserve:
		op.Key = d.key()
		op.Want = d.uvarint("want")
		op.Need = d.uvarint("need")
	case OpFloor:
		op.Key = d.key()
		op.Value = d.uvarint("value")
	case OpSetNode:
		op.NodeID = d.string("node id", MaxNodeFieldLen)
		op.Addr = d.string("address", MaxNodeFieldLen)
	case OpRemoveNode:
		op.NodeID = d.string("node id", MaxNodeFieldLen)
	case OpInit:
		op.ClusterID = d.string("cluster id", MaxNodeFieldLen)
	case OpDeclareSnowflake, OpAcquireWorker, OpReleaseWorker:
		if d.version == commandVersionV1 {
			// No version 1 encoder wrote them, and version 1 has no
			// checksum to vouch for them.
			return Op{}, fmt.Errorf("op %d: op kind %d (%s) at offset %d is not in command version %d", i, kind, op.Kind, d.off-1, commandVersionV1)
		}
		d.worker(&op)
	default:
		return Op{}, fmt.Errorf("op %d: unknown op kind %d at offset %d", i, kind, d.off-1)
	}
	if d.err != nil {
		return Op{}, fmt.Errorf("op %d (%s): %w", i, op.Kind, d.err)
	}
	if err := op.validate(); err != nil {
		return Op{}, fmt.Errorf("op %d (%s): %w", i, op.Kind, err)
	}
	return op, nil
}

// worker reads the fields of the Snowflake kinds (6 to 8) into op.
func (d *decoder) worker(op *Op) {
	switch op.Kind {
	case OpDeclareSnowflake:
		op.Key.Store = d.string("store", MaxStoreLen)
		op.Layout = d.string("layout", MaxLayoutLen)
		op.Value = d.uvarint("worker bits")
	case OpAcquireWorker:
		op.NodeID = d.string("node id", MaxNodeFieldLen)
		op.Incarnation = d.string("incarnation", MaxNodeFieldLen)
		op.At = d.uvarint("at")
		op.Hold = d.uvarint("hold")
	case OpReleaseWorker:
		op.NodeID = d.string("node id", MaxNodeFieldLen)
		op.At = d.uvarint("at")
		op.Hold = d.uvarint("hold")
	}
}

// key reads a store name followed by a key name.
func (d *decoder) key() Key {
	if raw := d.bytes("store", MaxStoreLen); string(raw) != d.store {
		d.store = string(raw)
	}
	name := d.string("key", MaxKeyLen)
	return Key{Store: d.store, Name: name}
}

// byte reads one byte.
func (d *decoder) byte(field string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.err = fmt.Errorf("%s: truncated at offset %d", field, d.off)
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

// uvarint reads one canonical uvarint.
func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n, err := readUvarint(d.b[d.off:])
	if err != nil {
		d.err = fmt.Errorf("%s: %w at offset %d", field, err, d.off)
		return 0
	}
	d.off += n
	return v
}

// string reads a length-prefixed string of at most limit bytes into a new
// allocation of exactly that size.
func (d *decoder) string(field string, limit int) string {
	return string(d.bytes(field, limit))
}

// bytes reads a length-prefixed byte string of at most limit bytes and
// returns it as a slice of the input. The length is checked before the
// caller allocates anything.
func (d *decoder) bytes(field string, limit int) []byte {
	if d.err != nil {
		return nil
	}
	n, size, err := readUvarint(d.b[d.off:])
	if err != nil {
		d.err = fmt.Errorf("%s length: %w at offset %d", field, err, d.off)
		return nil
	}
	d.off += size
	if n > uint64(limit) {
		d.err = fmt.Errorf("%s is %d bytes, limit is %d", field, n, limit)
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.err = fmt.Errorf("%s: truncated at offset %d: need %d bytes, have %d", field, d.off, n, len(d.b)-d.off)
		return nil
	}
	b := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return b
}

// errTruncatedVarint and errBadVarint are the bare reasons readUvarint
// reports; callers add the field name and offset.
var (
	errTruncatedVarint = errors.New("truncated uvarint")
	errBadVarint       = errors.New("uvarint overflows 64 bits or is not in shortest form")
)

// readUvarint decodes a uvarint from the start of b and returns it with the
// number of bytes used. Unlike binary.Uvarint it rejects non-shortest
// encodings (a final 0x00 continuation byte), which keeps the format
// canonical: one value, one encoding.
func readUvarint(b []byte) (uint64, int, error) {
	v, n := binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, 0, errTruncatedVarint
	case n < 0:
		return 0, 0, errBadVarint
	case n > 1 && b[n-1] == 0:
		return 0, 0, errBadVarint
	}
	return v, n, nil
}

// appendString appends a uvarint length prefix and the bytes of s.
func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// uvarintLen returns the encoded size of v.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// stringLen returns the encoded size of s.
func stringLen(s string) int {
	return uvarintLen(uint64(len(s))) + len(s)
}

// clone returns a copy of c whose strings share no memory with c's. The FSM
// keeps key strings as map keys for as long as the key exists, so strings
// that are slices of a large caller buffer would pin that whole buffer.
func (c Command) clone() Command {
	ops := make([]Op, len(c.Ops))
	for i, op := range c.Ops {
		op.Key.Store = strings.Clone(op.Key.Store)
		op.Key.Name = strings.Clone(op.Key.Name)
		op.NodeID = strings.Clone(op.NodeID)
		op.Addr = strings.Clone(op.Addr)
		op.ClusterID = strings.Clone(op.ClusterID)
		op.Layout = strings.Clone(op.Layout)
		op.Incarnation = strings.Clone(op.Incarnation)
		ops[i] = op
	}
	return Command{Ops: ops}
}
