package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ordinal-dev/ordinal/client"
)

// caller takes count IDs of key from one target and returns the first.
type caller interface {
	next(ctx context.Context, key string, count int64) (int64, error)
	close() error
}

// ordinalCaller calls an ordinal node (or the no-op server) through the Go
// client: unary calls, or the coalescing stream with WithStreaming.
type ordinalCaller struct {
	c    *client.Client
	mode client.Mode
}

// newOrdinalCaller makes a caller of the node at addr, or with a list
// "a:1,b:2,c:3" of those nodes (client.New picks the node of each call);
// prefetch, when not zero, is the block size of client.WithWeakPrefetch;
// extra are the options securing the connection (see
// Config.ClientOptions).
func newOrdinalCaller(addr, store string, mode client.Mode, stream bool, prefetch int, extra []client.Option) (*ordinalCaller, error) {
	// No retries: a benchmark counts failures instead of hiding them.
	opts := append(slices.Clip(extra), client.WithStore(store), client.WithRetry(1, 0))
	if stream {
		opts = append(opts, client.WithStreaming())
	}
	if prefetch > 0 {
		opts = append(opts, client.WithWeakPrefetch(prefetch))
	}
	c, err := client.New(addr, opts...)
	if err != nil {
		return nil, err
	}
	return &ordinalCaller{c: c, mode: mode}, nil
}

func (o *ordinalCaller) next(ctx context.Context, key string, count int64) (int64, error) {
	if count == 1 {
		return o.c.NextID(ctx, key, o.mode)
	}
	return o.c.NextIDs(ctx, key, o.mode, count)
}

func (o *ordinalCaller) close() error { return o.c.Close() }

// EtcdKeyPrefix is where Layotto's etcd sequencer keeps a key: the
// component's default keyPrefixPath "/layotto/" followed by the runtime's
// modified key "sequencer|||<key>" (the store name is not part of it).
const EtcdKeyPrefix = "/layotto/sequencer|||"

// etcdCaller takes IDs from etcd exactly as Layotto's etcd sequencer
// (components/sequencer/etcd/store.go, GetNextId) does: one transaction per
// ID that puts the key and reads it back, the ID being the key's Version,
// the number of times it was written.
type etcdCaller struct {
	c *clientv3.Client
}

func newEtcdCaller(addr string) (*etcdCaller, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{addr},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", addr, err)
	}
	return &etcdCaller{c: c}, nil
}

var errEtcdEmpty = errors.New("etcd: transaction read no key back")

func (e *etcdCaller) next(ctx context.Context, key string, count int64) (int64, error) {
	if count != 1 {
		return 0, fmt.Errorf("etcd: Layotto's sequencer takes one ID per call, not %d", count)
	}
	k := EtcdKeyPrefix + key
	kv := clientv3.NewKV(e.c)
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, ""), clientv3.OpGet(k)).
		Else(clientv3.OpPut(k, ""), clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return 0, err
	}
	if len(resp.Responses) < 2 || len(resp.Responses[1].GetResponseRange().GetKvs()) == 0 {
		return 0, errEtcdEmpty
	}
	return resp.Responses[1].GetResponseRange().GetKvs()[0].Version, nil
}

func (e *etcdCaller) close() error { return e.c.Close() }
