package alloc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/fsm"
)

// holdingBackend is a memBackend that implements FloorHolder with a
// chosen answer.
type holdingBackend struct {
	*memBackend
	holdErr error
	holds   int
}

func (b *holdingBackend) HoldFloor(ctx context.Context, hold time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holds++
	return b.holdErr
}

// A WEAK range serves no longer than WeakRangeTTL after it was asked for:
// a node that never hears of a floor stops serving below it by then.
func TestWeakRangesExpire(t *testing.T) {
	b := newMemBackend()
	a := newTestAllocator(t, b, Config{InitialReservation: 1000, WeakRangeTTL: 50 * time.Millisecond})
	key := fsm.Key{Store: "s", Name: "k"}
	first, err := a.Next(context.Background(), key, Weak, 1)
	if err != nil || first != 1 {
		t.Fatalf("first WEAK id: %d, %v", first, err)
	}
	// Someone else raises the mark (a floor this node never applies).
	b.fsm.ApplyCommand(fsm.Command{Ops: []fsm.Op{{Kind: fsm.OpFloor, Key: key, Value: 5000}}})
	if id, err := a.Next(context.Background(), key, Weak, 1); err != nil || id != 2 {
		t.Fatalf("within the TTL the range still serves: %d, %v", id, err)
	}
	time.Sleep(60 * time.Millisecond) // let the range expire: what is being tested is time itself
	id, err := a.Next(context.Background(), key, Weak, 1)
	if err != nil || id <= 5000 {
		t.Fatalf("after the TTL: %d, %v; want a new range above 5000", id, err)
	}
}

// SetFloor returns at once when the backend confirms the floor holds on
// every node, waits FloorHold(WeakRangeTTL) when it cannot, and says the
// floor is pending when the caller's deadline is shorter.
func TestSetFloorWaitsUntilTheFloorHolds(t *testing.T) {
	const ttl = 200 * time.Millisecond
	key := fsm.Key{Store: "s", Name: "k"}
	for _, tt := range []struct {
		name     string
		holdErr  error
		holder   bool
		deadline time.Duration
		minTook  time.Duration
		maxTook  time.Duration
		wantErr  error
	}{
		{"confirmed", nil, true, time.Second, 0, ttl / 2, nil},
		{"not confirmed", errors.New("n3 did not answer"), true, 2 * time.Second, FloorHold(ttl), 2 * time.Second, nil},
		{"no holder", nil, false, 2 * time.Second, FloorHold(ttl), 2 * time.Second, nil},
		{"deadline first", errors.New("n3 did not answer"), true, ttl / 2, 0, FloorHold(ttl), ErrFloorPending},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hb := &holdingBackend{memBackend: newMemBackend(), holdErr: tt.holdErr}
			var be Backend = hb
			if !tt.holder {
				be = struct{ Backend }{hb} // hides HoldFloor
			}
			a := newTestAllocator(t, be, Config{WeakRangeTTL: ttl})
			ctx, cancel := context.WithTimeout(context.Background(), tt.deadline)
			defer cancel()
			start := time.Now()
			_, err := a.SetFloor(ctx, key, 100)
			took := time.Since(start)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("SetFloor: %v, want %v", err, tt.wantErr)
			}
			if errors.Is(err, ErrFloorPending) && !errors.Is(err, ErrUnavailable) {
				t.Fatalf("a pending floor must read as unavailable (retry): %v", err)
			}
			if took < tt.minTook || took > tt.maxTook {
				t.Fatalf("SetFloor took %v, want between %v and %v", took, tt.minTook, tt.maxTook)
			}
			if tt.holder && hb.holds != 1 {
				t.Fatalf("HoldFloor asked %d times, want once", hb.holds)
			}
		})
	}
}
