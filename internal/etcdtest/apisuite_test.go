package etcdtest_test

import (
	"os"
	"testing"

	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/apisuite"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
)

func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m)) }

// TestAPISuiteOverEtcd runs the API suite (internal/apisuite), which the
// Raft store passes too, over three ordinal nodes sharing one etcd.
func TestAPISuiteOverEtcd(t *testing.T) {
	e := etcdtest.Shared(t)
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 3, Store: etcdcompat.Config{}})
	var targets []apisuite.Target
	for _, nd := range c.Nodes() {
		targets = append(targets, apisuite.Target{Name: nd.Name, Conn: nd.Conn()})
	}
	apisuite.Run(t, targets)
}
