package proccluster

import (
	"net"
	"strings"
	"testing"
)

// A node whose port is taken when it starts makes Start try again on new
// ports, instead of failing the test that wanted a cluster.
func TestStartRetriesOnPortInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	calls := 0
	orig := freeAddr
	freeAddr = func(t testing.TB) string {
		calls++
		if calls == 1 { // the first node's gRPC address of the first attempt
			return held.Addr().String()
		}
		return orig(t)
	}
	defer func() { freeAddr = orig }()

	c := Start(t, 1)
	nd := c.Nodes[0]
	if nd.GRPCAddr == held.Addr().String() {
		t.Fatalf("the node kept the taken address %s", nd.GRPCAddr)
	}
	if calls <= 3 {
		t.Fatalf("%d addresses picked: Start did not try again", calls)
	}
	if !strings.Contains(nd.Dir, "try2") {
		t.Fatalf("data directory %s: not the second attempt's", nd.Dir)
	}
}
