package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

// adminFlags are the flags every cluster command shares.
type adminFlags struct {
	conn    connFlags
	timeout time.Duration
}

func (f *adminFlags) register(fs *flag.FlagSet) {
	f.conn.registerAddr(fs, "gRPC address of any ordinal node; calls reach the leader through it")
	f.conn.Register(fs)
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the cluster")
}

// dial returns a connection to the node and a context bounded by timeout.
// Its errors name the command.
func (f *adminFlags) dial() (*grpc.ClientConn, context.Context, context.CancelFunc, error) {
	conn, err := f.conn.dial()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	return conn, ctx, func() { cancel(); conn.Close() }, nil
}

func runMembers(args []string) error {
	var f adminFlags
	fs := cli.NewFlagSet("members", "ordinal members [--addr HOST:PORT]")
	f.register(fs)
	if err := cli.NoArgs("members", fs, args); err != nil {
		return err
	}
	conn, ctx, done, err := f.dial()
	if err != nil {
		return err
	}
	defer done()
	resp, err := ordinalv1.NewClusterServiceClient(conn).Members(ctx, &ordinalv1.MembersRequest{})
	if err != nil {
		return f.conn.rpcError(err)
	}
	printMembers(resp)
	return nil
}

func printMembers(resp *ordinalv1.MembersResponse) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tRAFT ADDRESS\tGRPC ADDRESS\tSUFFRAGE\tLEADER\tBEHIND")
	for _, m := range resp.GetMembers() {
		// "-" keeps every column filled, so scripts can split rows on
		// white space: a node that just joined has no gRPC address yet.
		suffrage, leader, behind := "non-voter", "-", "unreachable"
		if m.GetVoter() {
			suffrage = "voter"
		}
		if m.GetLeader() {
			leader = "*"
		}
		if m.GetReachable() {
			behind = fmt.Sprintf("%d entries", m.GetLag())
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.GetNodeId(), orDash(m.GetRaftAddr()), orDash(m.GetGrpcAddr()), suffrage, leader, behind)
	}
	w.Flush()
	fmt.Printf("cluster %s, commit index %d\n", resp.GetClusterId(), resp.GetCommitIndex())
}

func runRemove(args []string) error {
	var f adminFlags
	fs := cli.NewFlagSet("remove", "ordinal remove [--addr HOST:PORT] NODE_ID")
	f.register(fs)
	positional, err := cli.ParseCommandFlags("remove", fs, args)
	if err != nil {
		return err
	}
	if len(positional) != 1 {
		return cli.UsageErrorf("remove: expected one NODE_ID, got %d arguments", len(positional))
	}
	conn, ctx, done, err := f.dial()
	if err != nil {
		return err
	}
	defer done()
	if _, err := ordinalv1.NewClusterServiceClient(conn).Remove(ctx, &ordinalv1.RemoveRequest{NodeId: positional[0]}); err != nil {
		return f.conn.rpcError(err)
	}
	fmt.Printf("removed %s\n", positional[0])
	return nil
}

func runLeader(args []string) error {
	if len(args) > 0 && args[0] == "transfer" {
		return runLeaderTransfer(args[1:])
	}
	var f adminFlags
	fs := cli.NewFlagSet("leader", "ordinal leader [--addr HOST:PORT]\n       ordinal leader transfer [--addr HOST:PORT] [NODE_ID]")
	f.register(fs)
	if err := cli.NoArgs("leader", fs, args); err != nil {
		return err
	}
	conn, ctx, done, err := f.dial()
	if err != nil {
		return err
	}
	defer done()
	resp, err := ordinalv1.NewClusterServiceClient(conn).Leader(ctx, &ordinalv1.LeaderRequest{})
	if err != nil {
		return f.conn.rpcError(err)
	}
	fmt.Printf("%s raft=%s grpc=%s term=%d\n", resp.GetNodeId(), resp.GetRaftAddr(), resp.GetGrpcAddr(), resp.GetTerm())
	return nil
}

func runLeaderTransfer(args []string) error {
	var f adminFlags
	fs := cli.NewFlagSet("leader transfer", "ordinal leader transfer [--addr HOST:PORT] [NODE_ID]")
	f.register(fs)
	positional, err := cli.ParseCommandFlags("leader transfer", fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 1 {
		return cli.UsageErrorf("leader transfer: expected at most one NODE_ID, got %d arguments", len(positional))
	}
	target := ""
	if len(positional) == 1 {
		target = positional[0]
	}
	conn, ctx, done, err := f.dial()
	if err != nil {
		return err
	}
	defer done()
	resp, err := ordinalv1.NewClusterServiceClient(conn).TransferLeadership(ctx, &ordinalv1.TransferLeadershipRequest{NodeId: target})
	if err != nil {
		return f.conn.rpcError(err)
	}
	fmt.Printf("leader is now %s\n", resp.GetNodeId())
	return nil
}

// grpcAddrEnv is the variable of serve's --grpc-addr, which health dials
// when it is given no address of its own.
var grpcAddrEnv = cli.EnvPrefix + "GRPC_ADDR"

const healthUsage = `ordinal health [--addr HOST:PORT]

Exits 0 when the node serves calls (gRPC health SERVING). Without --addr
(or ORDINAL_ADDR) but with ORDINAL_GRPC_ADDR set, the variable serve takes
its client address from, it asks that address, dialling a wildcard host
(0.0.0.0, ::) on loopback: a container's healthcheck follows the port its
node serves on.`

// runHealth exits 0 when the node serves calls: container healthchecks use
// it, so images need no other tool.
func runHealth(args []string) error {
	var f adminFlags
	fs := cli.NewFlagSet("health", healthUsage)
	f.register(fs)
	if err := cli.NoArgs("health", fs, args); err != nil {
		return err
	}
	if v := os.Getenv(grpcAddrEnv); v != "" && !cli.ExplicitlySet(fs, "addr") {
		addr, err := loopbackDialAddr(v)
		if err != nil {
			return cli.UsageErrorf("health: %s=%q: %v", grpcAddrEnv, v, err)
		}
		f.conn.addr = addr
	}
	conn, ctx, done, err := f.dial()
	if err != nil {
		return err
	}
	defer done()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return f.conn.rpcError(err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health: node at %s is %s", f.conn.addr, resp.GetStatus())
	}
	fmt.Println("SERVING")
	return nil
}

// loopbackDialAddr returns the address at which this host reaches a
// listener on addr: a wildcard or empty host becomes loopback, of the same
// IP version.
func loopbackDialAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
