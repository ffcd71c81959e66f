package alloc

import (
	"errors"
	"testing"
)

// TestFailedReservationsDoNotGrowTheSize: a caller retrying while
// reservations fail (no leader, no quorum) must not make the key reserve a
// huge range once the store is back. Each failed attempt used to double
// the size, so a short outage ended with a MaxReservation (4M) range: a
// 4M gap at the next restart or leader change, and a cut-off node serving
// WEAK calls from it for hours instead of answering Unavailable.
// (Found by e2e/partition_test.go, TestPartitionMinorityFollower.)
func TestFailedReservationsDoNotGrowTheSize(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{})
	if _, err := a.Next(testCtx(t), testKey, Weak, 64); err != nil { // use up the first range
		t.Fatal(err)
	}
	b.mu.Lock()
	b.reserveErr = errors.New("no leader")
	b.mu.Unlock()
	for range 20 {
		a.Next(testCtx(t), testKey, Weak, 1) // fails
	}
	b.mu.Lock()
	b.reserveErr = nil
	b.mu.Unlock()
	if _, err := a.Next(testCtx(t), testKey, Weak, 1); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if last := b.wants[len(b.wants)-1]; last > 256 {
		t.Fatalf("after the outage the key reserved %d ids at once (sizes asked: %v)", last, b.wants)
	}
}
