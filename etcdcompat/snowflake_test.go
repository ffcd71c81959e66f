package etcdcompat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
	"github.com/ordinal-dev/ordinal/keyspace"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// sfNode is one ordinal node's etcd store and its Snowflake backend.
type sfNode struct {
	name    string
	store   etcdcompat.Node
	backend *etcdcompat.SnowflakeBackend
}

func (n *sfNode) native() *etcdcompat.Store { return n.store.(*etcdcompat.Store) }

// openSF opens and starts a store of layout under prefix as node name,
// with a Snowflake backend declaring decls; it closes when the test ends.
func openSF(t *testing.T, e *etcdtest.Etcd, layout etcdcompat.Layout, prefix, name string, decls ...etcdcompat.SnowflakeDecl) *sfNode {
	t.Helper()
	st, err := etcdcompat.Open(etcdcompat.Config{
		Endpoints: []string{e.Endpoint}, Layout: layout, Prefix: prefix, SessionTTL: 2 * time.Second,
		NodeID: name, PeerAdvertise: "127.0.0.1:1",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Start(ctx10(t)); err != nil {
		t.Fatal(err)
	}
	var b *etcdcompat.SnowflakeBackend
	switch s := st.(type) {
	case *etcdcompat.Store:
		b, err = s.Snowflake(decls)
	case *etcdcompat.LayottoStore:
		b, err = s.Snowflake(decls)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &sfNode{name: name, store: st, backend: b}
}

func decl(store string, l snowflake.Layout) etcdcompat.SnowflakeDecl {
	return etcdcompat.SnowflakeDecl{Store: store, Layout: l.String(), WorkerBits: l.WorkerBits}
}

// small is a layout with 2 worker bits: 4 workers.
var small = snowflake.Layout{TimeBits: 41, WorkerBits: 2, SeqBits: 12, Unit: time.Millisecond, Epoch: snowflake.DefaultEpoch}

var layouts = []etcdcompat.Layout{etcdcompat.LayoutNative, etcdcompat.LayoutLayotto}

// counterID hands out a counter ID of key the way the layout does.
func counterID(ctx context.Context, n *sfNode, key keyspace.Key) error {
	switch s := n.store.(type) {
	case *etcdcompat.Store:
		_, _, err := s.Reserve(ctx, key, 10, 1)
		return err
	case *etcdcompat.LayottoStore:
		_, err := s.Next(ctx, key, alloc.Weak, 1)
		return err
	}
	return nil
}

// TestSnowflakeDeclarations checks declarations in both layouts: a second
// layout for a store conflicts, counters are refused in a declared store,
// a store that handed out counters cannot be declared, worker IDs fit the
// smallest worker bits, and every node learns every declaration.
func TestSnowflakeDeclarations(t *testing.T) {
	e := etcdtest.Shared(t)
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			ctx := ctx10(t)
			prefix := etcdtest.UniquePrefix(t)
			n1 := openSF(t, e, layout, prefix, "n1", decl("orders", snowflake.Seconds))
			if w, err := n1.backend.Worker(ctx); err != nil || w != 0 {
				t.Fatalf("n1 Worker: %d, %v; want worker 0", w, err)
			}
			// The declaration in etcd: snowflake/stores/<store> holds
			// {"layout": ..., "worker_bits": N} (DESIGN.md).
			stored, err := e.Client(t).Get(ctx, prefix+"snowflake/stores/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			var got declValue
			if len(stored.Kvs) != 1 || string(stored.Kvs[0].Key) != prefix+"snowflake/stores/orders" ||
				json.Unmarshal(stored.Kvs[0].Value, &got) != nil ||
				(etcdcompat.SnowflakeDecl{Store: "orders", Layout: got.Layout, WorkerBits: got.WorkerBits}) != decl("orders", snowflake.Seconds) {
				t.Fatalf("declarations in etcd: %v; want orders declared as %+v", stored.Kvs, decl("orders", snowflake.Seconds))
			}

			// Another layout for the same store.
			n2 := openSF(t, e, layout, prefix, "n2", decl("orders", snowflake.Milliseconds))
			if _, err := n2.backend.Worker(ctx); !errors.Is(err, etcdcompat.ErrSnowflakeConflict) {
				t.Fatalf("n2 declares orders with another layout: %v, want ErrSnowflakeConflict", err)
			}

			// Counters in a declared store are refused, also by a node
			// that knows nothing of Snowflake stores.
			plain := openSF(t, e, layout, prefix, "plain")
			if err := counterID(ctx, plain, keyspace.Key{Store: "orders", Name: "k"}); !errors.Is(err, etcdcompat.ErrSnowflakeStore) || !errors.Is(err, alloc.ErrUnavailable) {
				t.Fatalf("a counter in a snowflake store: %v, want ErrSnowflakeStore", err)
			}
			if layout == etcdcompat.LayoutNative {
				leader := n1.native()
				if !leader.IsLeader() {
					leader = n2.native()
				}
				if !leader.IsLeader() {
					leader = plain.native()
				}
				if err := etcdtest.Eventually(etcdtest.StartTimeout, leader.IsLeader); err != nil {
					t.Fatal("no leader")
				}
				if _, err := leader.Floor(ctx, keyspace.Key{Store: "orders", Name: "k"}, 10); !errors.Is(err, etcdcompat.ErrSnowflakeStore) {
					t.Fatalf("a counter floor in a snowflake store: %v, want ErrSnowflakeStore", err)
				}
			}

			// A store that handed out counters cannot be declared.
			if err := counterID(ctx, plain, keyspace.Key{Store: "counts", Name: "k"}); err != nil {
				t.Fatal(err)
			}
			n3 := openSF(t, e, layout, prefix, "n3", decl("counts", snowflake.Seconds))
			if _, err := n3.backend.Worker(ctx); !errors.Is(err, etcdcompat.ErrSnowflakeConflict) {
				t.Fatalf("declaring a store with counters: %v, want ErrSnowflakeConflict", err)
			}

			// Every node learns every declaration: those seen before the
			// hook was set, and later ones from the watch.
			var mu sync.Mutex
			seen := map[string]etcdcompat.SnowflakeDecl{}
			plain.backend.SetSnowflakeHook(func(d etcdcompat.SnowflakeDecl) {
				mu.Lock()
				seen[d.Store] = d
				mu.Unlock()
			})
			n4 := openSF(t, e, layout, prefix, "n4", decl("orders", snowflake.Seconds), decl("tiny", small))
			if w, err := n4.backend.Worker(ctx); err != nil || w != 1 {
				t.Fatalf("n4 Worker: %d, %v; want worker 1", w, err)
			}
			if err := etcdtest.Eventually(5*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return seen["orders"] == decl("orders", snowflake.Seconds) && seen["tiny"] == decl("tiny", small) && len(seen) == 2
			}); err != nil {
				mu.Lock()
				t.Fatalf("the hook saw %v, want orders and tiny", seen)
			}

			// Worker IDs fit the smallest worker bits: 4 workers with
			// "tiny" declared.
			n5 := openSF(t, e, layout, prefix, "n5")
			n6 := openSF(t, e, layout, prefix, "n6")
			n7 := openSF(t, e, layout, prefix, "n7")
			for i, n := range []*sfNode{n5, n6} {
				if w, err := n.backend.Worker(ctx); err != nil || w != uint64(i+2) {
					t.Fatalf("%s Worker: %d, %v; want %d", n.name, w, err, i+2)
				}
			}
			if _, err := n7.backend.Worker(ctx); !errors.Is(err, etcdcompat.ErrNoWorker) {
				t.Fatalf("a fifth worker with 2 worker bits: %v, want ErrNoWorker", err)
			}
			// A store whose worker bits the held workers do not fit.
			n8 := openSF(t, e, layout, prefix, "n8", decl("tinier", snowflake.Layout{TimeBits: 41, WorkerBits: 1, SeqBits: 12, Unit: time.Millisecond, Epoch: snowflake.DefaultEpoch}))
			if _, err := n8.backend.Worker(ctx); !errors.Is(err, etcdcompat.ErrSnowflakeConflict) {
				t.Fatalf("a store with 1 worker bit while worker 3 is held: %v, want ErrSnowflakeConflict", err)
			}
			// Closing a node frees its worker at once.
			n6.store.Close()
			if w, err := n7.backend.Worker(ctx); err != nil || w != 3 {
				t.Fatalf("n7 Worker after n6 closed: %d, %v; want 3", w, err)
			}
		})
	}
}

func TestSnowflakeBadDeclarations(t *testing.T) {
	e := etcdtest.Shared(t)
	st, err := etcdcompat.Open(etcdcompat.Config{Endpoints: []string{e.Endpoint}, NodeID: "n", PeerAdvertise: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := st.(*etcdcompat.Store)
	for _, d := range []etcdcompat.SnowflakeDecl{
		{Store: "", Layout: snowflake.Seconds.String(), WorkerBits: 22},
		{Store: "_ordinal.x", Layout: snowflake.Seconds.String(), WorkerBits: 22},
		{Store: "s", Layout: "seconds", WorkerBits: 22},
		{Store: "s", Layout: snowflake.Seconds.String(), WorkerBits: 10},
		{Store: "s", Layout: "time=1", WorkerBits: 1},
	} {
		if _, err := s.Snowflake([]etcdcompat.SnowflakeDecl{d}); err == nil {
			t.Errorf("Snowflake(%+v) accepted it", d)
		}
	}
	if _, err := s.Snowflake(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snowflake(nil); err == nil {
		t.Error("a second backend for one store")
	}
}

// workerLease returns the lease of worker w's key.
func workerLease(t *testing.T, admin *clientv3.Client, prefix string, w uint64) clientv3.LeaseID {
	t.Helper()
	resp, err := admin.Get(ctx10(t), workerKey(prefix, w))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("worker %d's key: %v, %v", w, resp, err)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

// declValue is a Snowflake store declaration's value in etcd.
type declValue struct {
	Layout     string `json:"layout"`
	WorkerBits uint8  `json:"worker_bits"`
}

// workerKey is worker w's key in etcd under prefix.
func workerKey(prefix string, w uint64) string {
	return fmt.Sprintf("%ssnowflake/workers/%010d", prefix, w)
}

// TestSnowflakeWorkers checks leasing worker IDs: two nodes get different
// workers, a node cannot reserve another's time, a worker lost with its
// session is taken again by its node when free and refused when another
// node took it, a closed node's worker frees at once, a restarted node
// takes over the worker key its crashed process left, and the time of a
// worker that changed hands continues above everything its earlier
// holders reserved.
func TestSnowflakeWorkers(t *testing.T) {
	e := etcdtest.Shared(t)
	admin := e.Client(t)
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			ctx := ctx10(t)
			prefix := etcdtest.UniquePrefix(t)
			d := decl("ids", snowflake.Milliseconds)
			n1 := openSF(t, e, layout, prefix, "n1", d)
			n2 := openSF(t, e, layout, prefix, "n2", d)
			w1, err1 := n1.backend.Worker(ctx)
			w2, err2 := n2.backend.Worker(ctx)
			if err1 != nil || err2 != nil || w1 == w2 {
				t.Fatalf("workers %d (%v) and %d (%v); want two different ones", w1, err1, w2, err2)
			}
			if w, err := n1.backend.Worker(ctx); err != nil || w != w1 {
				t.Fatalf("n1 Worker again: %d, %v; want %d", w, err, w1)
			}

			// Time is reserved above what was reserved before.
			now := uint64(time.Now().UnixMilli())
			r1, _, err := n1.backend.Reserve(ctx, snowflake.TimeKey(w1), now+1000, 1)
			if err != nil || r1.First != 1 || r1.Last != now+1000 {
				t.Fatalf("n1's first time: %+v, %v", r1, err)
			}
			if got := n1.backend.Applied(snowflake.TimeKey(w1)); got != r1.Last {
				t.Fatalf("Applied(time of %d) = %d, want %d", w1, got, r1.Last)
			}
			// Another worker's time is refused.
			if _, _, err := n2.backend.Reserve(ctx, snowflake.TimeKey(w1), 10, 1); !errors.Is(err, etcdcompat.ErrWorkerLost) {
				t.Fatalf("n2 reserving n1's worker's time: %v, want ErrWorkerLost", err)
			}
			r2, _, err := n2.backend.Reserve(ctx, snowflake.TimeKey(w2), now+500, 1)
			if err != nil {
				t.Fatal(err)
			}
			if m := n1.backend.MaxReserved(w1); m != r2.Last {
				t.Fatalf("MaxReserved(except %d) = %d, want n2's %d", w1, m, r2.Last)
			}
			if m := n1.backend.MaxReserved(^uint64(0)); m != r1.Last {
				t.Fatalf("MaxReserved(all) = %d, want %d", m, r1.Last)
			}

			// n1's session ends (its lease revoked, as when it expires)
			// while n1 runs: its worker is lost; being free, n1 takes it
			// again on its next reservation, which continues above.
			if _, err := admin.Revoke(ctx, workerLease(t, admin, prefix, w1)); err != nil {
				t.Fatal(err)
			}
			r, _, err := n1.backend.Reserve(ctx, snowflake.TimeKey(w1), 100, 1)
			if err != nil || r.First != r1.Last+1 {
				t.Fatalf("n1 after losing its session: %+v, %v; want time from %d", r, err, r1.Last+1)
			}
			lastN1 := r.Last

			// Lost again, and this time n3 takes the worker first: n1 may
			// not reserve its time any more, and takes another worker;
			// n3's time for the worker starts above n1's.
			if _, err := admin.Revoke(ctx, workerLease(t, admin, prefix, w1)); err != nil {
				t.Fatal(err)
			}
			n3 := openSF(t, e, layout, prefix, "n3")
			if w, err := n3.backend.Worker(ctx); err != nil || w != w1 {
				t.Fatalf("n3 Worker: %d, %v; want the freed %d", w, err, w1)
			}
			if _, _, err := n1.backend.Reserve(ctx, snowflake.TimeKey(w1), 100, 1); !errors.Is(err, etcdcompat.ErrWorkerLost) {
				t.Fatalf("n1 reserving the worker n3 took: %v, want ErrWorkerLost", err)
			}
			if w, err := n1.backend.Worker(ctx); err != nil || w == w1 || w == w2 {
				t.Fatalf("n1's new worker: %d, %v; want neither %d nor %d", w, err, w1, w2)
			}
			if got := n3.backend.Applied(snowflake.TimeKey(w1)); got != lastN1 {
				t.Fatalf("n3 Applied(time of %d) = %d, want n1's last %d", w1, got, lastN1)
			}
			r3, _, err := n3.backend.Reserve(ctx, snowflake.TimeKey(w1), 100, 1)
			if err != nil || r3.First != lastN1+1 {
				t.Fatalf("n3's time for worker %d: %+v, %v; want it to start at %d", w1, r3, err, lastN1+1)
			}

			// n2 closes: its worker frees at once, and the next node to
			// take it reserves above n2's time.
			n2.store.Close()
			n4 := openSF(t, e, layout, prefix, "n4")
			if w, err := n4.backend.Worker(ctx); err != nil || w != w2 {
				t.Fatalf("n4 Worker: %d, %v; want n2's %d", w, err, w2)
			}
			if r4, _, err := n4.backend.Reserve(ctx, snowflake.TimeKey(w2), 100, 1); err != nil || r4.First != r2.Last+1 {
				t.Fatalf("n4's time for worker %d: %+v, %v; want it to start at %d", w2, r4, err, r2.Last+1)
			}

			// A node that crashed leaves its worker key until its lease
			// expires; restarted, it takes that worker over.
			lease, err := admin.Grant(ctx, 60)
			if err != nil {
				t.Fatal(err)
			}
			crashedKey := workerKey(prefix, 7)
			if _, err := admin.Put(ctx, crashedKey, `{"node_id":"crashed"}`, clientv3.WithLease(lease.ID)); err != nil {
				t.Fatal(err)
			}
			n5 := openSF(t, e, layout, prefix, "crashed")
			if w, err := n5.backend.Worker(ctx); err != nil || w != 7 {
				t.Fatalf("the restarted node's Worker: %d, %v; want its old worker 7", w, err)
			}
			if l := workerLease(t, admin, prefix, 7); l == lease.ID {
				t.Fatal("the worker key stayed on the crashed process's lease")
			}
			if _, _, err := n5.backend.Reserve(ctx, snowflake.TimeKey(7), 100, 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSnowflakeFloors checks that a floor set through one node reaches the
// others' floor hooks, is known to Applied, and is refused for a store
// that is not declared.
func TestSnowflakeFloors(t *testing.T) {
	e := etcdtest.Shared(t)
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			ctx := ctx10(t)
			prefix := etcdtest.UniquePrefix(t)
			d := decl("ids", snowflake.Milliseconds)
			n1 := openSF(t, e, layout, prefix, "n1", d)
			n2 := openSF(t, e, layout, prefix, "n2", d)
			key := keyspace.Key{Store: "ids", Name: "k"}
			var hooked atomic.Uint64
			n2.backend.SetFloorHook(func(k keyspace.Key, f uint64) {
				if k == key {
					hooked.Store(f)
				}
			})
			if _, err := n1.backend.Floor(ctx, key, 100); err == nil {
				t.Fatal("a floor before the store is declared")
			}
			for _, n := range []*sfNode{n1, n2} {
				if _, err := n.backend.Worker(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if f, err := n1.backend.Floor(ctx, key, 1<<40); err != nil || f != 1<<40 {
				t.Fatalf("Floor: %d, %v", f, err)
			}
			if f, err := n2.backend.Floor(ctx, key, 5); err != nil || f != 1<<40 {
				t.Fatalf("a lower floor: %d, %v; want the higher one kept", f, err)
			}
			if got := n1.backend.Applied(key); got != 1<<40 {
				t.Fatalf("n1 Applied: %d", got)
			}
			if err := etcdtest.Eventually(5*time.Second, func() bool { return hooked.Load() == 1<<40 }); err != nil {
				t.Fatalf("n2's floor hook saw %d", hooked.Load())
			}
			// A node that starts later learns it by its first time
			// reservation at the latest.
			n3 := openSF(t, e, layout, prefix, "n3")
			w, err := n3.backend.Worker(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := n3.backend.Reserve(ctx, snowflake.TimeKey(w), 10, 1); err != nil {
				t.Fatal(err)
			}
			if got := n3.backend.Applied(key); got != 1<<40 {
				t.Fatalf("n3 Applied after a reservation: %d", got)
			}
		})
	}
}

// offsetClock is the system clock shifted by an offset a test may change.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// sfService is a Snowflake service over one node.
type sfService struct {
	*sfNode
	svc *snowflake.Service
}

func startService(t *testing.T, n *sfNode, clock snowflake.Clock, stores map[string]snowflake.Layout) *sfService {
	t.Helper()
	cfg := snowflake.Config{Lease: 300 * time.Millisecond, MaxDrift: 5 * time.Second, Clock: clock}
	if s, ok := n.store.(*etcdcompat.Store); ok {
		cfg.Confirm = s.Confirm
	}
	svc, err := snowflake.New(n.backend, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	for name, l := range stores {
		if err := svc.Declare(name, l); err != nil {
			t.Fatal(err)
		}
	}
	n.backend.SetFloorHook(svc.RaiseFloor)
	n.backend.SetSnowflakeHook(func(d etcdcompat.SnowflakeDecl) {
		if l, err := snowflake.ParseLayout(d.Layout); err == nil {
			_ = svc.Declare(d.Store, l)
		}
	})
	if _, err := svc.Acquire(ctx10(t)); err != nil {
		t.Fatal(err)
	}
	return &sfService{sfNode: n, svc: svc}
}

// TestSnowflakeServiceOverEtcd runs two Snowflake services over two etcd
// stores handing out IDs concurrently, one node's clock well behind the
// other's, closes one node and restarts it (a new store, the same node
// ID) with its clock further behind, ends the other's etcd session under
// it, and checks that no ID repeats and that each node's IDs of a key
// increase. In the native layout it also takes STRONG IDs through
// whichever node leads, before and after the leader's restart (which
// hands leadership to the other node), and checks they increase.
func TestSnowflakeServiceOverEtcd(t *testing.T) {
	e := etcdtest.Shared(t)
	admin := e.Client(t)
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			prefix := etcdtest.UniquePrefix(t)
			l := snowflake.Milliseconds
			stores := map[string]snowflake.Layout{"ids": l}
			clocks := []*offsetClock{{}, {}}
			clocks[1].off.Store(int64(-1500 * time.Millisecond))
			var mu sync.Mutex
			svcs := []*sfService{
				startService(t, openSF(t, e, layout, prefix, "n1", decl("ids", l)), clocks[0], stores),
				startService(t, openSF(t, e, layout, prefix, "n2"), clocks[1], nil),
			}
			get := func(i int) *sfService {
				mu.Lock()
				defer mu.Unlock()
				return svcs[i]
			}

			var (
				lists = map[string][][]uint64{} // each caller's IDs by key, in call order
				allMu sync.Mutex
				stop  atomic.Bool
				wg    sync.WaitGroup
				fails atomic.Int64
			)
			perNode := [2]atomic.Int64{}
			defer func() { stop.Store(true); wg.Wait() }() // when the test fails before it stops them
			for node := range 2 {
				for caller := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						key := keyspace.Key{Store: "ids", Name: "k" + strconv.Itoa(caller%2)}
						var mine []uint64
						defer func() {
							allMu.Lock()
							lists[key.Name] = append(lists[key.Name], mine)
							allMu.Unlock()
						}()
						for !stop.Load() {
							s := get(node)
							ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
							id, err := s.svc.Next(ctx, key, alloc.Weak, 1)
							cancel()
							if err != nil {
								if !errors.Is(err, alloc.ErrClosed) && fails.Add(1) <= 3 {
									t.Logf("node %d: %v", node, err)
								}
								time.Sleep(5 * time.Millisecond)
								continue
							}
							mine = append(mine, id)
							perNode[node].Add(1)
							time.Sleep(100 * time.Microsecond)
						}
					}()
				}
			}
			var strong []uint64
			strongBy := map[string]bool{}
			takeStrong := func() {
				if layout != etcdcompat.LayoutNative {
					return
				}
				deadline := time.Now().Add(15 * time.Second)
				for i := 0; i < 20; {
					if time.Now().After(deadline) {
						t.Fatalf("STRONG calls kept failing; %d served", len(strong))
					}
					for n := range 2 {
						s := get(n)
						if !s.native().IsLeader() {
							continue
						}
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						id, err := s.svc.Next(ctx, keyspace.Key{Store: "ids", Name: "strong"}, alloc.Strong, 1)
						cancel()
						if err == nil {
							strong = append(strong, id)
							strongBy[s.name] = true
							i++
						}
					}
					time.Sleep(2 * time.Millisecond)
				}
			}

			// served waits until each node served another servedStep IDs.
			const servedStep = 1000
			served := func(when string) {
				t.Helper()
				from := [2]int64{perNode[0].Load(), perNode[1].Load()}
				if err := etcdtest.Eventually(30*time.Second, func() bool {
					return perNode[0].Load() >= from[0]+servedStep && perNode[1].Load() >= from[1]+servedStep
				}); err != nil {
					t.Fatalf("%s: IDs served per node %d, %d, want %d more than %d, %d: %v",
						when, perNode[0].Load(), perNode[1].Load(), servedStep, from[0], from[1], err)
				}
			}

			served("at first")
			takeStrong()
			// Restart n1 (the first leader, in the native layout) with
			// its clock 3s behind.
			old := get(0)
			old.svc.Close()
			old.store.Close()
			clocks[0].off.Store(int64(-3 * time.Second))
			n1 := startService(t, openSF(t, e, layout, prefix, "n1", decl("ids", l)), clocks[0], stores)
			mu.Lock()
			svcs[0] = n1
			mu.Unlock()
			served("after n1's restart")
			// n2's session ends under it (its lease revoked, as when it
			// expires): its worker is lost, and, being free, taken again
			// by its next reservation, under a new lease.
			w2, _ := get(1).svc.Worker()
			revoked := workerLease(t, admin, prefix, w2)
			if _, err := admin.Revoke(context.Background(), revoked); err != nil {
				t.Fatal(err)
			}
			var retaken *mvccpb.KeyValue
			if err := etcdtest.Eventually(15*time.Second, func() bool {
				resp, err := admin.Get(context.Background(), workerKey(prefix, w2))
				if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) == revoked {
					return false
				}
				retaken = resp.Kvs[0]
				return true
			}); err != nil {
				t.Fatalf("worker %d's key not held by a new lease after lease %x was revoked: %v", w2, revoked, err)
			}
			var holder struct {
				NodeID string `json:"node_id"`
			}
			if err := json.Unmarshal(retaken.Value, &holder); err != nil || holder.NodeID != get(1).name {
				t.Errorf("worker %d taken again with %s (%v); want it held by %s", w2, retaken.Value, err, get(1).name)
			}
			if w, err := get(1).backend.Worker(context.Background()); err != nil || w != w2 {
				t.Errorf("n2 after losing its session: worker %d, %v; want %d again", w, err, w2)
			}
			served("after n2 lost its session")
			takeStrong()
			stop.Store(true)
			wg.Wait()

			if fails.Load() > 0 {
				t.Logf("%d WEAK calls failed (and were retried)", fails.Load())
			}
			// No ID twice; each caller's IDs increase (one node, one key,
			// calls one after the other), across node 0's restart too.
			total := 0
			for key, callers := range lists {
				seen := map[uint64]bool{}
				for _, ids := range callers {
					for i, id := range ids {
						if seen[id] {
							t.Fatalf("key %s: ID %d handed out twice", key, id)
						}
						seen[id] = true
						if i > 0 && id <= ids[i-1] {
							t.Fatalf("key %s: a caller's IDs went back: %d then %d", key, ids[i-1], id)
						}
					}
					total += len(ids)
				}
			}
			if perNode[0].Load() == 0 || perNode[1].Load() == 0 {
				t.Fatalf("IDs per node: %d, %d", perNode[0].Load(), perNode[1].Load())
			}
			if layout == etcdcompat.LayoutNative && len(strongBy) != 2 {
				t.Errorf("STRONG IDs served by %v; want both nodes, the leader changing at n1's restart", strongBy)
			}
			for i := 1; i < len(strong); i++ {
				if strong[i] <= strong[i-1] {
					t.Fatalf("STRONG IDs went back: %d then %d", strong[i-1], strong[i])
				}
			}
			t.Logf("%d WEAK IDs (%d, %d per node), %d STRONG", total, perNode[0].Load(), perNode[1].Load(), len(strong))
		})
	}
}
