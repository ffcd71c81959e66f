package etcdcompat_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
	"github.com/ordinal-dev/ordinal/internal/history"
	"github.com/ordinal-dev/ordinal/internal/inflight"
)

// staleCalls is how many STRONG calls are sent to a deposed leader that
// does not know it yet.
const staleCalls = 32

// inFlightTimeout bounds the wait for the calls sent to the deposed leader
// to be there; staleCallTimeout bounds such a call, which waits there
// until its link to etcd thaws.
const (
	inFlightTimeout  = 10 * time.Second
	staleCallTimeout = 20 * time.Second
)

// TestStaleLeaderNeverServesStrongIDs deposes the STRONG leader while its
// link to etcd is frozen (to etcd it looks paused, like a process under
// SIGSTOP or a long GC pause), lets the new leader hand out IDs, then sends
// STRONG calls to the old leader and unfreezes it. Those calls started
// after the new leader's IDs were returned, so each must get a higher ID or
// fail. The old leader holds a STRONG range and, while frozen, still
// believes it leads: only the fence (a linearizable read of its election
// key per batch) stops it from serving from that range.
//
// It is deposed twice: by revoking its lease from another client (at
// once, and it cannot notice), and by letting its lease expire. Meanwhile
// background clients call every node, and the whole history must be
// unique, WEAK-monotonic per node and STRONG-linearizable (porcupine).
//
// A cycle exercises the stale path when calls were in flight at the old
// leader (read by its gRPC server, not answered) as its link thawed, it
// still believed it led, and it answered or refused them after. It may
// not: the old leader's etcd client also ends its session by its own
// clock, TTL after its last keepalive, and a deposed leader that knows it
// does not fence its calls. At least one cycle of the test must.
func TestStaleLeaderNeverServesStrongIDs(t *testing.T) {
	e := etcdtest.Shared(t)
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 3, Store: etcdcompat.Config{SessionTTL: 3 * time.Second}})
	admin := e.Client(t)
	rec := history.NewRecorder()
	stopLoad := backgroundLoad(c, rec, 100)
	defer stopLoad()

	client := 0
	staleCycles := 0
	for cycle, how := range []string{"lease revoked", "lease expired"} {
		old := c.Leader()
		client++
		for range 20 { // the leader holds a STRONG range now
			mustCall(t, rec, client, old, "k", true)
		}
		key, _, ok := old.Store().(*etcdcompat.Store).Tenure()
		if !ok {
			t.Fatalf("cycle %d: %s lost leadership by itself", cycle, old.Name)
		}
		old.Proxy.Pause()
		frozen := time.Now()
		if how == "lease revoked" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := admin.Get(ctx, key)
			if err == nil && len(resp.Kvs) == 1 {
				_, err = admin.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
			}
			cancel()
			if err != nil {
				t.Fatalf("revoke %s's lease: %v", old.Name, err)
			}
		}
		newLeader := c.Leader(old)
		stillBelieves := old.IsLeader()
		client++
		var newest int64
		for range 20 {
			newest = mustCall(t, rec, client, newLeader, "k", true)
		}
		var calls inflight.Calls
		results := make(chan history.Op, staleCalls)
		for range staleCalls {
			client++
			go func(client int) { results <- trackedCall(rec, client, old, "k", &calls, staleCallTimeout) }(client)
		}
		// Let the calls reach the old leader before its link thaws.
		awaitAtNode(t, old, &calls, staleCalls)
		inFlight, early, believed := calls.Open(), calls.Returned(), old.IsLeader()
		old.Proxy.Resume()
		thawed := time.Now()
		served, refused, timedOut := 0, 0, 0
		var refusal error
		for range staleCalls {
			op := <-results
			if op.Err != nil {
				if status.Code(op.Err) == codes.DeadlineExceeded {
					timedOut++
				} else {
					refused++
					refusal = op.Err
				}
				continue
			}
			served++
			if op.First <= newest {
				t.Errorf("cycle %d (%s): the old leader %s handed out %d after the new leader %s returned %d",
					cycle, how, old.Name, op.First, newLeader.Name, newest)
			}
		}
		// A node never comes to believe it leads while cut off from etcd:
		// if the old leader still believed it at the thaw, the calls in
		// flight reached it while it did. Calls that returned before the
		// thaw were answered or refused; none timed out so soon.
		stale := inFlight > 0 && believed && served+refused > early
		if stale {
			staleCycles++
		}
		t.Logf("cycle %d (%s): old leader still believed it led: %v, and when its link thawed %v later: %v; %d calls were in flight at it then (%d had returned); %d of %d calls sent to it succeeded, all above %d, %d were refused (%v), %d timed out; stale path exercised: %v",
			cycle, how, stillBelieves, thawed.Sub(frozen).Round(time.Millisecond), believed, inFlight, early, served, staleCalls, newest, refused, refusal, timedOut, stale)
		// It competes again by itself once its link is back.
		if err := etcdtest.Eventually(15*time.Second, old.Store().Healthy); err != nil {
			t.Fatalf("cycle %d: %s not healthy again after its link came back", cycle, old.Name)
		}
	}
	stopLoad()
	ops := rec.Ops()
	t.Logf("%d calls, %d succeeded", len(ops), history.Succeeded(ops))
	checkHistory(t, ops)
	if staleCycles == 0 {
		t.Error("no cycle exercised the stale path: no call was in flight at the deposed leader, still believing it led, when its link thawed, then answered or refused")
	}
}

// trackedCall is call for one STRONG id, counted in calls.
func trackedCall(rec *history.Recorder, client int, nd *etcdtest.Node, key string, calls *inflight.Calls, timeout time.Duration) history.Op {
	return rec.Do(history.Op{Client: client, Node: nd.Name, Key: key, Strong: true}, func() (int64, int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		resp := new(ordinalv1.GetNextIdsResponse)
		err := calls.Invoke(ctx, nd.Conn(), ordinalv1.SequencerService_GetNextIds_FullMethodName,
			&ordinalv1.GetNextIdsRequest{Key: key, Options: strongOpts, Count: 1}, resp)
		return resp.GetFirstId(), 1, err
	})
}

// awaitAtNode waits until the n calls sent through nd.Conn() in calls are
// at nd: each one's request sent (or the call failed first), then a health
// check answered on the same connection. Frames of one connection arrive
// in order, and the check was sent after every request, so nd's gRPC
// server had read them all.
func awaitAtNode(t *testing.T, nd *etcdtest.Node, calls *inflight.Calls, n int) {
	t.Helper()
	err := etcdtest.Eventually(inFlightTimeout, func() bool { return calls.Started() == n && calls.Sending() == 0 })
	if err != nil {
		t.Fatalf("calls to %s not sent within %v: %s", nd.Name, inFlightTimeout, calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), inFlightTimeout)
	defer cancel()
	if _, err := healthpb.NewHealthClient(nd.Conn()).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check of %s behind the calls sent to it: %v", nd.Name, err)
	}
}

// backgroundLoad keeps clients calling random nodes until the returned
// function is called. Each client sends a call every interval ms or so.
func backgroundLoad(c *etcdtest.Cluster, rec *history.Recorder, interval int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	const clients = 4
	for i := range clients {
		wg.Add(1)
		go func(client int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(client), 1))
			nodes := c.Nodes()
			for {
				select {
				case <-done:
					return
				case <-time.After(time.Duration(r.IntN(interval)) * time.Millisecond):
				}
				nd := nodes[r.IntN(len(nodes))]
				strong := r.IntN(2) == 0
				key := "bg-weak"
				if strong {
					key = "bg-strong"
				}
				call(rec, 1000+client, nd, key, strong, int64(1+r.IntN(2)), time.Second)
			}
		}(i)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// TestCutOffFromEtcd partitions nodes from etcd: a follower, the leader,
// then every node. A cut-off node keeps serving WEAK IDs from the blocks it
// holds and STRONG calls through the leader, answers Unavailable naming
// etcd when it needs etcd, and comes back by itself when the link does.
func TestCutOffFromEtcd(t *testing.T) {
	e := etcdtest.Shared(t)
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 3})
	rec := history.NewRecorder()
	leader := c.Leader()
	var follower *etcdtest.Node
	for _, nd := range c.Nodes() {
		if nd != leader {
			follower = nd
			break
		}
	}

	// A follower cut off.
	for range 3 {
		mustCall(t, rec, 1, follower, "weak", false)
	}
	follower.Proxy.Cut()
	for range 5 {
		mustCall(t, rec, 1, follower, "weak", false) // from the block it holds
	}
	mustCall(t, rec, 2, follower, "strong", true) // forwarded to the leader
	awaitUnavailableNamingEtcd(t, rec, follower, "fresh-1")
	if err := etcdtest.Eventually(10*time.Second, func() bool { return !follower.Store().Healthy() }); err != nil {
		t.Fatalf("%s, cut off from etcd, still reports healthy", follower.Name)
	}
	follower.Proxy.Heal()
	retryCall(t, rec, 3, follower, "fresh-1", false, 15*time.Second)
	if err := etcdtest.Eventually(15*time.Second, follower.Store().Healthy); err != nil {
		t.Fatalf("%s not healthy again after its link came back", follower.Name)
	}
	t.Logf("follower %s: served from its block and through the leader while cut off, resumed after", follower.Name)

	// The leader cut off: another node takes over once its lease expires.
	leader.Proxy.Cut()
	others := []*etcdtest.Node{}
	for _, nd := range c.Nodes() {
		if nd != leader {
			others = append(others, nd)
		}
	}
	for i, nd := range others {
		retryCall(t, rec, 4+i, nd, "strong", true, 20*time.Second)
	}
	newLeader := c.Leader(leader)
	op := call(rec, 10, leader, "strong", true, 1, 2*time.Second)
	if op.Err == nil {
		t.Fatalf("the old leader, cut off from etcd, served STRONG id %d", op.First)
	}
	leader.Proxy.Heal()
	retryCall(t, rec, 11, leader, "strong", true, 20*time.Second) // now forwarded to the new leader
	t.Logf("leader %s cut off: %s took over; %s serves again", leader.Name, newLeader.Name, leader.Name)

	// etcd unreachable for every node.
	for _, nd := range c.Nodes() {
		nd.Proxy.Cut()
	}
	for _, nd := range c.Nodes() {
		awaitUnavailableNamingEtcd(t, rec, nd, "fresh-2")
	}
	for _, nd := range c.Nodes() {
		nd.Proxy.Heal()
	}
	for i, nd := range c.Nodes() {
		retryCall(t, rec, 20+i, nd, "strong", true, 20*time.Second)
		retryCall(t, rec, 20+i, nd, "fresh-2", false, 20*time.Second)
	}
	t.Log("etcd unreachable from every node: Unavailable naming etcd; all resumed when it came back")
	checkHistory(t, rec.Ops())
}

// awaitUnavailableNamingEtcd calls WEAK on key, which nd holds no block of,
// until it answers Unavailable with a message that names etcd. The first
// calls after a link breaks may instead time out waiting for it.
func awaitUnavailableNamingEtcd(t *testing.T, rec *history.Recorder, nd *etcdtest.Node, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		op := call(rec, 99, nd, key, false, 1, 2*time.Second)
		if op.Err == nil {
			t.Fatalf("%s served %s id %d with no etcd", nd.Name, key, op.First)
		}
		if unavailableNamingEtcd(op.Err) {
			t.Logf("%s without etcd: %v", nd.Name, op.Err)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s without etcd: %v, want Unavailable naming etcd", nd.Name, op.Err)
		}
	}
}

// TestStartWaitsForEtcd starts a node while etcd is unreachable: it
// answers Unavailable until etcd is back, then serves without a restart.
func TestStartWaitsForEtcd(t *testing.T) {
	e := etcdtest.Shared(t)
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 1})
	nd := c.Nodes()[0]
	nd.Stop()
	nd.Proxy.Cut()
	nd.Start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := nd.Ready(ctx); err == nil {
		t.Fatal("ready with etcd unreachable")
	}
	rec := history.NewRecorder()
	if op := call(rec, 1, nd, "k", true, 1, time.Second); op.Err == nil {
		t.Fatalf("served id %d with etcd unreachable", op.First)
	}
	nd.Proxy.Heal()
	nd.WaitReady()
	if id := retryCall(t, rec, 1, nd, "k", true, 10*time.Second); id != 1 {
		t.Fatalf("first id %d, want 1", id)
	}
}

// TestLeaderNoticesItsKeyGoneAfterCompaction deletes the leader's election
// key (its lease still alive) after etcd compacted its history past the
// key's creation and the leader's watch stream broke. The leader must
// notice by itself, with no STRONG call whose fence would notice for it,
// and campaign again. A watch resumed from the tenure's own revision fails
// with ErrCompacted every time, and the deletion goes unseen.
func TestLeaderNoticesItsKeyGoneAfterCompaction(t *testing.T) {
	e := etcdtest.Start(t) // its own etcd: this test compacts its history
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 1, Store: etcdcompat.Config{SessionTTL: 30 * time.Second}})
	admin := e.Client(t)
	nd := c.Leader()
	store := nd.Store().(*etcdcompat.Store)
	key, _, ok := store.Tenure()
	if !ok {
		t.Fatalf("%s does not lead", nd.Name)
	}
	rec := history.NewRecorder()
	for i := range 5 { // each reserves a range: revisions past the key's
		mustCall(t, rec, 1, nd, fmt.Sprintf("k%d", i), false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := admin.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read %s: %v, %v", key, resp, err)
	}
	if _, err := admin.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatalf("compact: %v", err)
	}
	nd.Proxy.Cut() // closes the node's connections: its watches break
	nd.Proxy.Heal()
	if err := etcdtest.Eventually(15*time.Second, store.Healthy); err != nil {
		t.Fatalf("%s did not reconnect to etcd", nd.Name)
	}
	if k, _, ok := store.Tenure(); !ok || k != key {
		t.Fatalf("%s changed tenure on a reconnect: %q, %v", nd.Name, k, ok)
	}
	if _, err := admin.Delete(ctx, key); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	err = etcdtest.Eventually(10*time.Second, func() bool {
		k, _, ok := store.Tenure()
		return ok && k != key
	})
	if err != nil {
		k, _, ok := store.Tenure()
		t.Fatalf("%s did not notice its election key %s was deleted: tenure %q, %v", nd.Name, key, k, ok)
	}
	checkHistory(t, rec.Ops())
}
