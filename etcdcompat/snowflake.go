package etcdcompat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/keyspace"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// Snowflake stores in etcd (see DESIGN.md, "Snowflake stores"). Under the
// store's prefix, in both layouts:
//
//	snowflake/stores/<store>          a declaration: {"layout": ..., "worker_bits": N}
//	snowflake/workers/<w>             worker w's holder, {"node_id": ...}, on the holder's session lease
//	snowflake/time/<w>                the highest Unix millisecond ever reserved for worker w, in decimal
//	snowflake/floors/<store>/<key>    the key's Snowflake floor, in decimal
//	snowflake/counters/<store>        Layotto layout: the store handed out counter IDs through ordinal
//
// <w> is the worker ID in ten decimal digits (worker IDs are below 2^31),
// so that the keys of workers sort by ID and a range compare can find every
// worker at or above a bound. <store> is path-escaped as in keyIn. In the
// Layotto layout with an app ID, "snowflake" is "snowflake@<app id>", so
// that deployments of different app IDs sharing a prefix keep apart, as
// their counters do.
const snowflakeDir = "snowflake"

// Errors of Snowflake stores.
var (
	// ErrSnowflakeConflict is wrapped by the error of a declaration that
	// contradicts etcd: the store is declared with another layout, the
	// store holds counters (native layout: a key under counters/<store>/;
	// Layotto layout: ordinal handed out counter IDs of the store), or a
	// worker ID held by some node does not fit the declaration's worker
	// bits. Nothing changed; a node should refuse to start.
	ErrSnowflakeConflict = fmt.Errorf("etcdcompat: snowflake store declaration conflicts with what etcd holds: %w", snowflake.ErrConflict)

	// ErrSnowflakeStore is wrapped by the error of a counter reservation,
	// a counter floor (native layout) or a Layotto-layout ID asked for in a
	// store declared a Snowflake store: a node that has not learnt the
	// declaration yet must not hand out counter IDs there. It wraps
	// alloc.ErrUnavailable: the node serves the store's Snowflake IDs once
	// it has learnt the declaration (SetSnowflakeHook).
	ErrSnowflakeStore = fmt.Errorf("etcdcompat: the store hands out snowflake ids, not counters: %w", alloc.ErrUnavailable)

	// ErrNoWorker is wrapped by the error of SnowflakeBackend.Worker when
	// no worker ID is free: every ID the declared stores' worker bits allow
	// is held by a live session, or no store is declared. It wraps
	// alloc.ErrUnavailable: a worker frees when its holder closes, or its
	// session's lease expires.
	ErrNoWorker = fmt.Errorf("etcdcompat: no snowflake worker id free: %w", alloc.ErrUnavailable)

	// ErrWorkerLost is wrapped by the error of SnowflakeBackend.Reserve
	// for the time of a worker this node does not hold: it lost the
	// worker when its etcd session ended, and another node holds it now
	// (or it never held it). It wraps alloc.ErrUnavailable. Worker
	// returns the worker the node holds now.
	// It wraps snowflake.ErrWorkerLost, on which the Service drops the
	// worker and acquires another.
	ErrWorkerLost = fmt.Errorf("etcdcompat: this node does not hold the snowflake worker id: %w", snowflake.ErrWorkerLost)
)

// maxWorkerBits bounds the worker bits of a declaration, as
// snowflake.Layout.Validate does.
const maxWorkerBits = 31

// snowflakeKeys are the etcd keys of Snowflake stores under one prefix.
type snowflakeKeys struct {
	stores, workers, time, floors, counters string
}

func newSnowflakeKeys(prefix, appID string) snowflakeKeys {
	root := prefix + snowflakeDir + "/"
	if appID != "" {
		root = prefix + snowflakeDir + "@" + url.PathEscape(appID) + "/"
	}
	return snowflakeKeys{
		stores:   root + "stores/",
		workers:  root + "workers/",
		time:     root + "time/",
		floors:   root + "floors/",
		counters: root + "counters/",
	}
}

func workerName(w uint64) string { return fmt.Sprintf("%010d", w) }

// decl is the key of store's declaration.
func (k snowflakeKeys) decl(store string) string { return k.stores + url.PathEscape(store) }

// worker is the key of worker w's holder.
func (k snowflakeKeys) worker(w uint64) string { return k.workers + workerName(w) }

// timeKey is the counter of worker w's reserved time.
func (k snowflakeKeys) timeKey(w uint64) string { return k.time + workerName(w) }

// floor is the key of a Snowflake key's floor.
func (k snowflakeKeys) floor(key keyspace.Key) string { return keyIn(k.floors, key) }

// marker is the key that says store handed out counter IDs (Layotto
// layout).
func (k snowflakeKeys) marker(store string) string { return k.counters + url.PathEscape(store) }

// notDeclared compares true while store is not declared a Snowflake
// store: the guard of every counter reservation.
func (k snowflakeKeys) notDeclared(store string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(k.decl(store)), "=", 0)
}

// workerOf parses the worker ID at the end of a key under dir.
func workerOf(dir, etcdKey string) (uint64, bool) {
	rest, ok := strings.CutPrefix(etcdKey, dir)
	if !ok {
		return 0, false
	}
	w, err := strconv.ParseUint(rest, 10, 64)
	return w, err == nil
}

func snowflakeStoreError(store string) error {
	return fmt.Errorf("%w: store %q is declared a snowflake store in etcd, and this node has not learnt it yet", ErrSnowflakeStore, store)
}

// SnowflakeDecl declares one Snowflake store: its name, its layout in
// canonical text (snowflake.Layout.String) and that layout's worker bits.
type SnowflakeDecl struct {
	Store      string
	Layout     string
	WorkerBits uint8
}

// declValue is a declaration's value in etcd.
type declValue struct {
	Layout     string `json:"layout"`
	WorkerBits uint8  `json:"worker_bits"`
}

// workerValue is a worker key's value in etcd.
type workerValue struct {
	NodeID string `json:"node_id"`
}

func parseDecl(stores string, kv *mvccpb.KeyValue) (SnowflakeDecl, error) {
	name, ok := strings.CutPrefix(string(kv.Key), stores)
	if !ok {
		return SnowflakeDecl{}, fmt.Errorf("etcd key %q is not under %q", kv.Key, stores)
	}
	store, err := url.PathUnescape(name)
	if err != nil {
		return SnowflakeDecl{}, fmt.Errorf("etcd key %q: bad store: %w", kv.Key, err)
	}
	var v declValue
	if err := json.Unmarshal(kv.Value, &v); err != nil || v.Layout == "" || v.WorkerBits == 0 || v.WorkerBits > maxWorkerBits {
		return SnowflakeDecl{}, fmt.Errorf("etcd key %s holds %q, not an ordinal snowflake store declaration", kv.Key, kv.Value)
	}
	return SnowflakeDecl{Store: store, Layout: v.Layout, WorkerBits: v.WorkerBits}, nil
}

// checkDecls validates declarations before any of them reaches etcd.
func checkDecls(decls []SnowflakeDecl) error {
	seen := map[string]SnowflakeDecl{}
	for _, d := range decls {
		if d.Store == "" || strings.HasPrefix(d.Store, "_ordinal") {
			return fmt.Errorf("etcdcompat: snowflake store %q: a store needs a name, not starting with _ordinal", d.Store)
		}
		l, err := snowflake.ParseLayout(d.Layout)
		if err != nil {
			return fmt.Errorf("etcdcompat: snowflake store %q: %w", d.Store, err)
		}
		if l.String() != d.Layout || l.WorkerBits != d.WorkerBits {
			return fmt.Errorf("etcdcompat: snowflake store %q: layout %q with %d worker bits is not in canonical form (%q, %d worker bits)",
				d.Store, d.Layout, d.WorkerBits, l.String(), l.WorkerBits)
		}
		if old, ok := seen[d.Store]; ok && old != d {
			return fmt.Errorf("etcdcompat: snowflake store %q declared twice with different layouts", d.Store)
		}
		seen[d.Store] = d
	}
	return nil
}

// SnowflakeBackend is a store's snowflake.Backend: worker IDs leased from
// etcd, time reserved on a counter per worker in etcd, and Snowflake
// floors in etcd. Make it with Store.Snowflake or LayottoStore.Snowflake,
// before the store closes; closing the store releases its worker. It is
// safe for concurrent use. See DESIGN.md, "Snowflake stores".
type SnowflakeBackend struct {
	c     *conn
	keys  snowflakeKeys
	decls []SnowflakeDecl

	// tenure is the native store's current leadership (nil: none, and
	// always nil in the Layotto layout), whose epoch tags time
	// reservations.
	tenure func() *tenure
	// counters returns the compare that is true while store holds no
	// counters, and the read that shows them when it does.
	counters func(store string) (clientv3.Cmp, clientv3.Op)

	acq chan struct{} // held by the acquisition in progress

	declHook  atomic.Pointer[func(SnowflakeDecl)]
	floorHook atomic.Pointer[func(keyspace.Key, uint64)]
	hookMu    sync.Mutex               // orders the declaration hook's calls
	known     map[string]SnowflakeDecl // declarations seen, under hookMu
	released  atomic.Bool              // the store closed: take no worker
	counterc  counterCache             // time counters and floors as last seen

	mu       sync.Mutex
	declared bool                 // decls are in etcd
	sess     *concurrency.Session // holds the worker key's lease
	held     *heldWorker          // nil while no worker is held
	last     uint64               // the last worker held, preferred when taking one again
	hasLast  bool
	floors   map[keyspace.Key]uint64
	// floorsRev is the revision of the last time reservation, which read
	// every floor changed since the previous one: floors holds every
	// floor committed up to it.
	floorsRev int64
	// reserved is every worker's reserved time as the last time
	// reservation made while leading read it.
	reserved map[uint64]uint64
}

// heldWorker is the worker this node holds: its key, on sess's lease.
type heldWorker struct {
	id   uint64
	key  string
	sess *concurrency.Session
}

func (h *heldWorker) live() bool {
	select {
	case <-h.sess.Done():
		return false
	default:
		return true
	}
}

var _ snowflake.Backend = (*SnowflakeBackend)(nil)

// Snowflake returns the store's Snowflake backend, which declares decls in
// etcd (when Worker first runs) and learns the stores other nodes declare
// (SetSnowflakeHook). decls may be empty: the node then serves the stores
// others declare. A store has one backend: a second call fails. Each
// declaration's Layout must be snowflake.Layout.String of a valid layout,
// and WorkerBits its worker bits.
func (s *Store) Snowflake(decls []SnowflakeDecl) (*SnowflakeBackend, error) {
	return s.conn.newSnowflake(decls, s.tenure.Load, func(store string) (clientv3.Cmp, clientv3.Op) {
		dir := s.countersDir + url.PathEscape(store) + "/"
		return clientv3.Compare(clientv3.CreateRevision(dir), "=", 0).WithPrefix(),
			clientv3.OpGet(dir, clientv3.WithPrefix(), clientv3.WithLimit(1), clientv3.WithKeysOnly())
	})
}

// Snowflake returns the store's Snowflake backend, as Store.Snowflake
// does. In this layout no node leads, so time reservations carry no epoch
// and STRONG Snowflake IDs cannot be served; and since Layotto's keys
// carry no store name, a store "holds counters" when ordinal handed out
// counter IDs of it (each node marks a store in etcd on its first call),
// not when keys a Layotto sidecar or an older ordinal wrote exist.
func (s *LayottoStore) Snowflake(decls []SnowflakeDecl) (*SnowflakeBackend, error) {
	return s.conn.newSnowflake(decls, func() *tenure { return nil }, func(store string) (clientv3.Cmp, clientv3.Op) {
		m := s.sfKeys.marker(store)
		return clientv3.Compare(clientv3.CreateRevision(m), "=", 0), clientv3.OpGet(m)
	})
}

// SnowflakeSource returns the store's Snowflake backend as a
// snowflake.Source, declaring stores (name -> layout): what a node's
// snowflake.Service runs on.
func (s *Store) SnowflakeSource(stores map[string]snowflake.Layout) (snowflake.Source, error) {
	b, err := s.Snowflake(declsOf(stores))
	if err != nil {
		return nil, err
	}
	return sourceOf{b}, nil
}

// SnowflakeSource is Store.SnowflakeSource for the Layotto layout.
func (s *LayottoStore) SnowflakeSource(stores map[string]snowflake.Layout) (snowflake.Source, error) {
	b, err := s.Snowflake(declsOf(stores))
	if err != nil {
		return nil, err
	}
	return sourceOf{b}, nil
}

// declsOf turns name -> layout into declarations, in name order.
func declsOf(stores map[string]snowflake.Layout) []SnowflakeDecl {
	var out []SnowflakeDecl
	for _, name := range slices.Sorted(maps.Keys(stores)) {
		l := stores[name]
		out = append(out, SnowflakeDecl{Store: name, Layout: l.String(), WorkerBits: l.WorkerBits})
	}
	return out
}

// sourceOf is a SnowflakeBackend as a snowflake.Source.
type sourceOf struct{ *SnowflakeBackend }

func (s sourceOf) OnDeclare(fn func(store string, layout snowflake.Layout)) {
	s.SetSnowflakeHook(func(d SnowflakeDecl) {
		l, err := snowflake.ParseLayout(d.Layout)
		if err != nil {
			s.c.logger.Error("cannot serve a Snowflake store declared in etcd", "store", d.Store, "layout", d.Layout, "error", err)
			return
		}
		fn(d.Store, l)
	})
}

func (s sourceOf) OnFloor(fn func(key keyspace.Key, floor uint64)) { s.SetFloorHook(fn) }

func (c *conn) newSnowflake(decls []SnowflakeDecl, tenure func() *tenure, counters func(string) (clientv3.Cmp, clientv3.Op)) (*SnowflakeBackend, error) {
	if err := checkDecls(decls); err != nil {
		return nil, err
	}
	if c.ctx.Err() != nil {
		return nil, errClosed
	}
	b := &SnowflakeBackend{
		c:        c,
		keys:     c.sfKeys,
		decls:    slices.Clone(decls),
		tenure:   tenure,
		counters: counters,
		acq:      make(chan struct{}, 1),
		known:    map[string]SnowflakeDecl{},
		floors:   map[keyspace.Key]uint64{},
	}
	if !c.snowflake.CompareAndSwap(nil, b) {
		return nil, errors.New("etcdcompat: the store already has a snowflake backend")
	}
	c.goLoop(func(ctx context.Context) { b.watch(ctx, b.keys.stores, b.applyDecl) })
	c.goLoop(func(ctx context.Context) { b.watch(ctx, b.keys.floors, b.applyFloor) })
	return b, nil
}

// SetSnowflakeHook registers fn to be called for every Snowflake store
// declared in etcd, by any node: at once for each declaration seen so
// far, then for each new one as the node learns it (a watch, and a new
// listing when etcd compacted past it), once per store. fn must not
// block; calls are never concurrent.
func (b *SnowflakeBackend) SetSnowflakeHook(fn func(SnowflakeDecl)) {
	b.hookMu.Lock()
	defer b.hookMu.Unlock()
	b.declHook.Store(&fn)
	for _, name := range slices.Sorted(maps.Keys(b.known)) {
		fn(b.known[name])
	}
}

// SetFloorHook registers fn to be called when this node learns a
// Snowflake floor set by any node (fn receives the key and the floor):
// from a watch at once, and in any case before a time reservation made
// after the floor was set returns. Wire it to snowflake.Service.RaiseFloor:
// Snowflake floors do not go through Store.SetFloorHook.
func (b *SnowflakeBackend) SetFloorHook(fn func(key keyspace.Key, floor uint64)) {
	b.floorHook.Store(&fn)
}

func (b *SnowflakeBackend) applyDecl(kv *mvccpb.KeyValue) {
	d, err := parseDecl(b.keys.stores, kv)
	if err != nil {
		b.c.logger.Warn("ignoring a snowflake store declaration", "error", err)
		return
	}
	b.noteDecl(d)
}

func (b *SnowflakeBackend) noteDecl(d SnowflakeDecl) {
	b.hookMu.Lock()
	defer b.hookMu.Unlock()
	if b.known[d.Store] == d {
		return
	}
	b.known[d.Store] = d
	if fn := b.declHook.Load(); fn != nil {
		(*fn)(d)
	}
}

func (b *SnowflakeBackend) applyFloor(kv *mvccpb.KeyValue) {
	key, err := parseKeyIn(b.keys.floors, string(kv.Key))
	if err != nil {
		b.c.logger.Warn("ignoring a key under snowflake/floors/ that ordinal did not write", "error", err)
		return
	}
	f, err := counterOf([]*mvccpb.KeyValue{kv})
	if err != nil {
		b.c.logger.Warn("ignoring a snowflake floor", "error", err)
		return
	}
	b.noteFloor(key, f.value)
}

// noteFloor records a floor and calls the floor hook when it raises the
// key's.
func (b *SnowflakeBackend) noteFloor(key keyspace.Key, floor uint64) {
	b.mu.Lock()
	raised := floor > b.floors[key]
	if raised {
		b.floors[key] = floor
	}
	b.mu.Unlock()
	if raised {
		if fn := b.floorHook.Load(); fn != nil {
			(*fn)(key, floor)
		}
	}
}

// watch lists the keys under dir, applies each, and applies every later
// Put under it, listing again when etcd compacted past what it has seen.
func (b *SnowflakeBackend) watch(ctx context.Context, dir string, apply func(*mvccpb.KeyValue)) {
	select {
	case <-b.c.connected:
	case <-ctx.Done():
		return
	}
	var next int64 // the revision to watch from; 0: list first
	wait := minRetry
	for ctx.Err() == nil {
		cli, err := b.c.cli()
		if err != nil {
			return
		}
		if next == 0 {
			start := time.Now()
			resp, err := cli.Get(ctx, dir, clientv3.WithPrefix())
			b.c.recordLoop(ctx, opSnowflakeRead, start, err)
			if err != nil {
				sleep(ctx, wait)
				wait = min(wait*2, maxRetry)
				continue
			}
			for _, kv := range resp.Kvs {
				apply(kv)
			}
			next = resp.Header.Revision + 1
		}
		wait = minRetry
		wctx, cancel := context.WithCancel(ctx)
		for wr := range cli.Watch(wctx, dir, clientv3.WithPrefix(), clientv3.WithRev(next)) {
			if wr.CompactRevision != 0 {
				next = 0
				break
			}
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.PUT {
					apply(ev.Kv)
				}
			}
			next = wr.Header.Revision + 1
		}
		cancel()
		sleep(ctx, minRetry)
	}
}

// current returns the worker this node holds, nil when none: a worker
// whose session ended is dropped.
func (b *SnowflakeBackend) current() *heldWorker {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h := b.held; h != nil && !h.live() {
		b.dropLocked(h, "its etcd session ended (lease expired, or etcd unreachable for the session TTL)")
	}
	return b.held
}

// drop forgets h, if it is still the worker held: its key is gone or
// belongs to another session.
func (b *SnowflakeBackend) drop(h *heldWorker, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropLocked(h, why)
}

func (b *SnowflakeBackend) dropLocked(h *heldWorker, why string) {
	if b.held != h {
		return
	}
	b.held = nil
	b.last, b.hasLast = h.id, true
	if !b.released.Load() {
		b.c.logger.Warn("lost the snowflake worker id; taking one again on the next call", "worker", h.id, "reason", why)
	}
}

// Worker implements snowflake.Backend: it declares the backend's stores
// in etcd (until that succeeds once), then returns the worker this node
// holds, taking one if it holds none: the lowest ID the smallest worker
// bits of the declared stores allow whose key no live session holds,
// preferring the one this backend held last, or at first a worker whose
// key names this node ID (left by a process of this node that crashed or
// restarted, whose lease has not expired yet). The worker is held by this
// backend's etcd session: if the session ends, the worker is lost, Worker
// takes one again (possibly another) and Reserve refuses the old one's
// time (ErrWorkerLost). A conflicting declaration fails with an error
// wrapping ErrSnowflakeConflict; no free worker, with ErrNoWorker.
func (b *SnowflakeBackend) Worker(ctx context.Context) (uint64, error) {
	if h := b.current(); h != nil {
		return h.id, nil
	}
	b.mu.Lock()
	prefer, has := b.last, b.hasLast
	b.mu.Unlock()
	h, err := b.acquire(ctx, prefer, has)
	if err != nil {
		return 0, err
	}
	return h.id, nil
}

// holding returns the held worker if it is w, taking w again when the node
// holds none and w is free.
func (b *SnowflakeBackend) holding(ctx context.Context, w uint64) (*heldWorker, error) {
	h := b.current()
	if h == nil {
		var err error
		if h, err = b.acquire(ctx, w, true); err != nil {
			return nil, err
		}
	}
	if h.id != w {
		return nil, fmt.Errorf("%w: worker %d (this node holds worker %d; a worker lost with its etcd session may be held by another node now)", ErrWorkerLost, w, h.id)
	}
	return h, nil
}

// acquire declares the stores if needed and takes a worker, prefer if it
// is free. One acquisition runs at a time.
func (b *SnowflakeBackend) acquire(ctx context.Context, prefer uint64, hasPrefer bool) (*heldWorker, error) {
	select {
	case b.acq <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting to take a snowflake worker id: %w", alloc.ErrUnavailable, ctx.Err())
	}
	defer func() { <-b.acq }()
	if h := b.current(); h != nil {
		return h, nil
	}
	if b.released.Load() {
		return nil, errClosed
	}
	cli, err := b.c.cliForCall()
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	declared := b.declared
	b.mu.Unlock()
	if !declared {
		for _, d := range b.decls {
			if err := b.declare(ctx, cli, d); err != nil {
				return nil, err
			}
		}
		b.mu.Lock()
		b.declared = true
		b.mu.Unlock()
	}
	for attempt := 1; ; attempt++ {
		sess, err := b.session(ctx, cli)
		if err != nil {
			return nil, err
		}
		h, err := b.take(ctx, cli, sess, prefer, hasPrefer)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt < 3 {
			// The lease expired before the session noticed: a new one.
			b.endSession(sess)
			continue
		}
		if err != nil && errors.Is(err, rpctypes.ErrLeaseNotFound) {
			err = b.c.unavailable("take a snowflake worker id", err)
		}
		return h, err
	}
}

// declare creates d's declaration unless it is there already with the
// same layout, in one transaction that also requires the store to hold no
// counters and every held worker ID to fit d's worker bits.
func (b *SnowflakeBackend) declare(ctx context.Context, cli *clientv3.Client, d SnowflakeDecl) error {
	dk := b.keys.decl(d.Store)
	val, _ := json.Marshal(declValue{Layout: d.Layout, WorkerBits: d.WorkerBits})
	limit := uint64(1) << d.WorkerBits
	from, end := b.keys.worker(limit), clientv3.GetPrefixRangeEnd(b.keys.workers)
	noCounters, counters := b.counters(d.Store)
	for {
		rctx, cancel := b.c.requestContext(ctx)
		start := time.Now()
		resp, err := cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(dk), "=", 0),
				noCounters,
				clientv3.Compare(clientv3.CreateRevision(from), "=", 0).WithRange(end)).
			Then(clientv3.OpPut(dk, string(val))).
			Else(clientv3.OpGet(dk), counters, clientv3.OpGet(from, clientv3.WithRange(end), clientv3.WithLimit(1))).
			Commit()
		cancel()
		b.c.record(opSnowflakeDeclare, start, err)
		if err != nil {
			return b.c.unavailable("declare snowflake store "+d.Store, err)
		}
		if resp.Succeeded {
			b.c.logger.Info("declared a snowflake store in etcd", "store", d.Store, "layout", d.Layout)
			b.noteDecl(d)
			return nil
		}
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			old, err := parseDecl(b.keys.stores, kvs[0])
			if err != nil {
				return fmt.Errorf("%w: %w", ErrSnowflakeConflict, err)
			}
			if old != d {
				return fmt.Errorf("%w: store %q is declared with layout %q and %d worker bits, not %q and %d",
					ErrSnowflakeConflict, d.Store, old.Layout, old.WorkerBits, d.Layout, d.WorkerBits)
			}
			b.noteDecl(d)
			return nil
		}
		if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 {
			return fmt.Errorf("%w: store %q holds counters (etcd key %s); a snowflake store needs a new name",
				ErrSnowflakeConflict, d.Store, kvs[0].Key)
		}
		if kvs := resp.Responses[2].GetResponseRange().GetKvs(); len(kvs) > 0 {
			w, _ := workerOf(b.keys.workers, string(kvs[0].Key))
			var v workerValue
			_ = json.Unmarshal(kvs[0].Value, &v)
			return fmt.Errorf("%w: store %q with %d worker bits allows worker ids below %d, and node %q holds worker %d",
				ErrSnowflakeConflict, d.Store, d.WorkerBits, limit, v.NodeID, w)
		}
		// Something changed in between: try again.
	}
}

// session returns the live session that holds worker keys, granting a new
// lease when there is none.
func (b *SnowflakeBackend) session(ctx context.Context, cli *clientv3.Client) (*concurrency.Session, error) {
	b.mu.Lock()
	old := b.sess
	b.mu.Unlock()
	if old != nil {
		select {
		case <-old.Done():
			// Revoke the old lease if it still exists, so that the
			// worker it held frees now: this node may take it again.
			b.endSession(old)
		default:
			return old, nil
		}
	}
	ttl := int64(max(1, (b.c.cfg.SessionTTL+time.Second-1)/time.Second))
	rctx, cancel := b.c.requestContext(ctx)
	start := time.Now()
	lease, err := cli.Grant(rctx, ttl)
	cancel()
	b.c.record(opSnowflakeWorker, start, err)
	if err != nil {
		return nil, b.c.unavailable("grant the snowflake worker's lease", err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(int(ttl)), concurrency.WithContext(b.c.ctx))
	if err != nil {
		return nil, b.c.unavailable("keep the snowflake worker's lease alive", err)
	}
	b.mu.Lock()
	b.sess = sess
	b.mu.Unlock()
	b.c.goLoop(func(ctx context.Context) {
		select {
		case <-sess.Done():
			b.current() // drops (and logs) the worker it held, if any
		case <-ctx.Done():
		}
	})
	return sess, nil
}

// endSession revokes sess's lease, deleting the worker key it holds, and
// forgets it.
func (b *SnowflakeBackend) endSession(sess *concurrency.Session) {
	b.mu.Lock()
	if b.sess == sess {
		b.sess = nil
	}
	if h := b.held; h != nil && h.sess == sess {
		b.dropLocked(h, "its etcd session ended")
	}
	b.mu.Unlock()
	sess.Orphan()
	cli := b.c.client.Load()
	if cli == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), resignTimeout)
	defer cancel()
	start := time.Now()
	_, err := cli.Revoke(ctx, sess.Lease())
	if err != nil && errors.Is(err, rpctypes.ErrLeaseNotFound) {
		err = nil
	}
	b.c.record(opResign, start, err)
}

// take reads the declarations and the held workers at one revision and
// creates the key of the worker to take, on sess's lease, if it is still
// as read and no store was declared since. The worker is prefer when given
// and free; else, on the backend's first acquisition, the lowest worker
// whose key names this node (a worker it held before a crash or a restart,
// whose session has not expired yet: its key moves to the new lease);
// else the lowest free worker.
func (b *SnowflakeBackend) take(ctx context.Context, cli *clientv3.Client, sess *concurrency.Session, prefer uint64, hasPrefer bool) (*heldWorker, error) {
	val, _ := json.Marshal(workerValue{NodeID: b.c.cfg.NodeID})
	for ctx.Err() == nil {
		rctx, cancel := b.c.requestContext(ctx)
		start := time.Now()
		read, err := cli.Txn(rctx).Then(
			clientv3.OpGet(b.keys.stores, clientv3.WithPrefix()),
			clientv3.OpGet(b.keys.workers, clientv3.WithPrefix()),
		).Commit()
		cancel()
		b.c.record(opSnowflakeWorker, start, err)
		if err != nil {
			return nil, b.c.unavailable("read snowflake workers", err)
		}
		bits := uint8(0)
		for _, kv := range read.Responses[0].GetResponseRange().GetKvs() {
			d, err := parseDecl(b.keys.stores, kv)
			if err != nil {
				return nil, err
			}
			if bits == 0 || d.WorkerBits < bits {
				bits = d.WorkerBits
			}
		}
		if bits == 0 {
			return nil, fmt.Errorf("%w: no snowflake store is declared in etcd", ErrNoWorker)
		}
		limit := uint64(1) << bits
		taken := map[uint64]bool{}
		var mine *mvccpb.KeyValue // the lowest worker key naming this node
		mineID := uint64(0)
		for _, kv := range read.Responses[1].GetResponseRange().GetKvs() {
			w, ok := workerOf(b.keys.workers, string(kv.Key))
			if !ok {
				continue
			}
			taken[w] = true
			var v workerValue
			if json.Unmarshal(kv.Value, &v) == nil && v.NodeID == b.c.cfg.NodeID && w < limit && mine == nil {
				mine, mineID = kv, w
			}
		}
		var w uint64
		var modRev int64 // the worker key's mod revision as read; 0: absent
		switch {
		case hasPrefer && prefer < limit && !taken[prefer]:
			w = prefer
		case !hasPrefer && mine != nil:
			w, modRev = mineID, mine.ModRevision
		default:
			found := false
			for c := uint64(0); !found && c < limit && c <= uint64(len(taken)); c++ {
				w, found = c, !taken[c]
			}
			if !found {
				return nil, fmt.Errorf("%w: all %d worker ids the declared stores allow (%d worker bits) are held by live etcd sessions", ErrNoWorker, limit, bits)
			}
		}
		wk, tk := b.keys.worker(w), b.keys.timeKey(w)
		rctx, cancel = b.c.requestContext(ctx)
		start = time.Now()
		resp, err := cli.Txn(rctx).
			If(clientv3.Compare(clientv3.ModRevision(wk), "=", modRev),
				clientv3.Compare(clientv3.ModRevision(b.keys.stores), "<", read.Header.Revision+1).WithPrefix()).
			Then(clientv3.OpPut(wk, string(val), clientv3.WithLease(sess.Lease())), clientv3.OpGet(tk)).
			Commit()
		cancel()
		b.c.record(opSnowflakeWorker, start, err)
		if err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return nil, err
			}
			return nil, b.c.unavailable("take a snowflake worker id", err)
		}
		if !resp.Succeeded {
			continue // taken meanwhile, or a store declared: read again
		}
		tc, err := counterOf(resp.Responses[1].GetResponseRange().GetKvs())
		if err != nil {
			return nil, err
		}
		h := &heldWorker{id: w, key: wk, sess: sess}
		b.counterc.cache(tk, tc)
		b.mu.Lock()
		b.held = h
		b.mu.Unlock()
		b.c.logger.Info("holding a snowflake worker id", "worker", w, "lease", fmt.Sprintf("%x", int64(sess.Lease())),
			"taken_over", modRev != 0, "reserved_until_ms", tc.value)
		return h, nil
	}
	return nil, fmt.Errorf("%w: taking a snowflake worker id: %w", alloc.ErrUnavailable, ctx.Err())
}

// release gives the worker up at once: the store is closing.
func (b *SnowflakeBackend) release() {
	b.released.Store(true)
	b.mu.Lock()
	sess := b.sess
	b.mu.Unlock()
	if sess != nil {
		b.endSession(sess)
	}
}

// Reserve implements snowflake.Backend for key snowflake.TimeKey(w) of the
// worker w this node holds: it grants the milliseconds hw+1 .. hw+want
// above hw, the highest ever reserved for w, with a compare-and-swap on
// w's time counter that also requires w's key to be held by this node's
// session (the reservation of a worker the node lost or never held fails
// with ErrWorkerLost). When the node holds no worker, it takes w again if
// w is free. The same transaction reads every Snowflake floor set since
// the previous reservation, and calls the floor hook for each before
// returning; and while the native store's node leads, its election key
// (the epoch, as for counters) and every worker's reserved time
// (MaxReserved).
func (b *SnowflakeBackend) Reserve(ctx context.Context, key keyspace.Key, want, need uint64) (alloc.Range, alloc.Epoch, error) {
	if key.Store != snowflake.TimeStore {
		return alloc.Range{}, 0, fmt.Errorf("etcdcompat: the snowflake backend reserves workers' time (store %s) only, not %s/%s", snowflake.TimeStore, key.Store, key.Name)
	}
	w, err := strconv.ParseUint(key.Name, 10, 64)
	if err != nil {
		return alloc.Range{}, 0, fmt.Errorf("etcdcompat: time key %q does not name a worker", key.Name)
	}
	cli, err := b.c.cliForCall()
	if err != nil {
		return alloc.Range{}, 0, err
	}
	for retried := false; ; retried = true {
		h, err := b.holding(ctx, w)
		if err != nil {
			return alloc.Range{}, 0, err
		}
		b.mu.Lock()
		since := b.floorsRev
		b.mu.Unlock()
		t := b.tenure()
		then := []clientv3.Op{clientv3.OpGet(b.keys.floors, clientv3.WithPrefix(), clientv3.WithMinModRev(since+1))}
		if t != nil {
			then = append(then, clientv3.OpGet(t.key), clientv3.OpGet(b.keys.time, clientv3.WithPrefix()))
		}
		lost := false
		rng, resp, err := b.c.casReserve(ctx, cli, casReservation{
			key:    b.keys.timeKey(w),
			label:  "worker " + workerName(w) + "'s time",
			op:     opSnowflakeTime,
			what:   "reserve time",
			cmps:   []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(h.key), "=", h.sess.Lease())},
			then:   then,
			orElse: []clientv3.Op{clientv3.OpGet(h.key)},
			refused: func(r []*etcdserverpb.ResponseOp) error {
				if kvs := r[0].GetResponseRange().GetKvs(); len(kvs) == 1 && kvs[0].Lease == int64(h.sess.Lease()) {
					return nil
				}
				lost = true
				return fmt.Errorf("%w: worker %d's key is gone or held by another session", ErrWorkerLost, w)
			},
		}, &b.counterc, want, need)
		if lost {
			b.drop(h, "its key is gone or held by another session")
			if !retried {
				continue // take it again, if it is free
			}
		}
		if err != nil {
			return alloc.Range{}, 0, err
		}
		b.afterReserve(resp)
		var epoch alloc.Epoch
		if t != nil {
			if kvs := resp.Responses[2].GetResponseRange().GetKvs(); len(kvs) == 1 && kvs[0].CreateRevision == t.rev {
				epoch = alloc.Epoch(t.rev)
			} else {
				t.end()
			}
		}
		return rng, epoch, nil
	}
}

// afterReserve records what a committed time reservation read: the floors
// changed since the revision of an earlier one, and (while leading) every
// worker's time.
func (b *SnowflakeBackend) afterReserve(resp *clientv3.TxnResponse) {
	for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
		b.applyFloor(kv)
	}
	var reserved map[uint64]uint64
	if len(resp.Responses) > 3 {
		reserved = b.parseTimes(resp.Responses[3].GetResponseRange().GetKvs())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// The read covered (since, revision], and since is at most floorsRev.
	b.floorsRev = max(b.floorsRev, resp.Header.Revision)
	if reserved != nil {
		b.reserved = reserved
	}
}

func (b *SnowflakeBackend) parseTimes(kvs []*mvccpb.KeyValue) map[uint64]uint64 {
	out := make(map[uint64]uint64, len(kvs))
	for _, kv := range kvs {
		w, ok := workerOf(b.keys.time, string(kv.Key))
		if !ok {
			continue
		}
		c, err := counterOf([]*mvccpb.KeyValue{kv})
		if err != nil {
			continue
		}
		out[w] = c.value
	}
	return out
}

// Floor implements snowflake.Backend: it raises key's Snowflake floor to
// at least value with a compare-and-swap that requires key's store to be
// declared a Snowflake store, and returns the floor after the change. Any
// node may set a floor (there is no leader to forward to): every node
// learns it from a watch at once, and before its next time reservation
// returns in any case. The floor hook is called here too.
func (b *SnowflakeBackend) Floor(ctx context.Context, key keyspace.Key, value uint64) (uint64, error) {
	if value > keyspace.MaxID {
		return 0, fmt.Errorf("etcdcompat: floor %d of %s/%s is above 2^63-1", value, key.Store, key.Name)
	}
	cli, err := b.c.cliForCall()
	if err != nil {
		return 0, err
	}
	ctx, cancel := b.c.requestContext(ctx)
	defer cancel()
	fk, dk := b.keys.floor(key), b.keys.decl(key.Store)
	cur, known := b.counterc.cached(fk)
	for {
		if !known {
			start := time.Now()
			resp, err := cli.Get(ctx, fk)
			b.c.record(opGet, start, err)
			if err != nil {
				return 0, b.c.unavailable("read snowflake floor", err)
			}
			if cur, err = counterOf(resp.Kvs); err != nil {
				return 0, err
			}
		}
		if cur.value >= value && cur.modRev != 0 {
			b.noteFloor(key, cur.value)
			return cur.value, nil
		}
		start := time.Now()
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(fk), "=", cur.modRev),
				clientv3.Compare(clientv3.CreateRevision(dk), ">", 0)).
			Then(clientv3.OpPut(fk, encode(value))).
			Else(clientv3.OpGet(fk), clientv3.OpGet(dk)).
			Commit()
		b.c.record(opSnowflakeFloor, start, err)
		if err != nil {
			return 0, b.c.unavailable("set snowflake floor", err)
		}
		if resp.Succeeded {
			b.counterc.cache(fk, counter{value: value, modRev: resp.Header.Revision})
			b.noteFloor(key, value)
			return value, nil
		}
		if len(resp.Responses[1].GetResponseRange().GetKvs()) == 0 {
			return 0, fmt.Errorf("%w: store %q is not declared a snowflake store in etcd", snowflake.ErrNotSnowflake, key.Store)
		}
		if cur, err = counterOf(resp.Responses[0].GetResponseRange().GetKvs()); err != nil {
			return 0, err
		}
		known = true
		b.counterc.cache(fk, cur)
	}
}

// Applied implements snowflake.Backend. For a key of a Snowflake store it
// is the key's floor as this node knows it: every floor committed before
// its last time reservation, and those its watch brought since. For
// snowflake.TimeKey(w) it is w's reserved time as this node last saw it
// (read from etcd when it took the worker, and raised by each
// reservation: exact while it holds w), read from etcd when unknown; if
// etcd cannot be read then, it errs high (keyspace.MaxID), which only
// makes the Service's next reservation one millisecond long.
func (b *SnowflakeBackend) Applied(key keyspace.Key) uint64 {
	if key.Store != snowflake.TimeStore {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.floors[key]
	}
	w, err := strconv.ParseUint(key.Name, 10, 64)
	if err != nil {
		return 0
	}
	tk := b.keys.timeKey(w)
	if c, ok := b.counterc.cached(tk); ok {
		return c.value
	}
	cli, err := b.c.cli()
	if err != nil {
		return keyspace.MaxID
	}
	ctx, cancel := b.c.requestContext(b.c.ctx)
	defer cancel()
	start := time.Now()
	resp, err := cli.Get(ctx, tk)
	b.c.record(opSnowflakeRead, start, err)
	if err != nil {
		return keyspace.MaxID
	}
	c, err := counterOf(resp.Kvs)
	if err != nil {
		return keyspace.MaxID
	}
	b.counterc.cache(tk, c)
	return c.value
}

// MaxReserved implements snowflake.Backend with one linearizable range
// read of every worker's time counter. If etcd cannot be read, it answers
// what the last time reservation this node made while leading read, when
// except is the worker it holds (what STRONG calls need: every time
// reserved before that reservation), and keyspace.MaxID otherwise (a
// bound nothing exceeds).
func (b *SnowflakeBackend) MaxReserved(except uint64) uint64 {
	var times map[uint64]uint64
	cli, err := b.c.cli()
	if err == nil {
		ctx, cancel := b.c.requestContext(b.c.ctx)
		start := time.Now()
		var resp *clientv3.GetResponse
		resp, err = cli.Get(ctx, b.keys.time, clientv3.WithPrefix())
		cancel()
		b.c.record(opSnowflakeRead, start, err)
		if err == nil {
			times = b.parseTimes(resp.Kvs)
		}
	}
	if err != nil {
		b.mu.Lock()
		h, reserved := b.held, b.reserved
		b.mu.Unlock()
		if h == nil || h.id != except || reserved == nil {
			b.c.logger.Warn("cannot read the workers' reserved time from etcd; answering the largest bound", "error", err)
			return keyspace.MaxID
		}
		times = reserved
	}
	var m uint64
	for w, t := range times {
		if w != except {
			m = max(m, t)
		}
	}
	return m
}
