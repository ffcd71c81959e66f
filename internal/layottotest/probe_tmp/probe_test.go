package probe

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
)

type sb struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *sb) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }

func TestProbe(t *testing.T) {
	for i := 0; i < 40; i++ {
		buf := &sb{}
		lg := hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Debug})
		d, err := daemon.Start(daemon.Config{GRPCAddr: "127.0.0.1:0", Logger: lg,
			Cluster: cluster.Config{NodeID: "n1", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true}})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err = d.WaitReady(ctx)
		cancel()
		el := time.Since(start)
		if err != nil || el > 3*time.Second {
			t.Logf("iteration %d: %v after %v\n%s", i, err, el, buf.b.String())
		}
		d.Close()
	}
}
