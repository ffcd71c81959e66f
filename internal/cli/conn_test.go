package cli_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
)

// The client commands hand --addr to client.New or client.NewConn with
// the options of their ConnFlags: given every node of a secured cluster,
// both keep working when the node they used stops.
func TestConnFlagsWithSeveralAddresses(t *testing.T) {
	c := testcluster.New(t, 3)
	cert, key := c.PKI().Client(testcluster.AdminName)
	f := cli.ConnFlags{Cmd: "test", CAFile: c.PKI().ServerCAFile, CertFile: cert, KeyFile: key}
	opts, err := f.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	var list []string
	leader := c.Leader()
	list = append(list, leader.GRPCAddr) // first, so that NewConn uses it first
	for _, nd := range c.Followers(leader) {
		list = append(list, nd.GRPCAddr)
	}
	addr := strings.Join(list, ",")

	ids, err := client.New(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer ids.Close()
	conn, err := client.NewConn(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := ordinalv1.NewClusterServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := func(when string) {
		t.Helper()
		if _, err := ids.NextID(ctx, "k", client.Strong); err != nil {
			t.Fatalf("NextID %s: %v", when, err)
		}
		// An admin command (ordinal members) makes one call, which
		// NewConn's connection sends to the first node that answers.
		m, err := admin.Members(ctx, &ordinalv1.MembersRequest{})
		if err != nil {
			t.Fatalf("Members %s: %v", when, err)
		}
		if len(m.GetMembers()) != 3 {
			t.Fatalf("Members %s: %d members, want 3", when, len(m.GetMembers()))
		}
	}
	check("with every node up")
	leader.Stop()
	// Members needs a leader: the first calls after the stop may find
	// none yet; the Client retries by itself, Members is retried here.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := admin.Members(ctx, &ordinalv1.MembersRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Members after %s stopped: %v", leader.ID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	check("after the first node in --addr, the leader, stopped")
}
