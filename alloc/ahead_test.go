package alloc

import (
	"context"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/fsm"
)

// On the leader, a STRONG call on a key with nothing reserved starts its
// reservation while its leadership proof is still in flight, and serves
// from it once the proof is in: the two round trips overlap.
func TestStrongReservesWhileProving(t *testing.T) {
	b := newMemBackend()
	b.confirmGate = make(chan struct{})
	a := newTestAllocator(t, b, Config{})
	done := make(chan error, 1)
	go func() {
		_, err := a.Next(context.Background(), fsm.Key{Store: "s", Name: "new"}, Strong, 1)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for b.reservesStarted() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the reservation did not start while the proof was held")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the call returned before its proof: %v", err)
	default:
	}
	close(b.confirmGate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A follower does not reserve ahead: it forwards STRONG calls.
	b.setLeader(false)
	if _, err := a.Next(context.Background(), fsm.Key{Store: "s", Name: "other"}, Strong, 1); err == nil {
		t.Fatal("STRONG on a follower succeeded")
	}
	if n := b.reservesStarted(); n != 1 {
		t.Fatalf("%d reservations, want only the leader's one", n)
	}
}
