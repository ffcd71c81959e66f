package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
)

// withMaxKeys starts every node of a test cluster with --max-keys max.
func withMaxKeys(max int) testcluster.Options {
	return testcluster.Options{Configure: func(_ string, cfg *daemon.Config) { cfg.Cluster.MaxKeys = max }}
}

// keyCall is one way a client creates or uses a key.
type keyCall struct {
	name string
	call func(ctx context.Context, nd *testcluster.Node, store, key string) error
}

var keyCalls = []keyCall{
	{"WEAK GetNextId", func(ctx context.Context, nd *testcluster.Node, store, key string) error {
		_, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: store, Key: key})
		return err
	}},
	{"STRONG GetNextId", func(ctx context.Context, nd *testcluster.Node, store, key string) error {
		_, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: store, Key: key, Options: strongOpts})
		return err
	}},
	{"WEAK GetNextIds", func(ctx context.Context, nd *testcluster.Node, store, key string) error {
		_, err := nd.Sequencer().GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{StoreName: store, Key: key, Count: 10})
		return err
	}},
	{"SetFloor", func(ctx context.Context, nd *testcluster.Node, store, key string) error {
		_, err := nd.Sequencer().SetFloor(ctx, &ordinalv1.SetFloorRequest{StoreName: store, Key: key, Floor: 1000})
		return err
	}},
}

// Once the cluster holds --max-keys keys, a call that would create one
// more fails with ResourceExhausted through every node and in every way,
// with a message that says what to do, and keys that exist keep working.
func TestMaxKeysRefusesNewKeysOnEveryNode(t *testing.T) {
	const max = 4
	c := testcluster.NewWithOptions(t, 3, withMaxKeys(max))
	nodes := c.Nodes()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Fill the quota through every node, in every way.
	for i := range max {
		if err := keyCalls[i%len(keyCalls)].call(ctx, nodes[i%len(nodes)], "s", fmt.Sprintf("k%d", i)); err != nil {
			t.Fatalf("creating key %d of %d: %v", i+1, max, err)
		}
	}
	for _, nd := range nodes {
		for _, kc := range keyCalls {
			t.Run(nd.ID+"/"+kc.name, func(t *testing.T) {
				err := kc.call(ctx, nd, "s", "one-too-many")
				if status.Code(err) != codes.ResourceExhausted {
					t.Fatalf("creating a key beyond --max-keys %d: %v, want ResourceExhausted", max, err)
				}
				for _, want := range []string{`key "one-too-many" in store "s"`, "holds 4 keys", "--max-keys", "Keys that exist keep working"} {
					if msg := status.Convert(err).Message(); !strings.Contains(msg, want) {
						t.Errorf("message %q lacks %q", msg, want)
					}
				}
				for i := range max {
					if err := kc.call(ctx, nd, "s", fmt.Sprintf("k%d", i)); err != nil {
						t.Errorf("existing key k%d: %v", i, err)
					}
				}
			})
		}
	}
	for _, nd := range nodes {
		if n := nd.Daemon().Node().FSM().Len(); n > max {
			t.Errorf("%s holds %d keys, more than --max-keys %d", nd.ID, n, max)
		}
	}
}

// Keys created at the same time through every node, while leadership
// moves, never add up to more than --max-keys: every creation is decided
// by the leader, which counts the creations still in flight.
func TestMaxKeysConcurrentCreationNeverOvershoots(t *testing.T) {
	const max, attempts = 60, 240
	c := testcluster.NewWithOptions(t, 3, withMaxKeys(max))
	nodes := c.Nodes()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		created, refused atomic.Int64
		wg               sync.WaitGroup
		next             atomic.Int64
		failures         = make(chan error, attempts)
	)
	transferred := make(chan struct{})
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= attempts {
					return
				}
				if i == attempts/3 {
					// Move leadership while creations are in flight.
					_, err := c.Leader().Cluster().TransferLeadership(ctx, &ordinalv1.TransferLeadershipRequest{})
					if err != nil {
						failures <- fmt.Errorf("transfer leadership: %w", err)
					}
					close(transferred)
				}
				nd := nodes[int(i)%len(nodes)]
				kc := keyCalls[int(i)%2] // WEAK (forwarded reservations) and STRONG
				var err error
				for retryUntil := time.Now().Add(15 * time.Second); ; {
					// A short deadline per attempt: a call that reaches
					// a node while leadership moves may wait out its
					// deadline and answer Unavailable; the client retries,
					// as clients do.
					cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
					err = kc.call(cctx, nd, "race", fmt.Sprintf("key-%d", i))
					ccancel()
					if status.Code(err) != codes.Unavailable || time.Now().After(retryUntil) {
						break
					}
					time.Sleep(50 * time.Millisecond) // retry backoff
				}
				switch status.Code(err) {
				case codes.OK:
					created.Add(1)
				case codes.ResourceExhausted:
					refused.Add(1)
				default:
					failures <- fmt.Errorf("key-%d via %s: %w", i, nd.ID, err)
				}
			}
		}()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	select {
	case <-transferred:
	default:
		t.Fatal("leadership was not transferred during the test")
	}
	if created.Load() != max {
		t.Errorf("%d of %d distinct keys created, %d refused; want exactly --max-keys %d created", created.Load(), attempts, refused.Load(), max)
	}
	waitKeys(t, c, max)
}

// waitKeys waits until every node applied want keys, and fails if one
// holds more.
func waitKeys(t *testing.T, c *testcluster.Cluster, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range c.Nodes() {
		for {
			n := nd.Daemon().Node().FSM().Len()
			if n > want {
				t.Fatalf("%s holds %d keys, want %d", nd.ID, n, want)
			}
			if n == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %d keys after 10s, want %d", nd.ID, n, want)
			}
			time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
		}
	}
}

// listAll pages through nd's keys with req and fails the test on an
// error, a key listed twice or out of order.
func listAll(t *testing.T, nd *testcluster.Node, req *ordinalv1.KeysRequest) ([]*ordinalv1.KeyInfo, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		out   []*ordinalv1.KeyInfo
		total uint64
	)
	for {
		resp, err := nd.Cluster().Keys(ctx, req)
		if err != nil {
			t.Fatalf("Keys via %s: %v", nd.ID, err)
		}
		if ps := req.GetPageSize(); ps > 0 && len(resp.GetKeys()) > int(ps) {
			t.Fatalf("page of %d keys, asked for %d", len(resp.GetKeys()), ps)
		}
		for _, k := range resp.GetKeys() {
			if n := len(out); n > 0 && !less(out[n-1], k) {
				t.Fatalf("%s/%s listed after %s/%s", k.GetStoreName(), k.GetKey(), out[n-1].GetStoreName(), out[n-1].GetKey())
			}
			out = append(out, k)
		}
		total = resp.GetTotal()
		if resp.GetNextPageToken() == "" {
			return out, total
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func less(a, b *ordinalv1.KeyInfo) bool {
	if a.GetStoreName() != b.GetStoreName() {
		return a.GetStoreName() < b.GetStoreName()
	}
	return a.GetKey() < b.GetKey()
}

// createKeys sets a floor of 100+i on key i of each store, through nd,
// and returns the keys sorted as Keys lists them.
func createKeys(t *testing.T, nd *testcluster.Node, stores []string, n int) []*ordinalv1.KeyInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		want []*ordinalv1.KeyInfo
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs = make(chan error, 1)
		work = make(chan *ordinalv1.KeyInfo)
	)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				_, err := nd.Sequencer().SetFloor(ctx, &ordinalv1.SetFloorRequest{StoreName: k.GetStoreName(), Key: k.GetKey(), Floor: k.GetHighWater()})
				if err != nil {
					select {
					case errs <- fmt.Errorf("SetFloor %s/%s: %w", k.GetStoreName(), k.GetKey(), err):
					default:
					}
				}
				mu.Lock()
				want = append(want, k)
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		for _, store := range stores {
			work <- &ordinalv1.KeyInfo{StoreName: store, Key: fmt.Sprintf("%s-%05d", []string{"user", "order", "item"}[i%3], i), HighWater: int64(100 + i)}
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	slices.SortFunc(want, func(a, b *ordinalv1.KeyInfo) int {
		if less(a, b) {
			return -1
		}
		return 1
	})
	return want
}

func sameKeys(t *testing.T, what string, got, want []*ordinalv1.KeyInfo) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d keys, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.GetStoreName() != w.GetStoreName() || g.GetKey() != w.GetKey() || g.GetHighWater() != w.GetHighWater() {
			t.Fatalf("%s: key %d is %s/%s=%d, want %s/%s=%d", what, i,
				g.GetStoreName(), g.GetKey(), g.GetHighWater(), w.GetStoreName(), w.GetKey(), w.GetHighWater())
		}
	}
}

func filterKeys(keys []*ordinalv1.KeyInfo, store, prefix string) []*ordinalv1.KeyInfo {
	var out []*ordinalv1.KeyInfo
	for _, k := range keys {
		if (store == "" || k.GetStoreName() == store) && strings.HasPrefix(k.GetKey(), prefix) {
			out = append(out, k)
		}
	}
	return out
}

// Every node lists every key exactly once with its high-water mark, in
// order, whatever the page size and filter.
func TestKeysListsEveryKeyOnEveryNode(t *testing.T) {
	c := testcluster.New(t, 3)
	want := createKeys(t, c.Leader(), []string{"default", "orders", "zz"}, 1000)
	waitKeys(t, c, len(want))
	tests := []struct {
		store, prefix string
		pageSize      uint32
	}{
		{"", "", 0},
		{"", "", 97},
		{"", "", 10000},
		{"orders", "", 250},
		{"", "order-", 333},
		{"zz", "item-009", 3},
		{"nope", "", 10},
		{"", "nope", 10},
	}
	for _, nd := range c.Nodes() {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/store=%s,prefix=%s,page=%d", nd.ID, tt.store, tt.prefix, tt.pageSize), func(t *testing.T) {
				got, total := listAll(t, nd, &ordinalv1.KeysRequest{StoreName: tt.store, Prefix: tt.prefix, PageSize: tt.pageSize})
				sameKeys(t, "listing", got, filterKeys(want, tt.store, tt.prefix))
				if total != uint64(len(want)) {
					t.Errorf("total %d, want %d", total, len(want))
				}
			})
		}
	}
}

// A listing that pages while keys are created lists every key that
// existed throughout exactly once, whichever node it runs on.
func TestKeysPagesWhileKeysAreCreated(t *testing.T) {
	c := testcluster.New(t, 3)
	before := createKeys(t, c.Leader(), []string{"a", "m"}, 700)
	waitKeys(t, c, len(before))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var added atomic.Int64
	for w, nd := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				// New keys in every part of the order: before, among
				// and after the existing ones, in new stores too.
				store := []string{"a", "m", "b-new", "z-new"}[i%4]
				key := fmt.Sprintf("%s-%05d-new-%d", []string{"user", "order", "item", "aaa"}[i%4], i%700, w)
				if _, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: store, Key: key}); err == nil {
					added.Add(1)
				}
			}
		}()
	}
	for _, nd := range c.Nodes() {
		got, _ := listAll(t, nd, &ordinalv1.KeysRequest{PageSize: 50})
		listed := make(map[string]bool, len(got))
		for _, k := range got {
			listed[k.GetStoreName()+"/"+k.GetKey()] = true
		}
		for _, k := range before {
			if !listed[k.GetStoreName()+"/"+k.GetKey()] {
				t.Errorf("%s: key %s/%s existed throughout the listing but was not listed", nd.ID, k.GetStoreName(), k.GetKey())
			}
		}
	}
	cancel()
	wg.Wait()
	if added.Load() == 0 {
		t.Fatal("no key was created during the listings")
	}
}

func TestKeysRefusesBadRequests(t *testing.T) {
	c := testcluster.New(t, 1)
	nd := c.Nodes()[0]
	createKeys(t, nd, []string{"s"}, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := nd.Cluster().Keys(ctx, &ordinalv1.KeysRequest{StoreName: "s", PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, next page token %q", err, first.GetNextPageToken())
	}
	tests := []struct {
		name string
		req  *ordinalv1.KeysRequest
		want string
	}{
		{"garbage token", &ordinalv1.KeysRequest{StoreName: "s", PageToken: "%%%"}, "not a page token"},
		{"truncated token", &ordinalv1.KeysRequest{StoreName: "s", PageToken: first.GetNextPageToken()[:8]}, "not a page token"},
		{"token of another store", &ordinalv1.KeysRequest{StoreName: "t", PageToken: first.GetNextPageToken()}, "another store_name or prefix"},
		{"token of another prefix", &ordinalv1.KeysRequest{StoreName: "s", Prefix: "user", PageToken: first.GetNextPageToken()}, "another store_name or prefix"},
		{"store name too long", &ordinalv1.KeysRequest{StoreName: strings.Repeat("s", 257)}, "store_name is 257 bytes"},
		{"prefix too long", &ordinalv1.KeysRequest{Prefix: strings.Repeat("k", 1025)}, "prefix is 1025 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := nd.Cluster().Keys(ctx, tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Errorf("Keys: %v, want InvalidArgument saying %q", err, tt.want)
			}
		})
	}
	// Listing is an admin call: a client with the ids role may not.
	conn, err := grpc.NewClient(nd.GRPCAddr, c.DialOptions("web")...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := ordinalv1.NewClusterServiceClient(conn).Keys(ctx, &ordinalv1.KeysRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Keys by an ids client: %v, want PermissionDenied", err)
	}
}
