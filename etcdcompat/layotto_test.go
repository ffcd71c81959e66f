package etcdcompat_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/runtimev1"
	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
	"github.com/ordinal-dev/ordinal/internal/history"
)

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// layottoNextID does exactly what Layotto's etcd sequencer component does
// for one GetNextId: a transaction that Puts an empty value to the key and
// reads it back (the same in both branches), the ID being the version.
func layottoNextID(ctx context.Context, cli *clientv3.Client, key string) (int64, error) {
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, ""), clientv3.OpGet(key)).
		Else(clientv3.OpPut(key, ""), clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, err
	}
	return resp.Responses[1].GetResponseRange().Kvs[0].Version, nil
}

// TestLayottoLayout checks the keys and values of the Layotto layout
// against what Layotto's runtime and etcd component write, and the API's
// behaviour in that layout.
func TestLayottoLayout(t *testing.T) {
	e := etcdtest.Shared(t)
	admin := e.Client(t)
	for _, appID := range []string{"", "app1"} {
		t.Run(fmt.Sprintf("app id %q", appID), func(t *testing.T) {
			prefix := strings.TrimSuffix(etcdtest.UniquePrefix(t), "/") // the store adds the slash, as Layotto does
			c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 2, Store: etcdcompat.Config{
				Layout: etcdcompat.LayoutLayotto, Prefix: prefix, AppID: appID,
			}})
			etcdKey := prefix + "/sequencer|||key666"
			if appID != "" {
				etcdKey = prefix + "/sequencer|||" + appID + "||key666"
			}
			n1, n2 := c.Nodes()[0], c.Nodes()[1]

			// Layotto's demo: ten WEAK calls through the Runtime API give 1..10.
			for want := int64(1); want <= 10; want++ {
				nd := c.Nodes()[want%2]
				resp, err := runtimev1.NewRuntimeClient(nd.Conn()).GetNextId(ctx10(t), &runtimev1.GetNextIdRequest{StoreName: "sequencer_demo", Key: "key666"})
				if err != nil || resp.NextId != want {
					t.Fatalf("Runtime/GetNextId call %d via %s: %v, %v; want %d", want, nd.Name, resp, err, want)
				}
			}
			got, err := admin.Get(ctx10(t), etcdKey)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Kvs) != 1 || got.Kvs[0].Version != 10 || len(got.Kvs[0].Value) != 0 {
				t.Fatalf("etcd key %s: %v, want version 10 and an empty value", etcdKey, got.Kvs)
			}
			// The store name plays no part, as in Layotto; STRONG is one Put too.
			resp, err := n2.Sequencer().GetNextId(ctx10(t), &ordinalv1.GetNextIdRequest{StoreName: "other", Key: "key666", Options: strongOpts})
			if err != nil || resp.NextId != 11 {
				t.Fatalf("STRONG in another store: %v, %v; want 11", resp, err)
			}
			if id, err := layottoNextID(ctx10(t), admin, etcdKey); err != nil || id != 12 {
				t.Fatalf("a Layotto sidecar's next id: %d, %v; want 12", id, err)
			}
			hw, err := n1.Sequencer().GetHighWater(ctx10(t), &ordinalv1.GetHighWaterRequest{Key: "key666"})
			if err != nil || hw.HighWater != 12 {
				t.Fatalf("high water: %v, %v; want 12, the version", hw, err)
			}

			_, err = n1.Sequencer().GetNextIds(ctx10(t), &ordinalv1.GetNextIdsRequest{Key: "key666", Count: 2})
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "layotto") {
				t.Fatalf("GetNextIds count 2: %v, want FailedPrecondition naming the layout", err)
			}
			if r, err := n1.Sequencer().GetNextIds(ctx10(t), &ordinalv1.GetNextIdsRequest{Key: "key666", Count: 1}); err != nil || r.FirstId != 13 {
				t.Fatalf("GetNextIds count 1: %v, %v; want 13", r, err)
			}

			// biggerThan: satisfied floors succeed, others change nothing.
			if r, err := n1.Sequencer().SetFloor(ctx10(t), &ordinalv1.SetFloorRequest{Key: "key666", Floor: 13}); err != nil || r.HighWater != 13 {
				t.Fatalf("SetFloor(13) at version 13: %v, %v", r, err)
			}
			_, err = n1.Sequencer().SetFloor(ctx10(t), &ordinalv1.SetFloorRequest{Key: "key666", Floor: 1000})
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "biggerThan") {
				t.Fatalf("SetFloor(1000) at version 13: %v, want FailedPrecondition (biggerThan)", err)
			}
			if r, err := n2.Sequencer().GetNextId(ctx10(t), &ordinalv1.GetNextIdRequest{Key: "key666"}); err != nil || r.NextId != 14 {
				t.Fatalf("after a refused floor: %v, %v; want 14", r, err)
			}

			// Layotto rejects "||" in keys (and so "|||"): otherwise key
			// "app||k" without an app ID would count on the same etcd key
			// as key "k" under app ID "app".
			for _, bad := range []string{"a|||b", "app||k"} {
				_, err = n1.Sequencer().GetNextId(ctx10(t), &ordinalv1.GetNextIdRequest{Key: bad})
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "can't contain '||'") {
					t.Fatalf("key %q: %v, want InvalidArgument as in Layotto", bad, err)
				}
			}
			if r, err := n1.Sequencer().GetNextId(ctx10(t), &ordinalv1.GetNextIdRequest{Key: "fresh"}); err != nil || r.NextId != 1 {
				t.Fatalf("fresh key: %v, %v; want 1", r, err)
			}
		})
	}
}

// TestLayottoInterleaving runs ordinal nodes in the Layotto layout next to
// writers doing exactly what Layotto's etcd component does, on the same
// keys at once: no ID twice, and since every call is one etcd Put, every
// call (ordinal STRONG or WEAK, or Layotto's) is linearizable.
func TestLayottoInterleaving(t *testing.T) {
	e := etcdtest.Shared(t)
	prefix := etcdtest.UniquePrefix(t)
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 2, Store: etcdcompat.Config{Layout: etcdcompat.LayoutLayotto, Prefix: prefix}})
	sidecar := e.Client(t)
	rec := history.NewRecorder()
	const perClient = 60
	keys := []string{"order", "invoice"}
	var wg sync.WaitGroup
	client := 0
	for _, nd := range c.Nodes() {
		for _, strong := range []bool{true, false} {
			client++
			wg.Add(1)
			go func(client int, nd *etcdtest.Node, strong bool) {
				defer wg.Done()
				for i := range perClient {
					call(rec, client, nd, keys[i%len(keys)], strong, 1, 10*time.Second)
				}
			}(client, nd, strong)
		}
	}
	for s := range 2 {
		client++
		wg.Add(1)
		go func(client int) {
			defer wg.Done()
			for i := range perClient {
				key := keys[i%len(keys)]
				rec.Do(history.Op{Client: client, Node: fmt.Sprintf("layotto-%d", s), Key: key, Strong: true}, func() (int64, int64, error) {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					id, err := layottoNextID(ctx, sidecar, prefix+"sequencer|||"+key)
					return id, 1, err
				})
			}
		}(client)
	}
	wg.Wait()
	ops := rec.Ops()
	if n := history.Succeeded(ops); n != len(ops) {
		t.Fatalf("%d of %d calls failed", len(ops)-n, len(ops))
	}
	// Every call is a Put: all of them are linearizable, WEAK ones too.
	for i := range ops {
		ops[i].Strong = true
	}
	checkHistory(t, ops)
	// And every version was handed out exactly once: no gap, no repeat.
	byKey := map[string][]int64{}
	for _, op := range ops {
		byKey[op.Key] = append(byKey[op.Key], op.First)
	}
	for key, ids := range byKey {
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for i, id := range ids {
			if id != int64(i+1) {
				t.Fatalf("key %s: the %d-th smallest id is %d", key, i+1, id)
			}
		}
	}
	t.Logf("%d calls by 2 ordinal nodes and 2 Layotto writers on %d keys: ids 1..%d each, all linearizable", len(ops), len(keys), len(ops)/len(keys))
}

// TestLayottoCallWithoutDeadlineEndsOnASilentLink sends Layotto-layout
// calls with no deadline while the node's link to etcd is silent (bytes
// held, connections open, as with a blackholed route or an etcd without
// quorum): each must answer Unavailable, naming etcd, after the store's
// RequestTimeout rather than hang until the client notices the link.
func TestLayottoCallWithoutDeadlineEndsOnASilentLink(t *testing.T) {
	e := etcdtest.Shared(t)
	const timeout = 300 * time.Millisecond
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 1, Store: etcdcompat.Config{
		Layout: etcdcompat.LayoutLayotto, Prefix: etcdtest.UniquePrefix(t), RequestTimeout: timeout,
	}})
	nd := c.Nodes()[0]
	if _, err := nd.Sequencer().GetNextId(ctx10(t), &ordinalv1.GetNextIdRequest{Key: "k"}); err != nil {
		t.Fatalf("with etcd reachable: %v", err)
	}
	nd.Proxy.Pause()
	defer nd.Proxy.Resume()
	for name, call := range map[string]func(context.Context) error{
		"GetNextId": func(ctx context.Context) error {
			_, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: "k"})
			return err
		},
		"GetHighWater": func(ctx context.Context) error {
			_, err := nd.Sequencer().GetHighWater(ctx, &ordinalv1.GetHighWaterRequest{Key: "k"})
			return err
		},
	} {
		start := time.Now()
		err := call(context.Background()) // no deadline
		took := time.Since(start)
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "etcd") {
			t.Errorf("%s over a silent link: %v, want Unavailable naming etcd", name, err)
		}
		if took > 10*timeout {
			t.Errorf("%s over a silent link took %v with a request timeout of %v", name, took, timeout)
		}
	}
	nd.Proxy.Resume()
	if _, err := nd.Sequencer().GetNextId(ctx10(t), &ordinalv1.GetNextIdRequest{Key: "k"}); err != nil {
		t.Fatalf("after the link came back: %v", err)
	}
}
