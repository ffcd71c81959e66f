package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/server"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// The leader, and only the leader, reports LeaderHealthService SERVING,
// to any caller with the ids role; when it stops, its Watch streams end
// at once instead of holding up its graceful stop, and another node takes
// over the status.
func TestLeaderHealthService(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	// An application's certificate: role ids, not admin.
	health := func(nd *testcluster.Node) healthpb.HealthClient {
		conn, err := grpc.NewClient(nd.GRPCAddr, c.DialOptions("app")...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return healthpb.NewHealthClient(conn)
	}
	statusOf := func(nd *testcluster.Node) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health(nd).Check(callCtx(t), &healthpb.HealthCheckRequest{Service: server.LeaderHealthService})
		if err != nil {
			t.Fatalf("Check(%s) on %s: %v", server.LeaderHealthService, nd.ID, err)
		}
		return resp.GetStatus()
	}
	testutil.WaitFor(t, 5*time.Second, "the leader reporting SERVING", func() bool {
		return statusOf(leader) == healthpb.HealthCheckResponse_SERVING
	})
	for _, nd := range c.Followers(leader) {
		if got := statusOf(nd); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("follower %s reports %v, want NOT_SERVING", nd.ID, got)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch, err := health(leader).Watch(ctx, &healthpb.HealthCheckRequest{Service: server.LeaderHealthService})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch on the leader: %v, %v; want SERVING", resp, err)
	}
	start := time.Now()
	leader.Stop()
	// A graceful stop waits at most 5 s for calls in flight; an open
	// Watch stream must not make it wait that long.
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("stopping a node with a Watch stream open took %v", took)
	}
	for {
		resp, err := watch.Recv()
		if err != nil {
			if code := status.Code(err); code != codes.Unavailable {
				t.Errorf("the Watch stream of a stopped node ended with %v, want Unavailable", err)
			}
			break
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			t.Fatal("a stopping node still reports that it leads")
		}
	}
	next := c.Leader()
	testutil.WaitFor(t, 10*time.Second, "the new leader reporting SERVING", func() bool {
		return statusOf(next) == healthpb.HealthCheckResponse_SERVING
	})
}
