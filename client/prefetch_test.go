package client_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
)

// countCalls returns a dial option that counts the unary calls of method
// the Client makes, and the counter.
func countCalls(method string) (client.Option, *atomic.Int64) {
	var n atomic.Int64
	return client.WithDialOptions(grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, m string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if m == method {
				n.Add(1)
			}
			return invoker(ctx, m, req, reply, cc, opts...)
		})), &n
}

// Many goroutines take WEAK IDs of two keys through one prefetching Client
// of a 3-node cluster, next to a Client without prefetch: every ID is
// unique, each goroutine sees each key's IDs increase, and the prefetching
// Client makes one call per block, not per ID.
func TestWeakPrefetch(t *testing.T) {
	c := testcluster.New(t, 3)
	secure := client.WithTLS(c.ClientTLS(testcluster.AdminName))
	const block = 1000
	counted, calls := countCalls("/ordinal.v1.SequencerService/GetNextIds")
	pc := newClient(t, addrs(c), secure, counted, client.WithWeakPrefetch(block))
	plain := newClient(t, addrs(c), secure)
	keys := []string{"prefetch-a", "prefetch-b"}

	const goroutines, perGoroutine = 16, 2000
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		seen  = map[string]map[int64]bool{}
		taken atomic.Int64
	)
	for _, k := range keys {
		seen[k] = map[int64]bool{}
	}
	record := func(t *testing.T, key string, first, count int64) {
		mu.Lock()
		defer mu.Unlock()
		for id := first; id < first+count; id++ {
			if seen[key][id] {
				t.Errorf("key %s: id %d handed out twice", key, id)
			}
			seen[key][id] = true
		}
	}
	ctx := testContext(t)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := map[string]int64{}
			for i := range perGoroutine {
				key := keys[(g+i)%len(keys)]
				count := int64(1)
				var first int64
				var err error
				if i%10 == 9 {
					count = 7
					first, err = pc.NextIDs(ctx, key, client.Weak, count)
				} else {
					first, err = pc.NextID(ctx, key, client.Weak)
				}
				if err != nil {
					t.Errorf("goroutine %d, call %d: %v", g, i, err)
					return
				}
				if first <= last[key] {
					t.Errorf("goroutine %d, key %s: id %d after %d: not increasing", g, key, first, last[key])
					return
				}
				last[key] = first + count - 1
				taken.Add(count)
				record(t, key, first, count)
			}
		}()
	}
	// The Client without prefetch takes IDs of the same keys meanwhile.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 200 {
			key := keys[i%len(keys)]
			id, err := plain.NextID(ctx, key, client.Weak)
			if err != nil {
				t.Errorf("plain client: %v", err)
				return
			}
			record(t, key, id, 1)
		}
	}()
	wg.Wait()
	if t.Failed() {
		return
	}
	ids, rpcs := taken.Load(), calls.Load()
	// One call per block, a block per key to start with and at most one
	// ahead per key at the end.
	if max := ids/block + 2*int64(len(keys)); rpcs > max {
		t.Fatalf("the prefetching Client made %d GetNextIds calls for %d IDs in blocks of %d; want at most %d", rpcs, ids, block, max)
	}
	t.Logf("%d IDs in %d calls", ids, rpcs)
}

// When the node its blocks come from stops, a prefetching Client takes
// blocks from another node, whose IDs may lie below those handed out
// already; it skips past them, so the IDs it hands out still increase.
func TestWeakPrefetchFailsOverAndKeepsIncreasing(t *testing.T) {
	// Long-lived WEAK ranges, so that n1 still holds its first range,
	// below n2's, when the Client turns to it.
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{Configure: func(_ string, cfg *daemon.Config) {
		cfg.Alloc.WeakRangeTTL = time.Minute
	}})
	n1, n2 := c.Node("n1"), c.Node("n2")
	ctx := testContext(t)
	const key, block = "catch-up", 10
	// n1 reserves its first WEAK range of the key.
	if _, err := weakOn(ctx, n1, key); err != nil {
		t.Fatal(err)
	}
	pc := newClient(t, n2.GRPCAddr+","+n1.GRPCAddr, client.WithTLS(c.ClientTLS(testcluster.AdminName)), client.WithWeakPrefetch(block))
	var ids []int64
	take := func(n int) {
		t.Helper()
		for range n {
			id, err := pc.NextID(ctx, key, client.Weak)
			if err != nil {
				t.Fatalf("NextID after %d ids: %v", len(ids), err)
			}
			ids = append(ids, id)
		}
	}
	take(3 * block)
	// n1's range is below the IDs the Client handed out (they came from
	// n2, which reserved after n1): the case to test.
	if next, err := weakOn(ctx, n1, key); err != nil || next >= ids[len(ids)-1] {
		t.Fatalf("n1's next WEAK id is %d (%v), want it below the client's %d: the Client's blocks did not come from n2", next, err, ids[len(ids)-1])
	}
	n2.Stop()
	take(5 * block)
	requireStrictlyIncreasing(t, ids)
}

// weakOn takes one WEAK ID of key on node nd.
func weakOn(ctx context.Context, nd *testcluster.Node, key string) (int64, error) {
	c, err := client.NewFromConn(nd.Conn())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.NextID(ctx, key, client.Weak)
}

// A prefetching Client reports the server's errors to the callers waiting
// for a block, and fails calls with Canceled once closed.
func TestWeakPrefetchErrors(t *testing.T) {
	addr, secure := single(t)
	c, err := client.New(addr, secure, client.WithWeakPrefetch(100))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	if _, err := c.NextID(ctx, "", client.Weak); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty key: %v, want InvalidArgument", err)
	}
	if id, err := c.NextID(ctx, "k", client.Weak); err != nil || id != 1 {
		t.Fatalf("NextID = %d, %v; want 1", id, err)
	}
	// STRONG calls and blocks of more than half a block go to the server.
	if id, err := c.NextID(ctx, "k", client.Strong); err != nil || id <= 100 {
		t.Fatalf("STRONG NextID = %d, %v; want above the prefetched block", id, err)
	}
	if _, err := c.NextIDs(ctx, "k", client.Weak, 51); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NextID(ctx, "k", client.Weak); status.Code(err) != codes.Canceled {
		// The block in memory may still serve; once it runs out the call
		// must fail.
		for i := 0; i < 200 && err == nil; i++ {
			_, err = c.NextID(ctx, "k", client.Weak)
		}
		if status.Code(err) != codes.Canceled {
			t.Fatalf("NextID after Close: %v, want Canceled", err)
		}
	}
}

func TestWithWeakPrefetchInvalid(t *testing.T) {
	for _, n := range []int{-1, 0, 1, client.MaxWeakPrefetch + 1} {
		if _, err := client.New("127.0.0.1:1", client.WithWeakPrefetch(n)); err == nil {
			t.Errorf("WithWeakPrefetch(%d): no error", n)
		}
	}
}

// BenchmarkWeakPrefetch takes WEAK IDs of one key from many goroutines
// through one prefetching Client of a single node, and reports IDs per
// second.
func BenchmarkWeakPrefetch(b *testing.B) {
	for _, block := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("block=%d", block), func(b *testing.B) {
			tc := testcluster.New(b, 1)
			c, err := client.New(tc.Node("n1").GRPCAddr, client.WithTLS(tc.ClientTLS(testcluster.AdminName)), client.WithWeakPrefetch(block))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			if _, err := c.NextID(ctx, "bench", client.Weak); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.NextID(ctx, "bench", client.Weak); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ids/s")
		})
	}
}
