package server_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/server"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
)

func startDaemon(tb testing.TB, ready bool) (*daemon.Daemon, ordinalv1.SequencerClient, *grpc.ClientConn) {
	tb.Helper()
	d, err := daemon.Start(daemon.Config{
		Cluster:  cluster.Config{NodeID: "n1", DataDir: tb.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true},
		GRPCAddr: "127.0.0.1:0",
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	if ready {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.WaitReady(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	conn, err := grpc.NewClient(d.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return d, ordinalv1.NewSequencerClient(conn), conn
}

func callCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func strong() *ordinalv1.SequencerOptions {
	return &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_STRONG}
}

func TestBadInputIsRejected(t *testing.T) {
	_, c, _ := startDaemon(t, true)
	long := func(n int) string { return strings.Repeat("k", n) }
	tests := []struct {
		name string
		req  *ordinalv1.GetNextIdsRequest
		want codes.Code
	}{
		{"empty key", &ordinalv1.GetNextIdsRequest{Count: 1}, codes.InvalidArgument},
		{"key over 1 KiB", &ordinalv1.GetNextIdsRequest{Key: long(1025), Count: 1}, codes.InvalidArgument},
		{"key of exactly 1 KiB", &ordinalv1.GetNextIdsRequest{Key: long(1024), Count: 1}, codes.OK},
		{"store over 256 bytes", &ordinalv1.GetNextIdsRequest{StoreName: long(257), Key: "k", Count: 1}, codes.InvalidArgument},
		{"store of exactly 256 bytes", &ordinalv1.GetNextIdsRequest{StoreName: long(256), Key: "k", Count: 1}, codes.OK},
		{"unknown increment", &ordinalv1.GetNextIdsRequest{Key: "k", Count: 1, Options: &ordinalv1.SequencerOptions{Increment: 7}}, codes.InvalidArgument},
		{"zero count", &ordinalv1.GetNextIdsRequest{Key: "k", Count: 0}, codes.InvalidArgument},
		{"negative count", &ordinalv1.GetNextIdsRequest{Key: "k", Count: -5}, codes.InvalidArgument},
		{"count above the maximum", &ordinalv1.GetNextIdsRequest{Key: "k", Count: server.DefaultMaxCount + 1}, codes.InvalidArgument},
		{"count at the maximum", &ordinalv1.GetNextIdsRequest{Key: "k", Count: server.DefaultMaxCount, Options: strong()}, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.GetNextIds(callCtx(t), tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
			if tc.want != codes.OK && status.Convert(err).Message() == "" {
				t.Fatal("error without a message")
			}
		})
	}
	if _, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetNextId with empty key: %v", err)
	}
	if _, err := c.SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: "k", Floor: -1}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("negative floor: %v", err)
	}
	if _, err := c.GetHighWater(callCtx(t), &ordinalv1.GetHighWaterRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetHighWater with empty key: %v", err)
	}
}

func TestOverflowIsOutOfRangeAndChangesNothing(t *testing.T) {
	_, c, _ := startDaemon(t, true)
	for _, opts := range []*ordinalv1.SequencerOptions{nil, strong()} {
		key := "full-" + opts.GetIncrement().String()
		if _, err := c.SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: key, Floor: math.MaxInt64 - 3}); err != nil {
			t.Fatal(err)
		}
		_, err := c.GetNextIds(callCtx(t), &ordinalv1.GetNextIdsRequest{Key: key, Count: 4, Options: opts})
		if status.Code(err) != codes.OutOfRange {
			t.Fatalf("%s: 4 ids with 3 left: %v, want OutOfRange", key, err)
		}
		hw, err := c.GetHighWater(callCtx(t), &ordinalv1.GetHighWaterRequest{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if hw.HighWater != math.MaxInt64-3 {
			t.Fatalf("%s: counter moved to %d on overflow", key, hw.HighWater)
		}
		resp, err := c.GetNextIds(callCtx(t), &ordinalv1.GetNextIdsRequest{Key: key, Count: 3, Options: opts})
		if err != nil || resp.FirstId != math.MaxInt64-2 {
			t.Fatalf("%s: the last 3 ids: %v, %v", key, resp, err)
		}
		if _, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: key, Options: opts}); status.Code(err) != codes.OutOfRange {
			t.Fatalf("%s: past the maximum: %v, want OutOfRange", key, err)
		}
	}
}

func TestNotReadyIsUnavailable(t *testing.T) {
	d, c, conn := startDaemon(t, false)
	_, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "k"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("before ready: %v, want Unavailable", err)
	}
	h := healthpb.NewHealthClient(conn)
	if resp, err := h.Check(callCtx(t), &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health before ready: %v %v", resp, err)
	}
	if err := d.WaitReady(callCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "k"}); err != nil {
		t.Fatalf("after ready: %v", err)
	}
	if resp, err := h.Check(callCtx(t), &healthpb.HealthCheckRequest{Service: "ordinal.v1.Sequencer"}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after ready: %v %v", resp, err)
	}
}

func TestStoresAreNamespacesAndEmptyMeansDefault(t *testing.T) {
	_, c, _ := startDaemon(t, true)
	next := func(store string) int64 {
		resp, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{StoreName: store, Key: "k", Options: strong()})
		if err != nil {
			t.Fatal(err)
		}
		return resp.NextId
	}
	if a, b := next(""), next("default"); a != 1 || b != 2 {
		t.Fatalf(`"" and "default" should share a counter: got %d then %d`, a, b)
	}
	if got := next("other"); got != 1 {
		t.Fatalf("another store starts at %d, want 1", got)
	}
}

// FuzzRequests feeds arbitrary requests to a real node: it must never
// panic, must answer only with the documented codes, and every block it
// hands out must lie within the ID space.
func FuzzRequests(f *testing.F) {
	f.Add("", "k", int32(0), int64(1), int64(0))
	f.Add("s", "", int32(1), int64(0), int64(-1))
	f.Add(strings.Repeat("s", 300), "k", int32(9), int64(-1), int64(math.MaxInt64))
	f.Add("s", "k\x00\xff", int32(1), int64(1_000_000), int64(math.MaxInt64-1))
	f.Add("s", "k", int32(-1), int64(math.MaxInt64), int64(5))
	_, c, _ := startDaemon(f, true)
	f.Fuzz(func(t *testing.T, store, key string, inc int32, count, floor int64) {
		if !utf8.ValidString(store) || !utf8.ValidString(key) {
			return // proto3 strings are UTF-8; the client cannot even send these
		}
		ctx := callCtx(t)
		opts := &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AutoIncrement(inc)}
		resp, err := c.GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{StoreName: store, Key: key, Options: opts, Count: count})
		switch status.Code(err) {
		case codes.OK:
			if resp.FirstId < 1 || resp.Count != count || resp.FirstId > math.MaxInt64-count+1 {
				t.Fatalf("block %d+%d outside the ID space", resp.FirstId, resp.Count)
			}
		case codes.InvalidArgument, codes.OutOfRange:
		default:
			t.Fatalf("GetNextIds: unexpected %v", err)
		}
		if _, err := c.SetFloor(ctx, &ordinalv1.SetFloorRequest{StoreName: store, Key: key, Floor: floor}); err != nil &&
			status.Code(err) != codes.InvalidArgument {
			t.Fatalf("SetFloor: unexpected %v", err)
		}
	})
}

// A client keeping a NextIdStream open must not hold up a node's shutdown
// until the graceful-stop timeout.
func TestOpenStreamDoesNotDelayShutdown(t *testing.T) {
	d, c, _ := startDaemon(t, true)
	stream, err := c.NextIdStream(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ordinalv1.NextIdStreamRequest{Seq: 1, Key: "k", Count: 1}); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.FirstId != 1 {
		t.Fatalf("stream answer: %v, %v", resp, err)
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %v with a stream open", took)
	}
}
