package main

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

func TestLoopbackDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:34904":      "127.0.0.1:34904",
		":34904":             "127.0.0.1:34904",
		"[::]:5000":          "[::1]:5000",
		"127.0.0.1:34904":    "127.0.0.1:34904",
		"10.0.0.5:34904":     "10.0.0.5:34904",
		"node1:34904":        "node1:34904",
		"[fd00::1]:34904":    "[fd00::1]:34904",
		"localhost:34904":    "localhost:34904",
		"0.0.0.0:0":          "127.0.0.1:0",
		"[::ffff:0.0.0.0]:1": "127.0.0.1:1",
	} {
		got, err := loopbackDialAddr(in)
		if err != nil || got != want {
			t.Errorf("loopbackDialAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"34904", "node1", ""} {
		if got, err := loopbackDialAddr(bad); err == nil {
			t.Errorf("loopbackDialAddr(%q) = %q, want an error", bad, got)
		}
	}
}

// healthServer serves gRPC health on a free loopback port and returns its
// port and the server, to set its status.
func healthServer(t *testing.T) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	return port, hs
}

// ordinal health without --addr asks the node whose client port
// ORDINAL_GRPC_ADDR names, as serve reads it, a wildcard host on loopback:
// the image's HEALTHCHECK follows the port its node serves on. --addr and
// ORDINAL_ADDR take precedence.
func TestHealthFollowsGRPCAddr(t *testing.T) {
	clearOrdinalEnv(t)
	port, hs := healthServer(t)
	unused := testutil.FreeAddr(t)

	t.Setenv(grpcAddrEnv, "0.0.0.0:"+port)
	if err := run([]string{"health", "--timeout", "5s"}); err != nil {
		t.Fatalf("health with %s=0.0.0.0:%s: %v", grpcAddrEnv, port, err)
	}
	t.Setenv(grpcAddrEnv, ":"+port)
	if err := run([]string{"health", "--timeout", "5s"}); err != nil {
		t.Fatalf("health with %s=:%s: %v", grpcAddrEnv, port, err)
	}

	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	err := run([]string{"health", "--timeout", "5s"})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+port) || !strings.Contains(err.Error(), "NOT_SERVING") {
		t.Fatalf("health of a node NOT_SERVING at 127.0.0.1:%s: %v, want an error naming both", port, err)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	// An address of health's own wins over serve's.
	if err := run([]string{"health", "--timeout", "1s", "--addr", unused}); err == nil {
		t.Fatalf("health --addr %s (nothing there) succeeded: it asked %s=%s instead", unused, grpcAddrEnv, os.Getenv(grpcAddrEnv))
	}
	t.Setenv("ORDINAL_ADDR", unused)
	if err := run([]string{"health", "--timeout", "1s"}); err == nil {
		t.Fatalf("health with ORDINAL_ADDR=%s (nothing there) succeeded: it asked %s=%s instead", unused, grpcAddrEnv, os.Getenv(grpcAddrEnv))
	}
	if err := os.Unsetenv("ORDINAL_ADDR"); err != nil {
		t.Fatal(err)
	}

	t.Setenv(grpcAddrEnv, "no-port")
	var usage *cli.UsageError
	if err := run([]string{"health"}); !errors.As(err, &usage) || !strings.Contains(err.Error(), grpcAddrEnv) {
		t.Fatalf("health with %s=no-port: %v, want a usage error naming the variable", grpcAddrEnv, err)
	}
}
