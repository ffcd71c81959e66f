package e2e

import (
	"context"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/history"
	"github.com/ordinal-dev/ordinal/internal/inflight"
	"github.com/ordinal-dev/ordinal/internal/proccluster"
)

var strongOpts = &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}

// pauseCycles and staleCalls size the paused-leader scenario: the window in
// which a deposed leader can still believe it leads is a few milliseconds
// after it resumes, so the test repeats the pause and sends many calls into
// that window. Without a fence it fails in nearly every run.
const (
	pauseCycles = 3
	staleCalls  = 32
)

// inSocketTimeout bounds the wait for the calls sent to a frozen node to
// be in its socket; staleCallTimeout bounds such a call, which waits
// there until the node resumes.
const (
	inSocketTimeout  = 10 * time.Second
	staleCallTimeout = 30 * time.Second
)

// TestPausedLeaderNeverServesStaleIDs freezes the leader with SIGSTOP past
// the election timeout, lets a new leader hand out STRONG IDs, then sends
// calls to the frozen node and resumes it. Those calls started after the
// new leader's IDs were returned, so each must get a higher ID or fail. A
// fence built on raft.VerifyLeader fails this: on resuming, the old leader
// finds heartbeat replies from before the pause in its socket buffers,
// passes VerifyLeader and serves from its old range.
//
// Every cycle must exercise that path: the calls are all in flight, their
// requests unread in the frozen node's socket, when it resumes, and it
// answers or refuses them after.
func TestPausedLeaderNeverServesStaleIDs(t *testing.T) {
	c := proccluster.Start(t, 3)
	conns := trackedConns(t, c)
	rec := history.NewRecorder()
	strong := func(client int, nd *proccluster.Node, timeout time.Duration) history.Op {
		return rec.Do(history.Op{Client: client, Node: nd.ID, Key: "k", Strong: true}, func() (int64, int64, error) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			resp, err := nd.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: "k", Options: strongOpts})
			return resp.GetNextId(), 1, err
		})
	}
	staleReq := &ordinalv1.GetNextIdRequest{Key: "k", Options: strongOpts}
	// stale is strong through conn, counted in calls.
	stale := func(client int, nd *proccluster.Node, conn *inflight.Conn, calls *inflight.Calls) history.Op {
		return rec.Do(history.Op{Client: client, Node: nd.ID, Key: "k", Strong: true}, func() (int64, int64, error) {
			ctx, cancel := context.WithTimeout(context.Background(), staleCallTimeout)
			defer cancel()
			resp := new(ordinalv1.GetNextIdResponse)
			err := calls.Invoke(ctx, conn, ordinalv1.SequencerService_GetNextId_FullMethodName, staleReq, resp)
			return resp.GetNextId(), 1, err
		})
	}
	client := 0
	for cycle := 0; cycle < pauseCycles; cycle++ {
		old := c.Leader()
		client++
		for i := 0; i < 20; i++ { // the leader holds a STRONG range now
			if op := strong(client, old, callTimeout); op.Err != nil {
				t.Fatal(op.Err)
			}
		}
		conn := conns[old]
		connectBeforePause(t, old, conn)
		old.Pause()
		newLeader := c.Leader(old)
		var newest int64
		client++
		for i := 0; i < 20; i++ {
			op := strong(client, newLeader, callTimeout)
			if op.Err != nil {
				t.Fatalf("new leader: %v", op.Err)
			}
			newest = op.First
		}
		base := unreadBytes(t, old, conn)
		var calls inflight.Calls
		results := make(chan history.Op, staleCalls)
		for i := 0; i < staleCalls; i++ {
			client++
			go func(client int) { results <- stale(client, old, conn, &calls) }(client)
		}
		// The calls must be in the frozen node's socket before it resumes.
		unread := awaitInSocket(t, old, conn, &calls, staleCalls, base, inflight.MinRequestBytes(staleReq))
		old.Resume()
		served, refused, timedOut := 0, 0, 0
		var refusal error
		for i := 0; i < staleCalls; i++ {
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
				t.Errorf("cycle %d: resumed old leader handed out %d after the new leader returned %d", cycle, op.First, newest)
			}
		}
		t.Logf("cycle %d: %d calls waited in the paused leader %s's socket (%d bytes unread) when it resumed; then %d succeeded, all above %d, %d were refused (%v), %d timed out",
			cycle, staleCalls, old.ID, unread-base, served, newest, refused, refusal, timedOut)
		if served+refused == 0 {
			t.Errorf("cycle %d: the resumed old leader %s neither answered nor refused any of the %d calls waiting in its socket", cycle, old.ID, staleCalls)
		}
	}
	if err := history.CheckAll(rec.Ops(), ""); err != nil {
		t.Fatal(err)
	}
}

// TestFloorHoldsOnAPausedFollower freezes a follower that holds a WEAK
// range, sets a floor above it through the leader, and resumes the
// follower: its first WEAK calls, sent at once, must not return an ID at
// or below the floor (its range expired while it was frozen, by its own
// monotonic clock, which runs on under SIGSTOP). The first of them are
// sent while it is frozen, and must be waiting in its socket when it
// resumes: it handles them at once, racing the floor's Raft entry, which
// waits for it too.
func TestFloorHoldsOnAPausedFollower(t *testing.T) {
	c := proccluster.Start(t, 3)
	leader := c.Leader()
	var follower *proccluster.Node
	for _, nd := range c.Nodes {
		if nd != leader {
			follower = nd
			break
		}
	}
	conn := trackedConns(t, c)[follower]
	const key = "floor-paused"
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	resp, err := follower.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: key})
	cancel()
	if err != nil || resp.GetNextId() != 1 {
		t.Fatalf("first WEAK id via %s: %v, %v", follower.ID, resp, err)
	}
	connectBeforePause(t, follower, conn)
	follower.Pause()
	const floor = 1_000_000
	start := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 3*proccluster.WeakRangeTTL+5*time.Second)
	_, err = leader.Sequencer().SetFloor(ctx, &ordinalv1.SetFloorRequest{Key: key, Floor: floor})
	cancel()
	if err != nil {
		t.Fatalf("SetFloor while %s is paused: %v", follower.ID, err)
	}
	if took := time.Since(start); took < proccluster.WeakRangeTTL {
		t.Fatalf("SetFloor returned after %v, before the paused follower's range could have expired", took)
	}
	base := unreadBytes(t, follower, conn)
	const frozenCalls = 20
	req := &ordinalv1.GetNextIdRequest{Key: key}
	var calls inflight.Calls
	type result struct {
		id  int64
		err error
	}
	results := make(chan result, frozenCalls)
	for i := 0; i < frozenCalls; i++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), staleCallTimeout)
			defer cancel()
			resp := new(ordinalv1.GetNextIdResponse)
			err := calls.Invoke(ctx, conn, ordinalv1.SequencerService_GetNextId_FullMethodName, req, resp)
			results <- result{resp.GetNextId(), err}
		}()
	}
	unread := awaitInSocket(t, follower, conn, &calls, frozenCalls, base, inflight.MinRequestBytes(req))
	follower.Resume()
	served, refused := 0, 0
	var refusal error
	for i := 0; i < frozenCalls; i++ {
		r := <-results
		if r.err == nil && r.id <= floor {
			t.Fatalf("WEAK via %s, waiting in its socket when it resumed: %d, at or below the floor %d", follower.ID, r.id, floor)
		}
		if r.err == nil {
			served++
		} else if status.Code(r.err) != codes.DeadlineExceeded {
			refused++
			refusal = r.err
		}
	}
	t.Logf("%d WEAK calls waited in the paused follower %s's socket (%d bytes unread) when it resumed; then %d succeeded above the floor, %d were refused (%v), %d timed out",
		frozenCalls, follower.ID, unread-base, served, refused, refusal, frozenCalls-served-refused)
	if served+refused == 0 {
		t.Fatalf("the resumed follower %s neither answered nor refused any of the %d calls waiting in its socket", follower.ID, frozenCalls)
	}
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		resp, err := follower.Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: key})
		cancel()
		if err == nil && resp.GetNextId() <= floor {
			t.Fatalf("WEAK via %s right after it resumed: %d, at or below the floor %d", follower.ID, resp.GetNextId(), floor)
		}
	}
}

// trackedConns opens a connection to every node of c on which a test sees
// its calls in flight and what the node has not read (inflight.Conn).
func trackedConns(t *testing.T, c *proccluster.Cluster) map[*proccluster.Node]*inflight.Conn {
	t.Helper()
	conns := map[*proccluster.Node]*inflight.Conn{}
	for _, nd := range c.Nodes {
		conn, err := inflight.Dial(nd.GRPCAddr, c.PKI().DialOption(proccluster.AdminName))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns[nd] = conn
	}
	return conns
}

// connectBeforePause makes conn ready: a frozen node cannot finish a TLS
// handshake.
func connectBeforePause(t *testing.T, nd *proccluster.Node, conn *inflight.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), proccluster.ReadyTimeout)
	defer cancel()
	if err := conn.WaitReady(ctx); err != nil {
		t.Fatalf("%s: %v", nd.ID, err)
	}
}

// checkSocket says whether the test can read sockets' receive queues
// (/proc/net/tcp). Elsewhere a call in flight only shows it was sent.
var checkSocket = runtime.GOOS == "linux"

// unreadBytes returns how much of what conn sent the node has not read.
func unreadBytes(t *testing.T, nd *proccluster.Node, conn *inflight.Conn) int {
	t.Helper()
	if !checkSocket {
		return 0
	}
	n, err := conn.Unread()
	if err != nil {
		t.Fatalf("%s's socket: %v", nd.ID, err)
	}
	return n
}

// awaitInSocket waits until the n calls sent through conn to the frozen
// node nd are all in flight, and (on Linux) the node's socket holds,
// unread, at least reqBytes per call beyond the base bytes it held before
// they were sent: every request is there, waiting for the node to resume.
// It returns the bytes unread then.
func awaitInSocket(t *testing.T, nd *proccluster.Node, conn *inflight.Conn, calls *inflight.Calls, n, base, reqBytes int) (unread int) {
	t.Helper()
	deadline := time.Now().Add(inSocketTimeout)
	for {
		inFlight := calls.Sent() == n && calls.Open() == n
		unread = unreadBytes(t, nd, conn)
		if inFlight && (!checkSocket || unread-base >= n*reqBytes) {
			return unread
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s frozen: after %v, of %d calls sent to it %s; its socket holds %d bytes unread, %d before them, want at least %d more",
				nd.ID, inSocketTimeout, n, calls, unread, base, n*reqBytes)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
