package etcdcompat

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/keyspace"
)

// Key layout of Layotto's sequencer API and its etcd component. Layotto's
// runtime turns a request's key into
//
//	sequencer|||<key>                with no app ID (keyPrefix "none", or "appid" with an empty app ID)
//	sequencer|||<appid>||<key>       with the default keyPrefix strategy "appid"
//
// and its etcd component stores it under keyPrefixPath (default
// "/layotto/").
const (
	layottoAPIPrefix = "sequencer" + layottoSeparator
)

// LayottoStore serves IDs from etcd exactly as Layotto's etcd sequencer
// component does: every call is one transaction that Puts an empty value
// to the key and reads it back, and the ID is the key's etcd version.
// Ordinal nodes and Layotto sidecars can serve the same keys at once
// without a duplicate, because etcd orders all their Puts.
//
// There are no ranges and no leader: every node serves every call, and
// STRONG and WEAK calls are both linearizable. The price is one etcd write
// per ID. It is an alloc.Sequencer, which the daemon serves from in place
// of the range allocator, and reserves no ranges.
type LayottoStore struct {
	*conn
	keyPrefix string // <prefix>sequencer|||[<appid>||]

	// counterStores are the stores this node has marked in etcd as ones
	// that handed out counter IDs (snowflakeKeys.marker).
	mu            sync.Mutex
	counterStores map[string]bool
}

// maxMarkedStores bounds LayottoStore.counterStores; past it the set
// starts over, which costs one more Put of a marker per store.
const maxMarkedStores = 1 << 12

func (s *LayottoStore) marked(store string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counterStores[store]
}

func (s *LayottoStore) mark(store string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.counterStores) >= maxMarkedStores {
		clear(s.counterStores)
	}
	s.counterStores[store] = true
}

func newLayottoStore(c *conn) *LayottoStore {
	kp := c.cfg.Prefix + layottoAPIPrefix
	if c.cfg.AppID != "" {
		kp += c.cfg.AppID + layottoAppSep
	}
	return &LayottoStore{conn: c, keyPrefix: kp, counterStores: map[string]bool{}}
}

// EtcdKey returns the etcd key that holds key's counter. The store name
// plays no part: in Layotto it only selects the component.
func (s *LayottoStore) EtcdKey(key string) string { return s.keyPrefix + key }

// Start waits until etcd answers.
func (s *LayottoStore) Start(ctx context.Context) error { return s.connect(ctx) }

// WaitReady returns once etcd has answered: there is no leader to wait for.
func (s *LayottoStore) WaitReady(ctx context.Context) error { return s.waitConnected(ctx) }

// Leader returns no leader: no call is ever forwarded.
func (s *LayottoStore) Leader() (id, peerAddr string) { return "", "" }

// Healthy reports whether the client's connection to etcd is up.
func (s *LayottoStore) Healthy() bool { return s.reachable() }

// Close closes the client.
func (s *LayottoStore) Close() error { return s.close(nil) }

// checkLayottoKey rejects what Layotto's runtime rejects, with its
// message.
func checkLayottoKey(name string) error {
	if strings.Contains(name, layottoForbidden) {
		return status.Errorf(codes.InvalidArgument, "input key/keyPrefix '%s' can't contain '%s'", name, layottoForbidden)
	}
	return nil
}

// Next implements alloc.Sequencer with Layotto's transaction. count must
// be 1: the IDs are etcd versions, raised by one per Put, and Puts by other
// nodes and sidecars interleave, so no block of contiguous IDs can be
// reserved. A key of a store declared a Snowflake store is refused with
// ErrSnowflakeStore, in the same transaction.
func (s *LayottoStore) Next(ctx context.Context, key keyspace.Key, _ alloc.Mode, count uint64) (uint64, error) {
	if count != 1 {
		return 0, status.Errorf(codes.FailedPrecondition,
			"GetNextIds with count %d is not available with the Layotto etcd layout (--etcd-layout layotto): "+
				"each id is the etcd version of the key after one Put, as in Layotto's etcd component, so ids "+
				"cannot be reserved in contiguous blocks; ask for one id per call, or use the native layout", count)
	}
	if err := checkLayottoKey(key.Name); err != nil {
		return 0, err
	}
	cli, err := s.cliForCall()
	if err != nil {
		return 0, err
	}
	k := s.EtcdKey(key.Name)
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	// Layotto's component Puts and reads the key back in both branches of
	// its transaction, so its condition decides nothing; here the
	// condition is that the store is not a Snowflake store, and the
	// first call of a store through this node also marks the store as one
	// that handed out counters, which a Snowflake declaration refuses.
	then := []clientv3.Op{clientv3.OpPut(k, ""), clientv3.OpGet(k)}
	mark := !s.marked(key.Store)
	if mark {
		then = append(then, clientv3.OpPut(s.sfKeys.marker(key.Store), ""))
	}
	start := time.Now()
	resp, err := cli.Txn(ctx).
		If(s.sfKeys.notDeclared(key.Store)).
		Then(then...).
		Else(clientv3.OpGet(s.sfKeys.decl(key.Store))).
		Commit()
	s.record(opNext, start, err)
	if err != nil {
		return 0, s.unavailable("put", err)
	}
	if !resp.Succeeded {
		return 0, snowflakeStoreError(key.Store)
	}
	if mark {
		s.mark(key.Store)
	}
	kvs := resp.Responses[1].GetResponseRange().GetKvs()
	if len(kvs) != 1 {
		return 0, fmt.Errorf("etcd key %s: read back %d keys after a Put", k, len(kvs))
	}
	return uint64(kvs[0].Version), nil
}

// HighWater returns the key's etcd version: the last ID handed out, by
// ordinal or by Layotto. A linearizable read.
func (s *LayottoStore) HighWater(ctx context.Context, key keyspace.Key) (uint64, error) {
	if err := checkLayottoKey(key.Name); err != nil {
		return 0, err
	}
	cli, err := s.cliForCall()
	if err != nil {
		return 0, err
	}
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	start := time.Now()
	resp, err := cli.Get(ctx, s.EtcdKey(key.Name))
	s.record(opGet, start, err)
	if err != nil {
		return 0, s.unavailable("read", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return uint64(resp.Kvs[0].Version), nil
}

// SetFloor implements alloc.Sequencer with Layotto's biggerThan
// semantics: Layotto's etcd component cannot raise a counter (a version
// grows by one per Put), so it only checks, at start-up, that the current
// version is at least biggerThan, and refuses to start otherwise. SetFloor
// does the same check on the key it serves IDs from: it succeeds when
// every later ID is already above floor and answers FailedPrecondition
// otherwise, changing nothing.
func (s *LayottoStore) SetFloor(ctx context.Context, key keyspace.Key, floor uint64) (uint64, error) {
	hw, err := s.HighWater(ctx, key)
	if err != nil {
		return 0, err
	}
	if hw < floor {
		return 0, status.Errorf(codes.FailedPrecondition,
			"etcd sequencer error: can not satisfy biggerThan guarantee. key: %s, key in etcd: %s, current id: %d, floor: %d "+
				"(the Layotto etcd layout cannot raise a counter: an id is the key's etcd version, which grows by one per Put)",
			key.Name, s.EtcdKey(key.Name), hw, floor)
	}
	return hw, nil
}
