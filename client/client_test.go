package client_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
)

// testTimeout bounds every call a test makes, so a hung node fails the test
// instead of the whole run.
const testTimeout = 10 * time.Second

// newClient returns a Client for addr that is closed when the test ends.
func newClient(t *testing.T, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(addr, opts...)
	if err != nil {
		t.Fatalf("client.New(%q): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// single starts a secured single-node cluster and returns its address and
// the option that connects to it with the admin's client certificate.
func single(t *testing.T) (string, client.Option) {
	t.Helper()
	c := testcluster.New(t, 1)
	return c.Node("n1").GRPCAddr, client.WithTLS(c.ClientTLS(testcluster.AdminName))
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// unusedAddr returns a loopback address where nothing listens.
func unusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return addr
}

// nextIDs takes n single IDs of key and fails the test on any error.
func nextIDs(ctx context.Context, t *testing.T, s *client.Store, key string, mode client.Mode, n int) []int64 {
	t.Helper()
	ids := make([]int64, 0, n)
	for range n {
		id, err := s.NextID(ctx, key, mode)
		if err != nil {
			t.Fatalf("NextID(%q, %v) after %d ids: %v", key, mode, len(ids), err)
		}
		ids = append(ids, id)
	}
	return ids
}

func requireStrictlyIncreasing(t *testing.T, ids []int64) {
	t.Helper()
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("id %d is %d, not above the previous id %d: %v", i, ids[i], ids[i-1], ids)
		}
	}
}

var modes = []client.Mode{client.Weak, client.Strong}

func TestClient(t *testing.T) {
	addr, secure := single(t)
	c := newClient(t, addr, secure)

	t.Run("weak ids on a fresh key are 1, 2, 3", func(t *testing.T) {
		ctx := testContext(t)
		for want := int64(1); want <= 3; want++ {
			got, err := c.NextID(ctx, "fresh-weak", client.Weak)
			if err != nil {
				t.Fatalf("NextID: %v", err)
			}
			if got != want {
				t.Fatalf("NextID = %d, want %d", got, want)
			}
		}
	})

	for _, mode := range modes {
		t.Run(mode.String()+" ids strictly increase", func(t *testing.T) {
			requireStrictlyIncreasing(t, nextIDs(testContext(t), t, c.Store(""), "increase-"+mode.String(), mode, 50))
		})

		t.Run(mode.String()+" NextIDs block is contiguous and apart from its neighbours", func(t *testing.T) {
			ctx := testContext(t)
			key := "block-" + mode.String()
			before := nextIDs(ctx, t, c.Store(""), key, mode, 5)
			const count = 100
			first, err := c.NextIDs(ctx, key, mode, count)
			if err != nil {
				t.Fatalf("NextIDs: %v", err)
			}
			after := nextIDs(ctx, t, c.Store(""), key, mode, 5)
			last := first + count - 1
			if max := before[len(before)-1]; first <= max {
				t.Fatalf("block %d..%d overlaps or precedes ids taken before it (up to %d)", first, last, max)
			}
			if after[0] <= last {
				t.Fatalf("id %d taken after block %d..%d is not above it", after[0], first, last)
			}
		})

		t.Run(mode.String()+" SetFloor makes later ids exceed the floor", func(t *testing.T) {
			ctx := testContext(t)
			key := "floor-" + mode.String()
			// Taking an ID first makes the node hold a reserved range below
			// the floor, which SetFloor must then skip.
			nextIDs(ctx, t, c.Store(""), key, mode, 1)
			const floor = 1_000_000
			hw, err := c.SetFloor(ctx, key, floor)
			if err != nil {
				t.Fatalf("SetFloor: %v", err)
			}
			if hw < floor {
				t.Fatalf("SetFloor returned high water %d, below the floor %d", hw, floor)
			}
			for _, id := range nextIDs(ctx, t, c.Store(""), key, mode, 3) {
				if id <= floor {
					t.Fatalf("id %d after SetFloor(%d) is not above the floor", id, floor)
				}
			}
		})
	}

	t.Run("HighWater covers every id and consumes none", func(t *testing.T) {
		ctx := testContext(t)
		const key = "high-water"
		if hw, err := c.HighWater(ctx, key); err != nil || hw != 0 {
			t.Fatalf("HighWater of a fresh key = %d, %v; want 0, nil", hw, err)
		}
		ids := append(nextIDs(ctx, t, c.Store(""), key, client.Weak, 10), nextIDs(ctx, t, c.Store(""), key, client.Strong, 10)...)
		hw1, err := c.HighWater(ctx, key)
		if err != nil {
			t.Fatalf("HighWater: %v", err)
		}
		for _, id := range ids {
			if id > hw1 {
				t.Fatalf("id %d is above the high water %d", id, hw1)
			}
		}
		hw2, err := c.HighWater(ctx, key)
		if err != nil {
			t.Fatalf("HighWater: %v", err)
		}
		if hw2 != hw1 {
			t.Fatalf("second HighWater = %d, first %d: HighWater consumed ids", hw2, hw1)
		}
	})

	t.Run("stores are separate namespaces", func(t *testing.T) {
		ctx := testContext(t)
		const key = "shared-name"
		for _, store := range []string{"", "orders", "users"} {
			if got := nextIDs(ctx, t, c.Store(store), key, client.Weak, 1)[0]; got != 1 {
				t.Fatalf("first id of %q in store %q = %d, want 1", key, store, got)
			}
		}
		// WithStore and Store name the same namespace.
		orders := newClient(t, addr, secure, client.WithStore("orders"))
		if got, err := orders.HighWater(ctx, key); err != nil || got < 1 {
			t.Fatalf("HighWater through WithStore(orders) = %d, %v; want the id taken through Store(orders)", got, err)
		}
		// The empty store name is the server's default store.
		named := nextIDs(ctx, t, c.Store("default"), key, client.Strong, 1)[0]
		if named <= 1 {
			t.Fatalf("store \"default\" handed out %d, want it to continue the \"\" store's counter", named)
		}
	})
}

func TestClientErrorCodes(t *testing.T) {
	addr, secure := single(t)
	c := newClient(t, addr, secure)
	ctx := testContext(t)

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"NextID empty key", func() error { _, err := c.NextID(ctx, "", client.Weak); return err }, codes.InvalidArgument},
		{"NextID unknown mode", func() error { _, err := c.NextID(ctx, "k", client.Mode(7)); return err }, codes.InvalidArgument},
		{"NextIDs empty key", func() error { _, err := c.NextIDs(ctx, "", client.Strong, 5); return err }, codes.InvalidArgument},
		{"NextIDs count 0", func() error { _, err := c.NextIDs(ctx, "k", client.Weak, 0); return err }, codes.InvalidArgument},
		{"NextIDs negative count", func() error { _, err := c.NextIDs(ctx, "k", client.Weak, -1); return err }, codes.InvalidArgument},
		{"HighWater empty key", func() error { _, err := c.HighWater(ctx, ""); return err }, codes.InvalidArgument},
		{"SetFloor empty key", func() error { _, err := c.SetFloor(ctx, "", 1); return err }, codes.InvalidArgument},
		{"SetFloor negative floor", func() error { _, err := c.SetFloor(ctx, "k", -1); return err }, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func TestClientClosed(t *testing.T) {
	addr, secure := single(t)
	c, err := client.New(addr, secure)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err = c.NextID(testContext(t), "k", client.Weak)
	if got := status.Code(err); got != codes.Canceled {
		t.Fatalf("NextID after Close: code %v (%v), want Canceled", got, err)
	}
}

func TestClientRetryUnreachable(t *testing.T) {
	tests := []struct {
		name     string
		attempts int
		backoff  time.Duration
		timeout  time.Duration
		// minElapsed is the least the retries must have waited: the sum
		// of the lower jitter bounds, half of each backoff.
		minElapsed time.Duration
	}{
		{"no retries", 1, time.Second, 2 * time.Second, 0},
		{"retries wait between attempts", 3, 100 * time.Millisecond, 5 * time.Second, 50*time.Millisecond + 100*time.Millisecond},
		{"retries stop at the deadline", 100, 50 * time.Millisecond, 300 * time.Millisecond, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, unusedAddr(t), client.WithRetry(tt.attempts, tt.backoff))
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			start := time.Now()
			_, err := c.NextID(ctx, "k", client.Strong)
			elapsed := time.Since(start)
			if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
				t.Fatalf("NextID to an unused port: code %v (%v), want Unavailable or DeadlineExceeded", code, err)
			}
			// The slack covers scheduling; a call that ignored the
			// deadline would take far longer with 100 attempts.
			if limit := tt.timeout + 100*time.Millisecond; elapsed > limit {
				t.Fatalf("NextID took %v, past the %v deadline", elapsed, tt.timeout)
			}
			if elapsed < tt.minElapsed {
				t.Fatalf("NextID took %v; %d attempts with backoff %v wait at least %v", elapsed, tt.attempts, tt.backoff, tt.minElapsed)
			}
		})
	}
}

func TestNewInvalidOption(t *testing.T) {
	tests := []struct {
		name     string
		attempts int
		backoff  time.Duration
	}{
		{"zero attempts", 0, time.Millisecond},
		{"negative backoff", 3, -time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := client.New("127.0.0.1:1", client.WithRetry(tt.attempts, tt.backoff))
			if !errors.Is(err, client.ErrInvalidOption) {
				if c != nil {
					_ = c.Close()
				}
				t.Fatalf("New with WithRetry(%d, %v): err %v, want ErrInvalidOption", tt.attempts, tt.backoff, err)
			}
		})
	}
}

func TestModeString(t *testing.T) {
	tests := []struct {
		mode client.Mode
		want string
	}{
		{client.Weak, "weak"},
		{client.Strong, "strong"},
		{client.Mode(9), "Mode(9)"},
	}
	for _, tt := range tests {
		if got := tt.mode.String(); got != tt.want {
			t.Errorf("Mode(%d).String() = %q, want %q", int(tt.mode), got, tt.want)
		}
	}
}

// A Client on a connection it was given makes its calls there and, when
// closed, leaves the connection to its owner.
func TestNewFromConn(t *testing.T) {
	addr, secure := single(t)
	conn, err := client.NewConn(addr, secure)
	if err != nil {
		t.Fatalf("NewConn: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx := testContext(t)
	for _, streaming := range []bool{false, true} {
		opts := []client.Option{client.WithStore("shared")}
		if streaming {
			opts = append(opts, client.WithStreaming())
		}
		c, err := client.NewFromConn(conn, opts...)
		if err != nil {
			t.Fatalf("NewFromConn: %v", err)
		}
		first, err := c.NextID(ctx, "k", client.Strong)
		if err != nil {
			t.Fatalf("NextID (streaming %v): %v", streaming, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := c.NextID(ctx, "k", client.Strong); streaming && status.Code(err) != codes.Canceled {
			t.Fatalf("streaming NextID after Close: %v, want Canceled", err)
		}
		// The connection is still the owner's and still works.
		again, err := client.NewFromConn(conn, client.WithStore("shared"))
		if err != nil {
			t.Fatal(err)
		}
		next, err := again.NextID(ctx, "k", client.Strong)
		if err != nil {
			t.Fatalf("NextID on the connection after a Client on it closed: %v", err)
		}
		if next <= first {
			t.Fatalf("NextID = %d after %d on store 'shared', want larger", next, first)
		}
	}
	if _, err := client.NewFromConn(nil); !errors.Is(err, client.ErrInvalidOption) {
		t.Fatalf("NewFromConn(nil): %v, want ErrInvalidOption", err)
	}
}
