package transport

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// checkAs makes one health call from node aID on conn and returns its
// error; it succeeds only if the server saw the call come from aID.
func checkAs(conn *grpc.ClientConn, aID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: aID})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return errors.New("the server did not see the call come from " + aID)
	}
	return nil
}

// The pool hands out one connection per node and address, made with the
// peer handshake (so it still refuses the wrong node), and closes them
// with the port.
func TestPeerConnPool(t *testing.T) {
	a, b := listenPeer(t, "a", peerOpts{}), listenPeer(t, "b", peerOpts{})
	addr := b.Addr().String()

	c1, err := a.Conn("b", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkAs(c1, "a"); err != nil {
		t.Fatalf("pooled call to b: %v", err)
	}
	c2, err := a.Conn("b", addr)
	if err != nil {
		t.Fatal(err)
	}
	if c1 != c2 {
		t.Fatal("a second Conn for the same node and address made a new connection")
	}
	anyConn, err := a.Conn("", addr)
	if err != nil {
		t.Fatal(err)
	}
	if anyConn == c1 {
		t.Fatal("a connection to any member shares the one bound to node b")
	}
	if err := checkAs(anyConn, "a"); err != nil {
		t.Fatalf("pooled call to any member: %v", err)
	}
	wrong, err := a.Conn("leader", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkAs(wrong, "a"); err == nil {
		t.Fatal("a pooled connection for node 'leader' was answered by b")
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := checkAs(c1, "a"); err == nil {
		t.Fatal("a pooled connection still works after the port closed")
	}
	if _, err := a.Conn("b", addr); !errors.Is(err, ErrClosed) {
		t.Fatalf("Conn after Close: %v, want ErrClosed", err)
	}
}
