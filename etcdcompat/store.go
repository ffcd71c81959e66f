package etcdcompat

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/keyspace"
)

// Store keeps counters in etcd in the native layout. It implements
// alloc.Backend (a daemon's RangeStore): the allocator reserves ranges through Reserve and fences
// STRONG calls with Confirm, exactly as it does over Raft. See DESIGN.md.
type Store struct {
	*conn
	self string // this node's election value (ElectionValue, encoded)

	countersDir string
	floorsDir   string
	electionPfx string // concurrency.NewElection adds the trailing "/"

	// tenure is this node's current leadership, nil while it does not
	// lead. Confirm checks it against etcd on every batch of STRONG calls.
	tenure atomic.Pointer[tenure]

	// leader is the election key with the lowest create revision, as last
	// observed: the node that serves STRONG calls. Nil when none is known.
	leader atomic.Pointer[leaderInfo]

	sessionLive atomic.Bool // this node holds a live etcd session
	floorHook   atomic.Pointer[func(keyspace.Key, uint64)]

	counters counterCache // counter keys' last known state
}

// tenure is one leadership of this node: its election key and that key's
// create revision, which is the epoch of every range reserved under it.
type tenure struct {
	key      string
	rev      int64
	lost     chan struct{}
	lostOnce sync.Once
}

// end marks the tenure as lost so that the campaign loop starts over.
func (t *tenure) end() { t.lostOnce.Do(func() { close(t.lost) }) }

type leaderInfo struct {
	addr string
	rev  int64
}

// maxCachedCounters bounds the counter cache; past it the cache starts
// over, which costs one extra read per key.
const maxCachedCounters = 1 << 16

func newStore(c *conn) *Store {
	p := c.cfg.Prefix
	return &Store{
		conn:        c,
		self:        ElectionValue{NodeID: c.cfg.NodeID, PeerAddr: c.cfg.PeerAdvertise, GRPCAddr: c.cfg.GRPCAdvertise}.encode(),
		countersDir: p + countersDir,
		floorsDir:   p + floorsDir,
		electionPfx: p + electionDir,
	}
}

// Start waits until etcd answers, then starts campaigning for STRONG
// leadership, following who leads and watching for floors.
func (s *Store) Start(ctx context.Context) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	s.goLoop(s.campaignLoop)
	s.goLoop(s.observeLoop)
	s.goLoop(s.floorLoop)
	return nil
}

// WaitReady blocks until a leader is known, so that STRONG calls can be
// served or forwarded. WEAK calls need no leader.
func (s *Store) WaitReady(ctx context.Context) error {
	if err := s.waitConnected(ctx); err != nil {
		return err
	}
	for s.leader.Load() == nil {
		if !sleep(ctx, 10*time.Millisecond) {
			return fmt.Errorf("%w: no ordinal node has won the election in etcd yet: %w", alloc.ErrUnavailable, ctx.Err())
		}
	}
	return nil
}

// Leader returns the node ID and peer address of the node that leads, as
// its election value names them.
func (s *Store) Leader() (id, peerAddr string) {
	if l := s.leader.Load(); l != nil {
		v, _ := ParseElectionValue([]byte(l.addr))
		return v.NodeID, v.PeerAddr
	}
	return "", ""
}

// ElectionValue is what a node of the native layout publishes in its
// election key, as JSON: who it is and where other nodes forward STRONG
// calls to it (its peer port), and its client address for tools.
type ElectionValue struct {
	NodeID   string `json:"node_id"`
	PeerAddr string `json:"peer_addr"`
	GRPCAddr string `json:"grpc_addr,omitempty"`
}

func (v ElectionValue) encode() string {
	b, _ := json.Marshal(v)
	return string(b)
}

// ParseElectionValue decodes an election value. A value that is not one
// (an older ordinal published its bare gRPC address) is an error: nodes
// of different versions do not forward to each other.
func ParseElectionValue(b []byte) (ElectionValue, error) {
	var v ElectionValue
	if err := json.Unmarshal(b, &v); err != nil || v.NodeID == "" || v.PeerAddr == "" {
		return ElectionValue{}, fmt.Errorf("etcdcompat: election value %q is not an ordinal node's (an older version?)", b)
	}
	return v, nil
}

// IsLeader reports whether this node currently believes it leads. Only a
// Confirm proves it.
func (s *Store) IsLeader() bool { return s.tenure.Load() != nil }

// Tenure returns this node's election key and the epoch (the key's create
// revision) of its current leadership, with ok false when it does not
// believe it leads.
func (s *Store) Tenure() (electionKey string, epoch int64, ok bool) {
	if t := s.tenure.Load(); t != nil {
		return t.key, t.rev, true
	}
	return "", 0, false
}

// Healthy reports whether the node reaches etcd, holds a live session and
// knows a leader.
func (s *Store) Healthy() bool {
	return s.reachable() && s.sessionLive.Load() && s.leader.Load() != nil
}

// SetFloorHook registers fn to be called for every floor any node sets.
func (s *Store) SetFloorHook(fn func(key keyspace.Key, floor uint64)) {
	s.floorHook.Store(&fn)
}

// Close resigns leadership, so that another node takes over at once
// rather than when the lease expires, and closes the client.
func (s *Store) Close() error {
	return s.close(nil)
}

// notLeader explains that this node cannot serve STRONG calls.
func (s *Store) notLeader() error {
	if l := s.leader.Load(); l != nil && l.addr != s.self {
		v, _ := ParseElectionValue([]byte(l.addr))
		return fmt.Errorf("%w: the leader is %s", alloc.ErrNotLeader, v.NodeID)
	}
	return fmt.Errorf("%w: no ordinal node leads in etcd right now (election in progress)", alloc.ErrNotLeader)
}

// Reserve implements alloc.Backend with one compare-and-swap transaction
// on the key's counter. While this node leads, the same transaction reads
// its election key: the range is tagged with the tenure only if that key
// still existed, with the tenure's create revision, at the transaction's
// revision, so only ranges reserved while this node led serve STRONG
// calls. The transaction also requires that the key's store is not
// declared a Snowflake store (ErrSnowflakeStore), so that a node that has
// not learnt a declaration yet cannot hand out counter IDs there.
func (s *Store) Reserve(ctx context.Context, key keyspace.Key, want, need uint64) (alloc.Range, alloc.Epoch, error) {
	cli, err := s.cliForCall()
	if err != nil {
		return alloc.Range{}, 0, err
	}
	t := s.tenure.Load()
	var then []clientv3.Op
	if t != nil {
		then = append(then, clientv3.OpGet(t.key))
	}
	rng, resp, err := s.casReserve(ctx, cli, casReservation{
		key:    keyIn(s.countersDir, key),
		label:  key.Store + "/" + key.Name,
		op:     opReserve,
		what:   "reserve ids",
		cmps:   []clientv3.Cmp{s.sfKeys.notDeclared(key.Store)},
		then:   then,
		orElse: []clientv3.Op{clientv3.OpGet(s.sfKeys.decl(key.Store))},
		refused: func(r []*etcdserverpb.ResponseOp) error {
			if len(r[0].GetResponseRange().GetKvs()) > 0 {
				return snowflakeStoreError(key.Store)
			}
			return nil
		},
	}, &s.counters, want, need)
	if err != nil {
		return alloc.Range{}, 0, err
	}
	var epoch alloc.Epoch
	if t != nil {
		if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) == 1 && kvs[0].CreateRevision == t.rev {
			epoch = alloc.Epoch(t.rev)
		} else {
			t.end()
		}
	}
	return rng, epoch, nil
}

// casReservation is one compare-and-swap reservation on a counter key:
// what it compares and reads besides the counter itself. Counters of the
// native layout and Snowflake workers' time (snowflake.go) share it.
type casReservation struct {
	key   string // the counter's etcd key
	label string // names the counter in messages
	op    string // the metrics op of the transaction
	what  string // what the transaction does, for messages
	// cmps are further conditions of the transaction.
	cmps []clientv3.Cmp
	// then are read when it commits, at its revision, after the Put:
	// Responses[1:] of the transaction's answer.
	then []clientv3.Op
	// orElse are read when it does not commit, after the counter.
	orElse []clientv3.Op
	// refused is given the answers to orElse when the transaction did
	// not commit; an error stops the reservation, nil retries it with
	// the counter just read. Nil always retries.
	refused func([]*etcdserverpb.ResponseOp) error
}

// counterCache remembers the last known state of counter keys, so that a
// reservation is usually one transaction. A stale entry only costs a
// failed compare, which returns the current state. The zero value is
// empty and ready.
type counterCache struct {
	mu sync.Mutex
	m  map[string]counter
}

func (cc *counterCache) cached(etcdKey string) (counter, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	c, ok := cc.m[etcdKey]
	return c, ok
}

// cache records c as etcdKey's state unless a newer one is known.
func (cc *counterCache) cache(etcdKey string, c counter) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if old, ok := cc.m[etcdKey]; ok && old.modRev > c.modRev {
		return // a newer state is already known
	}
	if cc.m == nil {
		cc.m = map[string]counter{}
	}
	if len(cc.m) >= maxCachedCounters {
		clear(cc.m)
	}
	cc.m[etcdKey] = c
}

// casReserve reserves the counter's next IDs, hw+1 .. hw+min(want, what
// is left below 2^63), with Txn If(mod_revision(counter) == m, cmps...)
// Then(Put(counter, hw+n), then...) Else(Get(counter), orElse...),
// starting from the state cc remembers and reading the counter when cc
// knows nothing. It returns the range and the committed transaction's
// answer. Every committed Put raises the counter above every range granted
// before, whichever node holds them: ranges never overlap. A transaction
// whose answer is lost may have committed: its range is then a gap.
func (c *conn) casReserve(ctx context.Context, cli *clientv3.Client, r casReservation, cc *counterCache, want, need uint64) (alloc.Range, *clientv3.TxnResponse, error) {
	cur, known := cc.cached(r.key)
	for {
		if !known {
			start := time.Now()
			resp, err := cli.Get(ctx, r.key)
			c.record(opGet, start, err)
			if err != nil {
				return alloc.Range{}, nil, c.unavailable("read counter", err)
			}
			if cur, err = counterOf(resp.Kvs); err != nil {
				return alloc.Range{}, nil, err
			}
		}
		avail := keyspace.MaxID - cur.value
		if avail < need {
			return alloc.Range{}, nil, fmt.Errorf("reserve %d ids of %s at %d: %w", need, r.label, cur.value, keyspace.ErrOverflow)
		}
		last := cur.value + min(want, avail)
		cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(r.key), "=", cur.modRev)}, r.cmps...)
		then := append([]clientv3.Op{clientv3.OpPut(r.key, encode(last))}, r.then...)
		orElse := append([]clientv3.Op{clientv3.OpGet(r.key)}, r.orElse...)
		start := time.Now()
		resp, err := cli.Txn(ctx).If(cmps...).Then(then...).Else(orElse...).Commit()
		c.record(r.op, start, err)
		if err != nil {
			// The transaction may have committed: the cached state is
			// then stale, and the next compare fails and refreshes it.
			// The range, if it was granted, is a gap.
			return alloc.Range{}, nil, c.unavailable(r.what, err)
		}
		if !resp.Succeeded {
			if cur, err = counterOf(resp.Responses[0].GetResponseRange().GetKvs()); err != nil {
				return alloc.Range{}, nil, err
			}
			known = true
			cc.cache(r.key, cur)
			if r.refused != nil {
				if err := r.refused(resp.Responses[1:]); err != nil {
					return alloc.Range{}, nil, err
				}
			}
			continue
		}
		cc.cache(r.key, counter{value: last, modRev: resp.Header.Revision})
		return alloc.Range{First: cur.value + 1, Last: last}, resp, nil
	}
}

// Confirm implements alloc.Backend: a linearizable read, issued after the
// call, that finds this node's election key with the create revision of
// its tenure. See DESIGN.md for why that proves leadership.
func (s *Store) Confirm(ctx context.Context) (alloc.Epoch, error) {
	t := s.tenure.Load()
	if t == nil {
		return 0, s.notLeader()
	}
	cli, err := s.cliForCall()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := cli.Get(ctx, t.key)
	s.record(opConfirm, start, err)
	if err != nil {
		return 0, s.unavailable("confirm leadership", err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != t.rev {
		t.end()
		return 0, fmt.Errorf("%w: this node's election key is gone (its etcd lease expired or was revoked)", alloc.ErrNotLeader)
	}
	return alloc.Epoch(t.rev), nil
}

// Floor implements alloc.Backend. Only the leader sets floors, in a
// transaction fenced by its election key, so that the leader of the moment
// drops IDs below the floor before the call returns; other nodes forward
// the call to it. The floor is also recorded under floors/, which every
// node watches to drop WEAK IDs below it. A key of a store declared a
// Snowflake store is refused with ErrSnowflakeStore: its floors are the
// Snowflake backend's (SnowflakeBackend.Floor).
func (s *Store) Floor(ctx context.Context, key keyspace.Key, value uint64) (uint64, error) {
	t := s.tenure.Load()
	if t == nil {
		return 0, s.notLeader()
	}
	cli, err := s.cliForCall()
	if err != nil {
		return 0, err
	}
	ck, fk := keyIn(s.countersDir, key), keyIn(s.floorsDir, key)
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	for {
		start := time.Now()
		read, err := cli.Txn(ctx).Then(clientv3.OpGet(ck), clientv3.OpGet(fk)).Commit()
		s.record(opGet, start, err)
		if err != nil {
			return 0, s.unavailable("read counter", err)
		}
		cur, err := counterOf(read.Responses[0].GetResponseRange().GetKvs())
		if err != nil {
			return 0, err
		}
		floor, err := counterOf(read.Responses[1].GetResponseRange().GetKvs())
		if err != nil {
			return 0, err
		}
		var ops []clientv3.Op
		hw := max(cur.value, value)
		if hw != cur.value {
			ops = append(ops, clientv3.OpPut(ck, encode(hw)))
		}
		if value > floor.value {
			ops = append(ops, clientv3.OpPut(fk, encode(value)))
		}
		start = time.Now()
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev),
				clientv3.Compare(clientv3.ModRevision(ck), "=", cur.modRev),
				clientv3.Compare(clientv3.ModRevision(fk), "=", floor.modRev),
				s.sfKeys.notDeclared(key.Store)).
			Then(ops...).
			Else(clientv3.OpGet(t.key), clientv3.OpGet(s.sfKeys.decl(key.Store))).
			Commit()
		s.record(opFloor, start, err)
		if err != nil {
			return 0, s.unavailable("set floor", err)
		}
		if resp.Succeeded {
			if hw != cur.value {
				s.counters.cache(ck, counter{value: hw, modRev: resp.Header.Revision})
			}
			return hw, nil
		}
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) != 1 || kvs[0].CreateRevision != t.rev {
			t.end()
			return 0, fmt.Errorf("%w: lost leadership while setting a floor", alloc.ErrNotLeader)
		}
		if len(resp.Responses[1].GetResponseRange().GetKvs()) > 0 {
			return 0, snowflakeStoreError(key.Store)
		}
		// The counter or the floor moved in between: read again.
	}
}

// HighWater implements alloc.Backend with a linearizable read.
func (s *Store) HighWater(ctx context.Context, key keyspace.Key) (uint64, error) {
	cli, err := s.cliForCall()
	if err != nil {
		return 0, err
	}
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	start := time.Now()
	resp, err := cli.Get(ctx, keyIn(s.countersDir, key))
	s.record(opGet, start, err)
	if err != nil {
		return 0, s.unavailable("read counter", err)
	}
	c, err := counterOf(resp.Kvs)
	return c.value, err
}
