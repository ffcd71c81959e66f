package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/fsm"
)

// Key administration: the --max-keys quota and the Keys listing. See
// DESIGN.md, "Key quota".

// ErrKeyLimit is wrapped by the error of a reservation or floor that would
// create a key while the cluster already holds Config.MaxKeys keys (serve
// --max-keys). Nothing was committed for that key; keys that exist keep
// working. The error is a *KeyLimitError.
var ErrKeyLimit = errors.New("cluster: key limit reached")

// KeyLimitError is the error of an op refused by the key quota.
type KeyLimitError struct {
	// Key is the key the op would have created.
	Key fsm.Key
	// Held is how many keys the cluster held, and Max its limit, as the
	// leader counted when it refused.
	Held, Max int
}

// Error says what was refused and what to do about it.
func (e *KeyLimitError) Error() string {
	return fmt.Sprintf("key %q in store %q does not exist and cannot be created: the cluster holds %d keys, "+
		"its limit (--max-keys on the leader) is %d. Keys that exist keep working; to create more, raise "+
		"--max-keys on every node (restarting them one at a time), or use keys that exist",
		e.Key.Name, e.Key.Store, e.Held, e.Max)
}

// Is reports whether target is ErrKeyLimit.
func (e *KeyLimitError) Is(target error) bool { return target == ErrKeyLimit }

// keyQuota counts the keys the leader is creating. The state machine
// counts the keys it holds; pending counts, per key, the commands that
// would create it and have been proposed but not yet applied or failed.
// The leader admits a new key only while the keys held plus the keys
// pending (and not yet held) are below Config.MaxKeys, so that commands in
// flight at the same time cannot together overshoot it.
type keyQuota struct {
	mu      sync.Mutex
	pending map[fsm.Key]int
}

// admission is the part of a command the quota lets through, and how to
// give the caller one result per op of the command it submitted.
type admission struct {
	q   *keyQuota
	cmd fsm.Command // the ops to commit

	// Set only when some ops were refused: the number of ops submitted,
	// the submitted index of each op in cmd, and the result of each
	// refused op by submitted index.
	submitted int
	at        []int
	refused   map[int]fsm.Result

	created []fsm.Key // keys this admission counts in q.pending
	handed  bool      // release is up to the future that commits cmd
}

// creates reports whether op creates its key when the key is absent.
func creates(op fsm.Op) bool {
	return op.Kind == fsm.OpReserve || (op.Kind == fsm.OpFloor && op.Value > 0)
}

// admitKeys applies the key quota to cmd, which this node is about to
// propose as leader. Ops that would create a key beyond Config.MaxKeys
// are taken out, with a *KeyLimitError as their result; every op on such
// a key is, so that a command never creates half of what it asked for.
// Before it counts, it makes sure this node applied every entry of
// earlier terms (ensureBarrier), since a leader's state machine may still
// lack keys its predecessors created. The caller must call done, and
// wait for the commit's future through watch.
func (n *Node) admitKeys(ctx context.Context, cmd fsm.Command) (*admission, error) {
	a := &admission{q: &n.quota, cmd: cmd}
	q := &n.quota
	if n.cfg.MaxKeys <= 0 {
		return a, nil
	}
	var keys []fsm.Key
	seen := make(map[fsm.Key]bool)
	for _, op := range cmd.Ops {
		if creates(op) && !seen[op.Key] {
			seen[op.Key] = true
			keys = append(keys, op.Key)
		}
	}
	if len(keys) == 0 {
		return a, nil
	}
	missing := make([]bool, len(keys))
	if n.fsm.Missing(keys, missing); !anyTrue(missing) {
		return a, nil // every key exists: the common case, no lock taken
	}
	if term := n.raft.CurrentTerm(); n.readyTerm.Load() != term {
		if err := n.ensureBarrier(ctx, term); err != nil {
			return nil, err
		}
	}

	q.mu.Lock()
	defer q.mu.Unlock()
	// One read of the state machine for the command's keys and every key
	// pending, so that a key applied meanwhile is counted once: as held,
	// or as in flight while it is missing (this command's keys included).
	all := make([]fsm.Key, 0, len(keys)+len(q.pending))
	all = append(all, keys...)
	for k := range q.pending {
		all = append(all, k)
	}
	missing = make([]bool, len(all))
	held := n.fsm.Missing(all, missing)
	inflight := 0
	for _, m := range missing[len(keys):] {
		if m {
			inflight++
		}
	}
	room := n.cfg.MaxKeys - held - inflight
	var refused map[fsm.Key]error
	for i, k := range keys {
		switch {
		case !missing[i]:
		case q.pending[k] > 0: // in flight, so counted already
			a.created = append(a.created, k)
		case room > 0:
			room--
			a.created = append(a.created, k)
		default:
			if refused == nil {
				refused = make(map[fsm.Key]error)
			}
			refused[k] = &KeyLimitError{Key: k, Held: n.cfg.MaxKeys - room, Max: n.cfg.MaxKeys}
		}
	}
	if q.pending == nil {
		q.pending = make(map[fsm.Key]int)
	}
	for _, k := range a.created {
		q.pending[k]++
	}
	if refused != nil {
		a.filter(refused)
	}
	return a, nil
}

func anyTrue(bs []bool) bool {
	for _, b := range bs {
		if b {
			return true
		}
	}
	return false
}

// filter takes the ops on refused keys out of a.cmd.
func (a *admission) filter(refused map[fsm.Key]error) {
	ops := a.cmd.Ops
	a.submitted = len(ops)
	a.refused = make(map[int]fsm.Result)
	a.cmd = fsm.Command{Ops: make([]fsm.Op, 0, len(ops))}
	for i, op := range ops {
		if err, ok := refused[op.Key]; ok && creates(op) {
			a.refused[i] = fsm.Result{Err: err}
			continue
		}
		a.cmd.Ops = append(a.cmd.Ops, op)
		a.at = append(a.at, i)
	}
}

// merge returns one result per submitted op: the state machine's for the
// ops committed (resp, nil when none was), the quota's for the others.
func (a *admission) merge(resp *fsm.ApplyResponse) *fsm.ApplyResponse {
	if a.refused == nil {
		return resp
	}
	out := &fsm.ApplyResponse{Results: make([]fsm.Result, a.submitted)}
	for i, r := range a.refused {
		out.Results[i] = r
	}
	if resp != nil {
		for j, r := range resp.Results {
			out.Results[a.at[j]] = r
		}
	}
	return out
}

// watch returns f made to release the admission's pending keys once it
// completes: the entry is then applied, or will never be by this leader.
// (Should the next leader commit it after all, its barrier applies it
// before it counts.) Releasing when the caller gives up instead could
// admit more keys while the entry is still on its way. Node.await waits
// for the future on a goroutine that keeps waiting after its caller gave
// up, and calls Error once: a raft future must not be waited on by two
// goroutines at once (the second waits forever), so nothing else may.
func (a *admission) watch(f raft.Future) raft.Future {
	if len(a.created) == 0 {
		return f
	}
	a.handed = true
	return releasing{Future: f, a: a}
}

// releasing is a future that releases an admission once it completes.
type releasing struct {
	raft.Future
	a *admission
}

func (r releasing) Error() error {
	err := r.Future.Error()
	r.a.q.release(r.a.created)
	return err
}

// done releases the pending keys unless watch took them over.
func (a *admission) done() {
	if !a.handed && len(a.created) > 0 {
		a.q.release(a.created)
	}
}

func (q *keyQuota) release(keys []fsm.Key) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, k := range keys {
		if q.pending[k]--; q.pending[k] <= 0 {
			delete(q.pending, k)
		}
	}
}

// Listing keys.

const (
	// DefaultKeysPageSize is the page size of a Keys request that sets
	// none, and MaxKeysPageSize the largest page a request gets.
	DefaultKeysPageSize = 1000
	MaxKeysPageSize     = 10000

	pageTokenVersion = 1
)

// Keys lists a page of keys with their high-water marks, sorted by store
// and then key in byte order, from this node's state machine: as this
// node applied the log, so a follower's marks may trail the leader's by
// the entries it has not applied yet, and are never ahead of them. A
// mark is reported as GetHighWater reports it: in a cluster restored from
// a backup, at least the floor of every key. A page costs a few binary
// searches and a lookup per key returned, however many keys there are
// (fsm.FSM.Keys). The page token names the last key returned and the
// request's store and prefix; listing with it continues after that key,
// so that every key that exists throughout a listing is listed exactly
// once, and keys created meanwhile may or may not be. Invalid requests
// fail with ErrInvalidRequest.
func (n *Node) Keys(_ context.Context, req *ordinalv1.KeysRequest) (*ordinalv1.KeysResponse, error) {
	if err := n.Err(); err != nil { // a stopped state machine's marks may be too low
		return nil, fmt.Errorf("%w: %w", ErrShutdown, err)
	}
	q := fsm.KeysQuery{Store: req.GetStoreName(), Prefix: req.GetPrefix(), Limit: DefaultKeysPageSize}
	switch {
	case len(q.Store) > fsm.MaxStoreLen:
		return nil, fmt.Errorf("%w: store_name is %d bytes; store names are at most %d", ErrInvalidRequest, len(q.Store), fsm.MaxStoreLen)
	case len(q.Prefix) > fsm.MaxKeyLen:
		return nil, fmt.Errorf("%w: prefix is %d bytes; keys are at most %d", ErrInvalidRequest, len(q.Prefix), fsm.MaxKeyLen)
	}
	if size := req.GetPageSize(); size > 0 {
		q.Limit = int(min(size, MaxKeysPageSize))
	}
	if tok := req.GetPageToken(); tok != "" {
		after, err := decodePageToken(tok, q.Store, q.Prefix)
		if err != nil {
			return nil, fmt.Errorf("%w: page_token: %w", ErrInvalidRequest, err)
		}
		q.After = &after
	}
	keys, more := n.fsm.Keys(q)
	floor := n.allKeysFloor()
	resp := &ordinalv1.KeysResponse{Keys: make([]*ordinalv1.KeyInfo, len(keys)), Total: uint64(n.fsm.Len())}
	for i, k := range keys {
		resp.Keys[i] = &ordinalv1.KeyInfo{StoreName: k.Store, Key: k.Name, HighWater: int64(max(k.HighWater, floor))}
	}
	if more {
		resp.NextPageToken = encodePageToken(keys[len(keys)-1].Key, q.Store, q.Prefix)
	}
	return resp, nil
}

// A page token is base64url (no padding) of
//
//	version:byte(1) store:string key:string filter:uint32 big-endian
//
// strings as uvarint length and bytes, filter the CRC-32C of the
// request's store_name, a zero byte and its prefix: a token is refused
// with another filter, whose listing it is no position in.
var tokenTable = crc32.MakeTable(crc32.Castagnoli)

func filterSum(store, prefix string) uint32 {
	h := crc32.Update(0, tokenTable, []byte(store))
	h = crc32.Update(h, tokenTable, []byte{0})
	return crc32.Update(h, tokenTable, []byte(prefix))
}

func encodePageToken(last fsm.Key, store, prefix string) string {
	b := []byte{pageTokenVersion}
	b = binary.AppendUvarint(b, uint64(len(last.Store)))
	b = append(b, last.Store...)
	b = binary.AppendUvarint(b, uint64(len(last.Name)))
	b = append(b, last.Name...)
	b = binary.BigEndian.AppendUint32(b, filterSum(store, prefix))
	return base64.RawURLEncoding.EncodeToString(b)
}

// errBadToken is the cause of every page token refused for its content.
var errBadToken = errors.New("not a page token of this listing: start it again without one")

func decodePageToken(tok, store, prefix string) (fsm.Key, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 1 || b[0] != pageTokenVersion {
		return fsm.Key{}, errBadToken
	}
	r := bytes.NewReader(b[1:])
	field := func(limit int) (string, bool) {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(limit) || n > uint64(r.Len()) {
			return "", false
		}
		s := make([]byte, n)
		_, _ = r.Read(s)
		return string(s), true
	}
	var k fsm.Key
	var ok1, ok2 bool
	k.Store, ok1 = field(fsm.MaxStoreLen)
	k.Name, ok2 = field(fsm.MaxKeyLen)
	var sum [4]byte
	if !ok1 || !ok2 || r.Len() != len(sum) {
		return fsm.Key{}, errBadToken
	}
	_, _ = r.Read(sum[:])
	if binary.BigEndian.Uint32(sum[:]) != filterSum(store, prefix) {
		return fsm.Key{}, fmt.Errorf("it was issued for another store_name or prefix: repeat them, or start again without a token")
	}
	return k, nil
}
