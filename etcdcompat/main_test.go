package etcdcompat_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/apisuite"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
	"github.com/ordinal-dev/ordinal/internal/history"
)

// Every test of the package shares one etcd (Debian's etcd-server binary),
// each under its own key prefix.
func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m)) }

var (
	strongOpts = apisuite.Strong
	weakOpts   = apisuite.Weak
)

// call takes count ids of key through nd, recording the call in rec.
func call(rec *history.Recorder, client int, nd *etcdtest.Node, key string, strong bool, count int64, timeout time.Duration) history.Op {
	o := weakOpts
	if strong {
		o = strongOpts
	}
	return rec.Do(history.Op{Client: client, Node: nd.Name, Key: key, Strong: strong}, func() (int64, int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		resp, err := nd.Sequencer().GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{Key: key, Options: o, Count: count})
		return resp.GetFirstId(), count, err
	})
}

// mustCall is call that fails the test when the call fails.
func mustCall(t *testing.T, rec *history.Recorder, client int, nd *etcdtest.Node, key string, strong bool) int64 {
	t.Helper()
	op := call(rec, client, nd, key, strong, 1, 10*time.Second)
	if op.Err != nil {
		t.Fatalf("%s via %s: %v", mode(strong), nd.Name, op.Err)
	}
	return op.First
}

// retryCall repeats a call until it succeeds or timeout passes.
func retryCall(t *testing.T, rec *history.Recorder, client int, nd *etcdtest.Node, key string, strong bool, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		op := call(rec, client, nd, key, strong, 1, 2*time.Second)
		if op.Err == nil {
			return op.First
		}
		if status.Code(op.Err) != codes.Unavailable && status.Code(op.Err) != codes.DeadlineExceeded {
			t.Fatalf("%s via %s: %v", mode(strong), nd.Name, op.Err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s via %s still failing after %v: %v", mode(strong), nd.Name, timeout, op.Err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mode(strong bool) string {
	if strong {
		return "STRONG"
	}
	return "WEAK"
}

// checkHistory runs every history check, one key at a time (the exact
// STRONG check of history.CheckStrong compares calls across keys).
func checkHistory(t *testing.T, ops []history.Op) {
	t.Helper()
	byKey := map[string][]history.Op{}
	for _, op := range ops {
		byKey[op.Key] = append(byKey[op.Key], op)
	}
	for key, kops := range byKey {
		if err := history.CheckAll(kops, ""); err != nil {
			t.Errorf("key %s (%d calls, %d succeeded): %v", key, len(kops), history.Succeeded(kops), err)
		}
	}
}

// wantUnavailableNamingEtcd fails unless err is Unavailable and its
// message names etcd, so that an operator knows where to look.
func unavailableNamingEtcd(err error) bool {
	return status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), "etcd")
}
