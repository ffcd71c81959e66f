package etcdtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
)

func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m)) }

// TestAPISuiteOverRaft runs the API suite over a single Raft node, the
// store it was first written against: the suite is store-agnostic.
func TestAPISuiteOverRaft(t *testing.T) {
	d, err := daemon.Start(daemon.Config{
		Cluster:  cluster.Config{NodeID: "n1", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true},
		GRPCAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(d.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	etcdtest.APISuite(t, []etcdtest.Target{{Name: "n1", Conn: conn}})
}

// TestAPISuiteOverEtcd runs the same suite over three ordinal nodes
// sharing one etcd.
func TestAPISuiteOverEtcd(t *testing.T) {
	e := etcdtest.Shared(t)
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 3, Store: etcdcompat.Config{}})
	var targets []etcdtest.Target
	for _, nd := range c.Nodes() {
		targets = append(targets, etcdtest.Target{Name: nd.Name, Conn: nd.Conn()})
	}
	etcdtest.APISuite(t, targets)
}
