package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/internal/history"
)

// Many goroutines share one streaming client: their calls are coalesced
// into batches, and the record must still be unique and linearizable.
func TestStreamingCoalescesAndStaysLinearizable(t *testing.T) {
	addr, secure := single(t)
	c, err := client.New(addr, secure, client.WithStreaming())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rec := history.NewRecorder()
	const callers, perCaller = 64, 100
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(client_ int) {
			defer wg.Done()
			for j := 0; j < perCaller; j++ {
				mode, count := client.Strong, int64(1)
				if j%10 == 9 {
					count = 7
				}
				op := rec.Do(history.Op{Client: client_, Node: "n1", Key: "k", Strong: true}, func() (int64, int64, error) {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					first, err := c.NextIDs(ctx, "k", mode, count)
					return first, count, err
				})
				if op.Err != nil {
					t.Error(op.Err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	ops := rec.Ops()
	if got := history.Succeeded(ops); got != callers*perCaller {
		t.Fatalf("%d calls succeeded, want %d", got, callers*perCaller)
	}
	if err := history.CheckAll(ops, ""); err != nil {
		t.Fatal(err)
	}
}

func TestStreamingReportsErrorsPerCall(t *testing.T) {
	addr, secure := single(t)
	c, err := client.New(addr, secure, client.WithStreaming())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.NextID(ctx, "", client.Strong); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty key over the stream: %v, want InvalidArgument", err)
	}
	// The stream survives a failed request.
	for want := int64(1); want <= 3; want++ {
		id, err := c.NextID(ctx, "after-error", client.Weak)
		if err != nil || id != want {
			t.Fatalf("after an error: %d, %v; want %d", id, err, want)
		}
	}
}
