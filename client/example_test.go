package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
)

func ExampleNew() {
	addr, stop := exampleNode() // a fresh node for the example; yours runs elsewhere
	defer stop()

	c, err := client.New(addr) // "10.0.0.1:34904", or several: see the multi-address example
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		id, err := c.NextID(ctx, "order_table", client.Strong)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(id)
	}
	// Output:
	// 1
	// 2
	// 3
}

// A Client given several nodes sends each call to one that answers:
// here, the first address has no node behind it, and the calls go to the
// second. STRONG calls go to the leader; WEAK calls take turns among the
// nodes.
func ExampleNew_multipleAddresses() {
	addr, stop := exampleNode()
	defer stop()
	down := "127.0.0.1:1" // nothing listens here

	c, err := client.New(down + "," + addr) // or a DNS name with an address per node
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Without a deadline, a call retries on the nodes for
	// client.DefaultRetryWindow (5 s), long enough for a leader failover.
	id, err := c.NextID(context.Background(), "invoice", client.Strong)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(id)
	// Output: 1
}

// A Client with every node down fails with Unavailable, naming the
// addresses it tried.
func ExampleNew_allNodesDown() {
	c, err := client.New("127.0.0.1:1,127.0.0.1:2", client.WithRetryWindow(100*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.NextID(context.Background(), "invoice", client.Strong)
	msg := status.Convert(err).Message() // "ordinal: no node could serve the call (tried 127.0.0.1:1, 127.0.0.1:2): ..."
	fmt.Println(status.Code(err), strings.HasPrefix(msg, "ordinal: "), strings.Contains(msg, "127.0.0.1:1, 127.0.0.1:2") || strings.Contains(msg, "127.0.0.1:2, 127.0.0.1:1"))
	// Output: Unavailable true true
}

func ExampleClient_Store() {
	addr, stop := exampleNode()
	defer stop()
	c, err := client.New(addr, client.WithStore("orders")) // the store c.NextID uses
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	users := c.Store("users") // another namespace of keys, on the same connections
	u, err := users.NextID(ctx, "id", client.Strong)
	if err != nil {
		log.Fatal(err)
	}
	o, err := c.NextID(ctx, "id", client.Strong) // the key "id" of the store "orders"
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(users.Name(), u)
	fmt.Println("orders", o)
	// Output:
	// users 1
	// orders 1
}

func ExampleStore_NextID() {
	addr, stop := exampleNode()
	defer stop()
	c, err := client.New(addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	// WEAK: cheap, unique, increasing per node.
	w, err := c.Store("orders").NextID(ctx, "order_table", client.Weak)
	if err != nil {
		log.Fatal(err)
	}
	// STRONG: increasing across the cluster, linearizable.
	s, err := c.Store("orders").NextID(ctx, "order_table", client.Strong)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w < s)
	// Output: true
}

func ExampleStore_NextIDs() {
	addr, stop := exampleNode()
	defer stop()
	c, err := client.New(addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// 100 contiguous IDs in one call: first..first+99 are the caller's.
	first, err := c.Store("orders").NextIDs(context.Background(), "order_table", client.Strong, 100)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(first, first+99)
	// Output: 1 100
}

// WithWeakPrefetch serves WEAK IDs from memory, taking blocks of IDs from
// the cluster in the background: millions of IDs a second from one
// Client, one call per block.
func ExampleWithWeakPrefetch() {
	addr, stop := exampleNode()
	defer stop()
	c, err := client.New(addr, client.WithWeakPrefetch(1000))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for range 3 {
		id, err := c.NextID(ctx, "click", client.Weak) // no call to a node after the first
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(id)
	}
	// Output:
	// 1
	// 2
	// 3
}

// NewConn makes a connection for the services the Client has no methods
// for, secured as the Client's would be: here, the ClusterService.
func ExampleNewConn() {
	addr, stop := exampleNode()
	defer stop()
	conn, err := client.NewConn(addr) // with client.WithTLS, client.WithTokenFile, ... as for New
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	leader, err := ordinalv1.NewClusterServiceClient(conn).Leader(context.Background(), &ordinalv1.LeaderRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(leader.GetNodeId())
	// Output: n1
}

// exampleNode starts a single development node (no security) with its
// data in a temporary directory, and returns its client address and a
// function that stops it and removes the directory.
func exampleNode() (string, func()) {
	dir, err := os.MkdirTemp("", "ordinal-example-")
	if err != nil {
		log.Fatal(err)
	}
	cfg := daemon.Config{
		Cluster:  cluster.Config{NodeID: "n1", DataDir: dir, RaftAddr: "127.0.0.1:0", Bootstrap: true, Logger: hclog.NewNullLogger()},
		GRPCAddr: "127.0.0.1:0",
		Logger:   hclog.NewNullLogger(),
	}
	cfg.Security.Auth.Open = true
	d, err := daemon.Start(cfg)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	return d.GRPCAddr(), func() {
		_ = d.Close()
		_ = os.RemoveAll(dir)
	}
}
