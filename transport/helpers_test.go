package transport

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testRPCTimeout bounds every RPC made through test transports so that a
// broken test fails instead of hanging.
const testRPCTimeout = 5 * time.Second

// newLayer listens on an ephemeral loopback port and closes the layer when
// the test ends.
func newLayer(t *testing.T, cfg Config) *StreamLayer {
	t.Helper()
	sl, err := Listen("127.0.0.1:0", "", cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { _ = sl.Close() })
	return sl
}

// newTrans builds a NetworkTransport over a fresh layer and closes it when
// the test ends.
func newTrans(t *testing.T, cfg Config) *raft.NetworkTransport {
	t.Helper()
	trans := NewTransport(newLayer(t, cfg), RaftConfig{Timeout: testRPCTimeout})
	t.Cleanup(func() { _ = trans.Close() })
	return trans
}

// serve answers every RPC arriving at trans until the test ends and forwards
// each request to the returned channel (which has room for every request a
// test makes; serve fails the test rather than blocking when it is full).
func serve(t *testing.T, trans *raft.NetworkTransport) <-chan any {
	t.Helper()
	got := make(chan any, 16)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case rpc := <-trans.Consumer():
				respond(rpc)
				select {
				case got <- rpc.Command:
				default:
					t.Errorf("serve: too many RPCs")
				}
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-exited
	})
	return got
}

// respond answers rpc the way a healthy follower would.
func respond(rpc raft.RPC) {
	switch req := rpc.Command.(type) {
	case *raft.AppendEntriesRequest:
		var last uint64
		if n := len(req.Entries); n > 0 {
			last = req.Entries[n-1].Index
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: last, Success: true}, nil)
	case *raft.RequestVoteRequest:
		rpc.Respond(&raft.RequestVoteResponse{Term: req.Term, Granted: true}, nil)
	default:
		rpc.Respond(nil, raft.ErrUnsupportedProtocol)
	}
}

// receive returns the next request from got, failing the test if none
// arrives in time.
func receive(t *testing.T, got <-chan any) any {
	t.Helper()
	select {
	case req := <-got:
		return req
	case <-time.After(testRPCTimeout):
		t.Fatal("no RPC arrived")
		return nil
	}
}

// assertNothingReceived fails the test if a request was delivered.
func assertNothingReceived(t *testing.T, got <-chan any) {
	t.Helper()
	select {
	case req := <-got:
		t.Fatalf("unexpected RPC delivered: %#v", req)
	default:
	}
}

// waitFor polls cond until it holds or timeout expires.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
