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
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/runtimev1"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/apisuite"
	"github.com/ordinal-dev/ordinal/internal/metricstest"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testpki"
	"github.com/ordinal-dev/ordinal/metrics"
)

// startDaemon starts a secured single node (testcluster.Secure) and
// connects to it as the admin.
func startDaemon(tb testing.TB, ready bool) (*daemon.Daemon, ordinalv1.SequencerServiceClient, *grpc.ClientConn) {
	tb.Helper()
	return startDaemonWith(tb, ready, nil)
}

// startDaemonWith is startDaemon with configure, when not nil, called on
// the node's configuration before it starts.
func startDaemonWith(tb testing.TB, ready bool, configure func(*daemon.Config)) (*daemon.Daemon, ordinalv1.SequencerServiceClient, *grpc.ClientConn) {
	tb.Helper()
	pki := testpki.New(tb, "")
	cfg := daemon.Config{
		Cluster:  cluster.Config{NodeID: "n1", DataDir: tb.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true},
		GRPCAddr: "127.0.0.1:0",
		Alloc:    alloc.Config{WeakRangeTTL: testcluster.TestWeakRangeTTL},
	}
	testcluster.Secure(tb, pki, "n1", &cfg)
	if configure != nil {
		configure(&cfg)
	}
	d, err := daemon.Start(cfg)
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
	conn, err := grpc.NewClient(d.GRPCAddr(), pki.DialOption(testpki.AdminName))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return d, ordinalv1.NewSequencerServiceClient(conn), conn
}

func callCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func strong() *ordinalv1.SequencerOptions {
	return &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}
}

// TestAPISuiteOverRaft runs the store-agnostic API suite (bad input,
// overflow, floors, namespaces, Layotto's call, concurrency) over one Raft
// node; cluster tests run it over three, etcdtest over etcd.
func TestAPISuiteOverRaft(t *testing.T) {
	_, _, conn := startDaemon(t, true)
	apisuite.Run(t, []apisuite.Target{{Name: "n1", Conn: conn}})
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
	if resp, err := h.Check(callCtx(t), &healthpb.HealthCheckRequest{Service: "ordinal.v1.SequencerService"}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after ready: %v %v", resp, err)
	}
}

// The mode keeps Layotto's numbers: no options, AUTO_INCREMENT_UNSPECIFIED
// (0, Layotto's WEAK) and AUTO_INCREMENT_WEAK (2) are served as WEAK by
// GetNextId, GetNextIds and NextIdStream alike, AUTO_INCREMENT_STRONG (1)
// as STRONG, as the node's ordinal_ids_issued_total{mode} counts them;
// other values are InvalidArgument. Layotto's Runtime/GetNextId takes
// its WEAK (0) and STRONG (1) only: 2 is InvalidArgument there.
func TestAutoIncrementValues(t *testing.T) {
	m := metrics.New()
	_, c, conn := startDaemonWith(t, true, func(cfg *daemon.Config) { cfg.Metrics = m })
	issued := func() (weak, strong float64) {
		t.Helper()
		g, err := m.Gatherer()
		if err != nil {
			t.Fatal(err)
		}
		return metricstest.Sum(t, g, "ordinal_ids_issued_total", map[string]string{"mode": "weak"}),
			metricstest.Sum(t, g, "ordinal_ids_issued_total", map[string]string{"mode": "strong"})
	}
	calls := map[string]func(*ordinalv1.SequencerOptions) error{
		"GetNextId": func(o *ordinalv1.SequencerOptions) error {
			_, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: "modes", Options: o})
			return err
		},
		"GetNextIds": func(o *ordinalv1.SequencerOptions) error {
			_, err := c.GetNextIds(callCtx(t), &ordinalv1.GetNextIdsRequest{Key: "modes", Options: o, Count: 1})
			return err
		},
		"NextIdStream": func(o *ordinalv1.SequencerOptions) error {
			stream, err := c.NextIdStream(callCtx(t))
			if err != nil {
				return err
			}
			defer stream.CloseSend()
			if err := stream.Send(&ordinalv1.NextIdStreamRequest{Seq: 1, Key: "modes", Options: o, Count: 1}); err != nil {
				return err
			}
			resp, err := stream.Recv()
			if err != nil {
				return err
			}
			return status.New(codes.Code(resp.GetCode()), resp.GetMessage()).Err() // nil for OK
		},
		"Runtime/GetNextId": func(o *ordinalv1.SequencerOptions) error {
			var opts *runtimev1.SequencerOptions
			if o != nil {
				opts = &runtimev1.SequencerOptions{Increment: runtimev1.SequencerOptions_AutoIncrement(o.GetIncrement())}
			}
			_, err := runtimev1.NewRuntimeClient(conn).GetNextId(callCtx(t), &runtimev1.GetNextIdRequest{Key: "modes", Options: opts})
			return err
		},
	}
	opts := func(inc ordinalv1.SequencerOptions_AutoIncrement) *ordinalv1.SequencerOptions {
		return &ordinalv1.SequencerOptions{Increment: inc}
	}
	for _, tc := range []struct {
		name  string
		opts  *ordinalv1.SequencerOptions
		calls []string
		want  string // weak, strong, or invalid
	}{
		{"no options", nil, []string{"GetNextId", "GetNextIds", "NextIdStream", "Runtime/GetNextId"}, "weak"},
		{"AUTO_INCREMENT_UNSPECIFIED (0)", opts(ordinalv1.SequencerOptions_AUTO_INCREMENT_UNSPECIFIED), []string{"GetNextId", "GetNextIds", "NextIdStream", "Runtime/GetNextId"}, "weak"},
		{"AUTO_INCREMENT_WEAK (2)", opts(ordinalv1.SequencerOptions_AUTO_INCREMENT_WEAK), []string{"GetNextId", "GetNextIds", "NextIdStream"}, "weak"},
		{"AUTO_INCREMENT_STRONG (1)", opts(ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG), []string{"GetNextId", "GetNextIds", "NextIdStream", "Runtime/GetNextId"}, "strong"},
		{"Layotto has no 2", opts(ordinalv1.SequencerOptions_AUTO_INCREMENT_WEAK), []string{"Runtime/GetNextId"}, "invalid"},
		{"3", opts(3), []string{"GetNextId", "GetNextIds", "NextIdStream", "Runtime/GetNextId"}, "invalid"},
		{"-1", opts(-1), []string{"GetNextId", "GetNextIds", "NextIdStream", "Runtime/GetNextId"}, "invalid"},
	} {
		for _, name := range tc.calls {
			weak, strong := issued()
			err := calls[name](tc.opts)
			weak2, strong2 := issued()
			var got string
			switch {
			case status.Code(err) == codes.InvalidArgument:
				got = "invalid"
			case err != nil:
				t.Fatalf("%s, %s: %v", tc.name, name, err)
			case weak2 == weak+1 && strong2 == strong:
				got = "weak"
			case strong2 == strong+1 && weak2 == weak:
				got = "strong"
			default:
				t.Fatalf("%s, %s: issued weak %v -> %v, strong %v -> %v: want one more of one mode", tc.name, name, weak, weak2, strong, strong2)
			}
			if got != tc.want {
				t.Errorf("%s, %s: served as %s (%v), want %s", tc.name, name, got, err, tc.want)
			}
		}
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

// rawCodec sends and receives messages as bytes already encoded, so a
// test can send what a generated client refuses to marshal.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// Keys and store names that are not UTF-8 answer InvalidArgument naming
// the field, on ordinal's API and on Layotto's, as the README's error
// table says; grpc-go alone would answer Internal.
func TestInvalidUTF8IsInvalidArgument(t *testing.T) {
	_, _, conn := startDaemon(t, true)
	// GetNextIdRequest: store_name = 1, key = 2 (both APIs).
	for _, tt := range []struct {
		method, field string
		body          []byte
	}{
		{"/ordinal.v1.SequencerService/GetNextId", "key", []byte{0x12, 2, 'k', 0xff}},
		{"/ordinal.v1.SequencerService/GetNextId", "store_name", []byte{0x0a, 1, 0xfe, 0x12, 1, 'k'}},
		{"/spec.proto.runtime.v1.Runtime/GetNextId", "key", []byte{0x12, 1, 0xc3}},
	} {
		var out []byte
		err := conn.Invoke(callCtx(t), tt.method, tt.body, &out, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.field) {
			t.Errorf("%s with %s not UTF-8: %v, want InvalidArgument naming %s", tt.method, tt.field, err, tt.field)
		}
	}
}

// Stores whose names start with "_ordinal" hold ordinal's own marks (a
// restored cluster's floor of every key): no caller may take IDs of them,
// raise them or read them.
func TestReservedStoresAreRefused(t *testing.T) {
	_, c, _ := startDaemon(t, true)
	for _, store := range []string{"_ordinal", "_ordinal/x", "_ordinalfoo"} {
		_, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{StoreName: store, Key: "all-keys-floor"})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("GetNextId in store %q: %v, want InvalidArgument", store, err)
		}
		_, err = c.SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{StoreName: store, Key: "all-keys-floor", Floor: 1 << 40})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("SetFloor in store %q: %v, want InvalidArgument", store, err)
		}
	}
	if _, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{StoreName: "ordinal_", Key: "k"}); err != nil {
		t.Errorf("an ordinary store: %v", err)
	}
}
