package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/fsm"
)

var testKey = fsm.Key{Store: "default", Name: "k"}

func testConfig(t *testing.T, dir string) Config {
	t.Helper()
	return Config{
		NodeID:   "n1",
		DataDir:  dir,
		RaftAddr: "127.0.0.1:0",
	}
}

func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.Bootstrap = true
	n, err := New(cfg)
	if err == nil {
		err = n.Start(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		n.Close()
		t.Fatal(err)
	}
	return n
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSingleNodeBootstrapsAndLeads(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	defer n.Close()
	epoch, err := n.Confirm(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	r, repoch, err := n.Reserve(ctx(t), testKey, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r != (alloc.Range{First: 1, Last: 10}) || repoch != epoch {
		t.Fatalf("reserve: %+v in epoch %d, want 1..10 in epoch %d", r, repoch, epoch)
	}
	if n.FSM().ClusterID() == "" {
		t.Fatal("a bootstrapped cluster has no cluster ID")
	}
}

// Every restart path (log replay, snapshot restore) must bring back every
// reservation, or ids would be handed out twice.
func TestRestartKeepsEveryReservation(t *testing.T) {
	for _, snapshot := range []bool{false, true} {
		name := "log replay"
		if snapshot {
			name = "snapshot restore"
		}
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			n := startNode(t, cfg)
			var last uint64
			for i := range 20 {
				r, _, err := n.Reserve(ctx(t), fsm.Key{Store: "s", Name: "k"}, uint64(i+1), 1)
				if err != nil {
					t.Fatal(err)
				}
				last = r.Last
			}
			if _, err := n.Floor(ctx(t), fsm.Key{Store: "s", Name: "floored"}, 1_000_000); err != nil {
				t.Fatal(err)
			}
			clusterID := n.FSM().ClusterID()
			if snapshot {
				if err := n.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}

			n = startNode(t, cfg)
			defer n.Close()
			r, _, err := n.Reserve(ctx(t), fsm.Key{Store: "s", Name: "k"}, 5, 5)
			if err != nil {
				t.Fatal(err)
			}
			if r.First != last+1 {
				t.Fatalf("after restart the next range starts at %d, want %d", r.First, last+1)
			}
			if hw, _ := n.HighWater(ctx(t), fsm.Key{Store: "s", Name: "floored"}); hw != 1_000_000 {
				t.Fatalf("floor lost across restart: high water %d", hw)
			}
			if got := n.FSM().ClusterID(); got != clusterID {
				t.Fatalf("cluster ID changed across restart: %q, was %q", got, clusterID)
			}
		})
	}
}

func TestDataDirBelongsToOneNode(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	n := startNode(t, cfg)

	// A second process on the same directory must fail fast, not corrupt it.
	second := cfg
	if _, err := New(second); err == nil {
		t.Fatal("a second node opened a data directory in use")
	}
	n.Close()

	other := cfg
	other.NodeID = "n2"
	if _, err := New(other); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("opening n1's directory as n2: got %v, want ErrIdentityMismatch", err)
	}
}

func TestOverflowLeavesCounterUnchanged(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	defer n.Close()
	if _, err := n.Floor(ctx(t), testKey, fsm.MaxID-1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Reserve(ctx(t), testKey, 2, 2); !errors.Is(err, fsm.ErrOverflow) {
		t.Fatalf("got %v, want ErrOverflow", err)
	}
	if hw, _ := n.HighWater(ctx(t), testKey); hw != fsm.MaxID-1 {
		t.Fatalf("high water %d after a failed reservation", hw)
	}
}

func TestClosedNodeIsUnavailable(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	n.Close()
	_, _, err := n.Reserve(ctx(t), testKey, 1, 1)
	if !errors.Is(err, alloc.ErrNotLeader) && !errors.Is(err, alloc.ErrUnavailable) {
		t.Fatalf("reserve after close: %v", err)
	}
}
