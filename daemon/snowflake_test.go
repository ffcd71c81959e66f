package daemon_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/runtimev1"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/metrics"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// snowflakeConfigs hands each node the Snowflake stores a test gives it.
type snowflakeConfigs struct {
	mu     sync.Mutex
	byNode map[string]map[string]snowflake.Layout
}

func (s *snowflakeConfigs) set(node string, stores map[string]snowflake.Layout) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byNode[node] = stores
}

func (s *snowflakeConfigs) configure(node string, cfg *daemon.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg.Snowflake = daemon.Snowflake{Stores: s.byNode[node], Lease: time.Second, MaxDrift: 5 * time.Second}
}

func weak(store, key string) *ordinalv1.GetNextIdRequest {
	return &ordinalv1.GetNextIdRequest{StoreName: store, Key: key}
}

func strong(store, key string) *ordinalv1.GetNextIdRequest {
	return &ordinalv1.GetNextIdRequest{StoreName: store, Key: key,
		Options: &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}}
}

// TestSnowflakeCluster runs a Snowflake store declared by one node of a
// three-node cluster (secured as in production): every node serves it,
// WEAK IDs carry each node's own worker ID and the time, STRONG IDs
// increase across the nodes that forward them, blocks are contiguous,
// floors hold everywhere, other stores keep counting, and removing a node
// and adding it back wiped gives it a new worker ID.
func TestSnowflakeCluster(t *testing.T) {
	cfgs := &snowflakeConfigs{byNode: map[string]map[string]snowflake.Layout{
		"n1": {"sf": snowflake.Milliseconds},
	}}
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{Configure: cfgs.configure})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := snowflake.Milliseconds

	// Every node learns the declaration from the log.
	for _, nd := range c.Nodes() {
		testcluster.WaitFor(t, testcluster.StartTimeout, nd.ID+" serving the declared store", func() bool {
			_, err := ordinalv1.NewSnowflakeServiceClient(nd.Conn()).DecodeId(ctx, &ordinalv1.DecodeIdRequest{StoreName: "sf", Id: 1})
			return err == nil
		})
	}

	seen := map[int64]string{}
	workers := map[uint64]string{}
	take := func(nd *testcluster.Node, req *ordinalv1.GetNextIdRequest) int64 {
		t.Helper()
		resp, err := nd.Sequencer().GetNextId(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", nd.ID, err)
		}
		id := resp.GetNextId()
		if prev, dup := seen[id]; dup {
			t.Fatalf("id %d handed out twice: by %s and by %s", id, prev, nd.ID)
		}
		seen[id] = nd.ID
		return id
	}
	for _, nd := range c.Nodes() {
		var prev int64
		for range 100 {
			id := take(nd, weak("sf", "orders"))
			if id <= prev {
				t.Fatalf("%s: WEAK %d after %d", nd.ID, id, prev)
			}
			prev = id
		}
		p, err := l.Decode(uint64(prev))
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(p.Time); d < -5*time.Second || d > 10*time.Second {
			t.Fatalf("%s stamped %s, %s from now", nd.ID, p.Time, d)
		}
		if other, ok := workers[p.Worker]; ok {
			t.Fatalf("%s and %s share worker ID %d", nd.ID, other, p.Worker)
		}
		workers[p.Worker] = nd.ID
		// The node decodes its ID the same way.
		dec, err := ordinalv1.NewSnowflakeServiceClient(nd.Conn()).DecodeId(ctx, &ordinalv1.DecodeIdRequest{StoreName: "sf", Id: prev})
		if err != nil || dec.GetWorker() != p.Worker || dec.GetSequence() != p.Seq || dec.GetUnixMs() != p.Time.UnixMilli() {
			t.Fatalf("DecodeId(%d) = %v, %v; want %+v", prev, dec, err, p)
		}
	}

	// Layotto's call serves the same store, unchanged on the wire.
	for _, nd := range c.Nodes() {
		resp, err := runtimev1.NewRuntimeClient(nd.Conn()).GetNextId(ctx, &runtimev1.GetNextIdRequest{StoreName: "sf", Key: "orders"})
		if err != nil {
			t.Fatalf("%s: Layotto's GetNextId: %v", nd.ID, err)
		}
		if prev, dup := seen[resp.NextId]; dup {
			t.Fatalf("Layotto's call on %s returned %d, handed out before by %s", nd.ID, resp.NextId, prev)
		}
		seen[resp.NextId] = nd.ID
		p, _ := l.Decode(uint64(resp.NextId))
		if workers[p.Worker] != nd.ID || time.Since(p.Time) > 10*time.Second {
			t.Fatalf("Layotto's call on %s returned %d = %+v: not a Snowflake ID of its worker", nd.ID, resp.NextId, p)
		}
	}

	// STRONG: strictly increasing whichever node takes the call.
	var last int64
	for i := range 60 {
		nd := c.Nodes()[i%3]
		id := take(nd, strong("sf", "orders"))
		if id <= last {
			t.Fatalf("STRONG through %s: %d after %d", nd.ID, id, last)
		}
		last = id
	}

	// A block is contiguous, and larger than a step holds is refused.
	blk, err := c.Nodes()[1].Sequencer().GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{StoreName: "sf", Key: "orders", Count: 100})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := l.Decode(uint64(blk.GetFirstId()))
	lastOf, _ := l.Decode(uint64(blk.GetFirstId() + 99))
	if first.Tick != lastOf.Tick || lastOf.Seq != first.Seq+99 {
		t.Fatalf("block of 100 from %+v to %+v is not within one step", first, lastOf)
	}
	_, err = c.Nodes()[1].Sequencer().GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{StoreName: "sf", Key: "orders", Count: 5000})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("5000 IDs in a 4096-ID step: %v", err)
	}

	// A floor two seconds ahead holds on every node once SetFloor returns.
	floor := int64(l.Compose(l.TickAt(uint64(time.Now().Add(2*time.Second).UnixMilli())), 0, 0))
	if _, err := c.Nodes()[2].Sequencer().SetFloor(ctx, &ordinalv1.SetFloorRequest{StoreName: "sf", Key: "orders", Floor: floor}); err != nil {
		t.Fatal(err)
	}
	for _, nd := range c.Nodes() {
		if id := take(nd, weak("sf", "orders")); id <= floor {
			t.Fatalf("%s: %d at or below the floor %d", nd.ID, id, floor)
		}
	}
	// Other stores keep counting.
	if id := take(c.Nodes()[0], weak("", "orders")); id > 1<<20 {
		t.Fatalf("the default store handed out %d: not a counter", id)
	}

	// Removing a node frees its worker ID later; wiped and added back it
	// gets a new one.
	n3 := c.Node("n3")
	oldWorker, _ := n3.Daemon().Node().FSM().WorkerOf("n3", n3.Daemon().Node().Incarnation())
	n3.Stop()
	if _, err := c.Leader().Cluster().Remove(ctx, &ordinalv1.RemoveRequest{NodeId: "n3"}); err != nil {
		t.Fatal(err)
	}
	var released bool
	for _, w := range c.Leader().Daemon().Node().Workers() {
		if w.ID == oldWorker && w.NodeID == "n3" && w.FreeAt > uint64(time.Now().UnixMilli()) {
			released = true
		}
	}
	if !released {
		t.Fatalf("worker %d of the removed n3 is not released with a future free time: %+v", oldWorker, c.Leader().Daemon().Node().Workers())
	}
	n3.Wipe()
	n3.StartJoining()
	// Until it applied the declaration, n3 would ask for counters in the
	// store, which the log refuses (Unavailable): wait for it.
	testcluster.WaitFor(t, testcluster.StartTimeout, "n3 serving the declared store", func() bool {
		_, err := ordinalv1.NewSnowflakeServiceClient(n3.Conn()).DecodeId(ctx, &ordinalv1.DecodeIdRequest{StoreName: "sf", Id: 1})
		return err == nil
	})
	id := take(n3, weak("sf", "orders"))
	p, _ := l.Decode(uint64(id))
	if p.Worker == oldWorker {
		t.Fatalf("n3 came back wiped with its old worker ID %d", oldWorker)
	}
	if _, ok := workers[p.Worker]; ok && workers[p.Worker] != "n3" {
		t.Fatalf("n3 got worker %d, which %s holds", p.Worker, workers[p.Worker])
	}

	// After every node restarts, nothing is handed out again.
	c.RestartAll()
	for _, nd := range c.Nodes() {
		for range 50 {
			take(nd, weak("sf", "orders"))
		}
	}
}

// TestSnowflakeConflictingDeclaration restarts a node that declared a
// store with another layout, and starts one declaring a store that holds
// counters: both refuse to start, naming the store.
func TestSnowflakeConflictingDeclaration(t *testing.T) {
	cfgs := &snowflakeConfigs{byNode: map[string]map[string]snowflake.Layout{
		"n1": {"sf": snowflake.Milliseconds},
	}}
	c := testcluster.NewWithOptions(t, 1, testcluster.Options{Configure: cfgs.configure})
	nd := c.Node("n1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := nd.Sequencer().GetNextId(ctx, weak("counters", "k")); err != nil {
		t.Fatal(err)
	}
	cfgs.set("n1", map[string]snowflake.Layout{"sf": snowflake.Seconds})
	if err := nd.TryRestart(); err == nil || !strings.Contains(err.Error(), `"sf"`) {
		t.Fatalf("restart declaring sf with another layout: %v", err)
	}
	cfgs.set("n1", map[string]snowflake.Layout{"sf": snowflake.Milliseconds, "counters": snowflake.Milliseconds})
	if err := nd.TryRestart(); err == nil || !strings.Contains(err.Error(), `"counters"`) {
		t.Fatalf("restart declaring a store of counters: %v", err)
	}
	cfgs.set("n1", map[string]snowflake.Layout{"sf": snowflake.Milliseconds})
	if err := nd.TryRestart(); err != nil {
		t.Fatal(err)
	}
}

// TestSnowflakeAttacks makes the calls a hostile peer or client would
// make against Snowflake stores; each is refused.
func TestSnowflakeAttacks(t *testing.T) {
	cfgs := &snowflakeConfigs{byNode: map[string]map[string]snowflake.Layout{
		"n1": {"sf": snowflake.Milliseconds}, "n2": {"sf": snowflake.Milliseconds},
	}}
	c := testcluster.NewWithOptions(t, 2, testcluster.Options{Configure: cfgs.configure})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader := c.Leader()
	var follower *testcluster.Node
	for _, nd := range c.Nodes() {
		if nd != leader {
			follower = nd
		}
	}
	fnode, lnode := follower.Daemon().Node(), leader.Daemon().Node()
	// Each node's acquisition committed before it opened; both nodes apply
	// both within a moment.
	var fWorker, lWorker uint64
	testcluster.WaitFor(t, testcluster.StartTimeout, "both workers applied on both nodes", func() bool {
		var ok [4]bool
		fWorker, ok[0] = fnode.FSM().WorkerOf(follower.ID, fnode.Incarnation())
		lWorker, ok[1] = lnode.FSM().WorkerOf(leader.ID, lnode.Incarnation())
		_, ok[2] = lnode.FSM().WorkerOf(follower.ID, fnode.Incarnation())
		_, ok[3] = fnode.FSM().WorkerOf(leader.ID, lnode.Incarnation())
		return ok[0] && ok[1] && ok[2] && ok[3]
	})

	cases := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"a member acquires a worker in another member's name", func() error {
			_, err := ordinalv1.NewWorkerServiceClient(c.PeerConn(leader, follower.ID)).AcquireWorker(ctx,
				&ordinalv1.AcquireWorkerRequest{NodeId: leader.ID, Incarnation: "forged"})
			return err
		}, codes.PermissionDenied},
		{"a node with a valid peer certificate that is not a member acquires a worker", func() error {
			_, err := ordinalv1.NewWorkerServiceClient(c.PeerConn(leader, "n9")).AcquireWorker(ctx,
				&ordinalv1.AcquireWorkerRequest{NodeId: "n9", Incarnation: "x"})
			return err
		}, codes.NotFound},
		{"a member reserves time for another member's worker", func() error {
			_, err := c.PeerClient(leader, follower.ID).Reserve(ctx, &ordinalv1.ReserveRequest{
				StoreName: snowflake.TimeStore, Key: snowflake.TimeKey(lWorker).Name, Want: 1 << 40, Need: 1})
			return err
		}, codes.PermissionDenied},
		{"a member reserves its own worker's time under another spelling of its key", func() error {
			_, err := c.PeerClient(leader, follower.ID).Reserve(ctx, &ordinalv1.ReserveRequest{
				StoreName: snowflake.TimeStore, Key: "0" + snowflake.TimeKey(fWorker).Name, Want: 1 << 40, Need: 1})
			return err
		}, codes.PermissionDenied},
		{"a member declares the empty store name", func() error {
			l := snowflake.Seconds
			_, err := ordinalv1.NewWorkerServiceClient(c.PeerConn(leader, follower.ID)).AcquireWorker(ctx,
				&ordinalv1.AcquireWorkerRequest{NodeId: follower.ID, Incarnation: fnode.Incarnation(),
					Stores: []*ordinalv1.SnowflakeStoreDeclaration{{StoreName: "", Layout: l.String(), WorkerBits: uint32(l.WorkerBits)}}})
			return err
		}, codes.InvalidArgument},
		{"a member declares a store holding counters", func() error {
			if _, err := leader.Sequencer().GetNextId(ctx, weak("counters", "k")); err != nil {
				return err
			}
			l := snowflake.Seconds
			_, err := ordinalv1.NewWorkerServiceClient(c.PeerConn(leader, follower.ID)).AcquireWorker(ctx,
				&ordinalv1.AcquireWorkerRequest{NodeId: follower.ID, Incarnation: fnode.Incarnation(),
					Stores: []*ordinalv1.SnowflakeStoreDeclaration{{StoreName: "counters", Layout: l.String(), WorkerBits: uint32(l.WorkerBits)}}})
			return err
		}, codes.FailedPrecondition},
		{"a member redeclares a store with another layout", func() error {
			l := snowflake.Seconds
			_, err := ordinalv1.NewWorkerServiceClient(c.PeerConn(leader, follower.ID)).AcquireWorker(ctx,
				&ordinalv1.AcquireWorkerRequest{NodeId: follower.ID, Incarnation: fnode.Incarnation(),
					Stores: []*ordinalv1.SnowflakeStoreDeclaration{{StoreName: "sf", Layout: l.String(), WorkerBits: uint32(l.WorkerBits)}}})
			return err
		}, codes.FailedPrecondition},
		{"a client calls the peer port's WorkerService on the client port", func() error {
			_, err := ordinalv1.NewWorkerServiceClient(leader.Conn()).AcquireWorker(ctx,
				&ordinalv1.AcquireWorkerRequest{NodeId: leader.ID, Incarnation: "x"})
			return err
		}, codes.Unimplemented},
		{"a client asks for IDs of the time store", func() error {
			_, err := leader.Sequencer().GetNextId(ctx, weak(snowflake.TimeStore, snowflake.TimeKey(fWorker).Name))
			return err
		}, codes.InvalidArgument},
		{"a client floors the time store", func() error {
			_, err := leader.Sequencer().SetFloor(ctx, &ordinalv1.SetFloorRequest{StoreName: snowflake.TimeStore, Key: snowflake.TimeKey(fWorker).Name, Floor: 1 << 60})
			return err
		}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); status.Code(err) != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}
	// The follower's worker is unchanged and it still serves.
	if w, _ := fnode.FSM().WorkerOf(follower.ID, fnode.Incarnation()); w != fWorker {
		t.Fatalf("%s's worker moved from %d to %d", follower.ID, fWorker, w)
	}
	if _, err := follower.Sequencer().GetNextId(ctx, weak("sf", "k")); err != nil {
		t.Fatal(err)
	}
}

// TestSnowflakeMetrics checks the Snowflake series of a node serving a
// Snowflake store: its worker ID, its reserved time ahead of the clock,
// its keys, and the IDs counted as issued.
func TestSnowflakeMetrics(t *testing.T) {
	m := metrics.New()
	c := testcluster.NewWithOptions(t, 1, testcluster.Options{Configure: func(_ string, cfg *daemon.Config) {
		cfg.Metrics = m
		cfg.Snowflake = daemon.Snowflake{Stores: map[string]snowflake.Layout{"sf": snowflake.Milliseconds}, Lease: 2 * time.Second, MaxDrift: 5 * time.Second}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, key := range []string{"a", "b", "c"} {
		if _, err := c.Node("n1").Sequencer().GetNextId(ctx, weak("sf", key)); err != nil {
			t.Fatal(err)
		}
	}
	if v := sample(t, m, "ordinal_snowflake_worker", nil); v != 0 {
		t.Errorf("ordinal_snowflake_worker %v, want 0", v)
	}
	if v := sample(t, m, "ordinal_snowflake_reserved_ahead_seconds", nil); v <= 0 || v > 2 {
		t.Errorf("ordinal_snowflake_reserved_ahead_seconds %v, want in (0, 2]", v)
	}
	if v := sample(t, m, "ordinal_snowflake_keys", nil); v != 3 {
		t.Errorf("ordinal_snowflake_keys %v, want 3", v)
	}
	if v := sample(t, m, "ordinal_ids_issued_total", map[string]string{"mode": "weak"}); v != 3 {
		t.Errorf("ordinal_ids_issued_total{mode=weak} %v, want 3", v)
	}
}

// TestFollowerTimeGrantWaitsForItsEntry: a follower uses Snowflake time
// the leader granted only once it applied the grant's entry, so every
// floor committed before the grant is applied there first (a follower
// reads a key's floor from its own state machine when it first meets the
// key). The leader answers a forwarded reservation as soon as the entry
// commits, often before the follower learns it committed: without the
// wait, some of these rounds find the floor not yet applied.
func TestFollowerTimeGrantWaitsForItsEntry(t *testing.T) {
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{Insecure: true, Configure: func(_ string, cfg *daemon.Config) {
		cfg.Snowflake = daemon.Snowflake{Stores: map[string]snowflake.Layout{"sf": snowflake.Milliseconds}}
	}})
	leader := c.Leader()
	follower := c.Followers(leader)[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	worker, err := follower.Daemon().Node().AcquireWorker(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	backend := daemon.SnowflakeBackendOf(follower.Daemon().Node())
	timeKey := fsm.Key{Store: fsm.SnowflakeTimeStore, Name: strconv.FormatUint(worker, 10)}
	for i := range 100 {
		key := fsm.Key{Store: "sf", Name: fmt.Sprintf("floored-%d", i)}
		floor := uint64(1)<<40 + uint64(i)
		if _, err := leader.Daemon().Node().Floor(ctx, key, floor); err != nil {
			t.Fatal(err)
		}
		if _, _, err := backend.Reserve(ctx, timeKey, 1, 1); err != nil {
			t.Fatal(err)
		}
		if got := follower.Daemon().Node().AppliedHighWater(key); got < floor {
			t.Fatalf("round %d: the follower's time reservation returned before it applied the floor committed ahead of it (%d, want %d)", i, got, floor)
		}
	}
}
