package etcdtest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// TestSnowflakeOverEtcd serves a Snowflake store from three ordinal nodes
// that keep everything in etcd (native layout): each node leases its own
// worker ID, WEAK IDs from every node are unique and decode to about now,
// STRONG IDs increase through every node (forwarded to the elected one),
// a floor holds on every node, and a restarted node keeps handing out IDs
// above its earlier ones. With the Layotto layout WEAK works and STRONG,
// which that layout has no leader for, is refused at once.
func TestSnowflakeOverEtcd(t *testing.T) {
	e := etcdtest.Shared(t)
	sf := daemon.Snowflake{Stores: map[string]snowflake.Layout{"sf": snowflake.Milliseconds}, Lease: time.Second, MaxDrift: 5 * time.Second}
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 3, Store: etcdcompat.Config{}, Snowflake: sf})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := snowflake.Milliseconds
	seen := map[int64]string{}
	take := func(nd *etcdtest.Node, strong bool) int64 {
		t.Helper()
		req := &ordinalv1.GetNextIdRequest{StoreName: "sf", Key: "k"}
		if strong {
			req.Options = &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}
		}
		resp, err := nd.Sequencer().GetNextId(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", nd.Name, err)
		}
		if prev, dup := seen[resp.NextId]; dup {
			t.Fatalf("%d handed out by %s and %s", resp.NextId, prev, nd.Name)
		}
		seen[resp.NextId] = nd.Name
		return resp.NextId
	}
	workers := map[uint64]string{}
	last := map[string]int64{}
	for _, nd := range c.Nodes() {
		for range 50 {
			id := take(nd, false)
			if id <= last[nd.Name] {
				t.Fatalf("%s: %d after %d", nd.Name, id, last[nd.Name])
			}
			last[nd.Name] = id
		}
		p, _ := l.Decode(uint64(last[nd.Name]))
		if d := time.Since(p.Time); d < -5*time.Second || d > 10*time.Second {
			t.Fatalf("%s stamped %s", nd.Name, p.Time)
		}
		if other, ok := workers[p.Worker]; ok {
			t.Fatalf("%s and %s share worker %d", nd.Name, other, p.Worker)
		}
		workers[p.Worker] = nd.Name
	}
	var prev int64
	for i := range 30 {
		id := take(c.Nodes()[i%3], true)
		if id <= prev {
			t.Fatalf("STRONG %d after %d", id, prev)
		}
		prev = id
	}
	floor := int64(l.Compose(l.TickAt(uint64(time.Now().Add(2*time.Second).UnixMilli())), 0, 0))
	if _, err := c.Nodes()[1].Sequencer().SetFloor(ctx, &ordinalv1.SetFloorRequest{StoreName: "sf", Key: "k", Floor: floor}); err != nil {
		t.Fatal(err)
	}
	for _, nd := range c.Nodes() {
		if id := take(nd, false); id <= floor {
			t.Fatalf("%s: %d at or below the floor %d", nd.Name, id, floor)
		}
	}
	nd := c.Nodes()[2]
	before := take(nd, false)
	nd.Restart()
	if id := take(nd, false); id <= before {
		t.Fatalf("%s after a restart: %d, before %d", nd.Name, id, before)
	}

	lc := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 2, Store: etcdcompat.Config{Layout: etcdcompat.LayoutLayotto}, Snowflake: sf})
	seen = map[int64]string{}
	for _, nd := range lc.Nodes() {
		for range 20 {
			take(nd, false)
		}
	}
	_, err := lc.Nodes()[0].Sequencer().GetNextId(ctx, &ordinalv1.GetNextIdRequest{StoreName: "sf", Key: "k",
		Options: &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "WEAK") {
		t.Fatalf("STRONG Snowflake ID from the Layotto layout: %v, want FailedPrecondition naming WEAK", err)
	}
}
