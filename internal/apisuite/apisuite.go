// Package apisuite checks ordinal's public gRPC API against running nodes,
// whatever store keeps their counters, so the Raft and etcd deployments are
// held to one definition of correct behaviour.
package apisuite

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/runtimev1"
	"github.com/ordinal-dev/ordinal/api/server"
	"github.com/ordinal-dev/ordinal/internal/history"
)

// Target is one node the API suite sends calls to.
type Target struct {
	Name string
	Conn *grpc.ClientConn
}

// callTimeout bounds one call of the suite.
const callTimeout = 10 * time.Second

// floorApplyWithin bounds how long a node other than the one that took a
// SetFloor may keep serving WEAK IDs below the floor.
const floorApplyWithin = 3 * time.Second

// Run checks the public API of a running deployment, whatever store
// keeps its counters: it runs over a Raft cluster and over ordinal on etcd
// (native layout) alike. Every check uses its own keys, so the suite can
// run against nodes that served other calls before.
func Run(t *testing.T, nodes []Target) {
	t.Helper()
	if len(nodes) == 0 {
		t.Fatal("apisuite.Run needs at least one node")
	}
	s := &suite{nodes: nodes}
	checks := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"fresh key starts at 1", s.freshKeyStartsAtOne},
		{"STRONG increases across nodes", s.strongIncreasesAcrossNodes},
		{"WEAK unique and increasing per node", s.weakIncreasesPerNode},
		{"blocks are contiguous and disjoint", s.blocksAreContiguousAndDisjoint},
		{"high water covers every id and consumes none", s.highWater},
		{"floor", s.floor},
		{"overflow is OutOfRange and changes nothing", s.overflow},
		{"bad input is InvalidArgument", s.badInput},
		{"stores are namespaces, empty means default", s.storesAreNamespaces},
		{"Layotto Runtime GetNextId", s.layottoRuntime},
		{"concurrent calls are unique and STRONG is linearizable", s.concurrent},
	}
	for _, c := range checks {
		t.Run(c.name, c.run)
	}
}

type suite struct {
	nodes []Target
}

func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// Strong and Weak are the options of a STRONG and a WEAK call. Weak names
// WEAK explicitly (AUTO_INCREMENT_WEAK); the suite also checks that the
// zero value, AUTO_INCREMENT_UNSPECIFIED, and missing options are WEAK.
var (
	Strong = &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}
	Weak   = &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_WEAK}
)

func seq(n Target) ordinalv1.SequencerServiceClient {
	return ordinalv1.NewSequencerServiceClient(n.Conn)
}

// modeName is o's mode as the messages of the suite name it: WEAK,
// STRONG or UNSPECIFIED.
func modeName(o *ordinalv1.SequencerOptions) string {
	return strings.TrimPrefix(o.GetIncrement().String(), "AUTO_INCREMENT_")
}

// next takes count ids of key through n and returns the first.
func next(t *testing.T, n Target, key string, o *ordinalv1.SequencerOptions, count int64) int64 {
	t.Helper()
	resp, err := seq(n).GetNextIds(callCtx(t), &ordinalv1.GetNextIdsRequest{Key: key, Options: o, Count: count})
	if err != nil {
		t.Fatalf("%s: %d %s ids of %s: %v", n.Name, count, modeName(o), key, err)
	}
	if resp.Count != count {
		t.Fatalf("%s: asked for %d ids, the answer says %d", n.Name, count, resp.Count)
	}
	return resp.FirstId
}

func highWater(t *testing.T, n Target, key string) int64 {
	t.Helper()
	resp, err := seq(n).GetHighWater(callCtx(t), &ordinalv1.GetHighWaterRequest{Key: key})
	if err != nil {
		t.Fatalf("%s: high water of %s: %v", n.Name, key, err)
	}
	return resp.HighWater
}

func (s *suite) freshKeyStartsAtOne(t *testing.T) {
	for _, o := range []*ordinalv1.SequencerOptions{Weak, Strong} {
		key := "fresh-" + modeName(o)
		n := s.nodes[len(s.nodes)-1]
		for want := int64(1); want <= 3; want++ {
			if got := next(t, n, key, o, 1); got != want {
				t.Fatalf("%s call %d on a fresh key: got %d, want %d", modeName(o), want, got, want)
			}
		}
	}
}

func (s *suite) strongIncreasesAcrossNodes(t *testing.T) {
	var last int64
	for i := 0; i < 30; i++ {
		n := s.nodes[i%len(s.nodes)]
		id := next(t, n, "strong-order", Strong, 1)
		if id <= last {
			t.Fatalf("STRONG call %d via %s got %d after %d", i, n.Name, id, last)
		}
		last = id
	}
}

func (s *suite) weakIncreasesPerNode(t *testing.T) {
	seen := map[int64]string{}
	for _, n := range s.nodes {
		var last int64
		for i := 0; i < 100; i++ {
			id := next(t, n, "weak-order", Weak, 1)
			if id <= last {
				t.Fatalf("WEAK via %s got %d after %d", n.Name, id, last)
			}
			if prev, dup := seen[id]; dup {
				t.Fatalf("WEAK id %d handed out by %s and %s", id, prev, n.Name)
			}
			seen[id], last = n.Name, id
		}
	}
}

func (s *suite) blocksAreContiguousAndDisjoint(t *testing.T) {
	type block struct{ first, last int64 }
	var blocks []block
	for round := 0; round < 3; round++ {
		for _, n := range s.nodes {
			for _, o := range []*ordinalv1.SequencerOptions{Weak, Strong} {
				count := int64(1000 * (round + 1))
				first := next(t, n, "blocks", o, count)
				b := block{first, first + count - 1}
				for _, other := range blocks {
					if b.first <= other.last && other.first <= b.last {
						t.Fatalf("%s block %d..%d via %s overlaps %d..%d", modeName(o), b.first, b.last, n.Name, other.first, other.last)
					}
				}
				blocks = append(blocks, b)
			}
		}
	}
}

func (s *suite) highWater(t *testing.T) {
	const key = "high-water"
	if hw := highWater(t, s.nodes[0], key); hw != 0 {
		t.Fatalf("fresh key: high water %d, want 0", hw)
	}
	var maxID int64
	for _, n := range s.nodes {
		for _, o := range []*ordinalv1.SequencerOptions{Weak, Strong} {
			maxID = max(maxID, next(t, n, key, o, 10)+9)
		}
	}
	hw := highWater(t, s.nodes[len(s.nodes)-1], key)
	if hw < maxID {
		t.Fatalf("high water %d is below id %d that was handed out", hw, maxID)
	}
	for _, n := range s.nodes {
		if again := highWater(t, n, key); again != hw {
			t.Fatalf("high water via %s moved from %d to %d with no call taking ids", n.Name, hw, again)
		}
	}
	id := next(t, s.nodes[0], key, Strong, 1)
	if hw2 := highWater(t, s.nodes[0], key); hw2 < id {
		t.Fatalf("high water %d is below id %d handed out before it was asked", hw2, id)
	}
}

func (s *suite) floor(t *testing.T) {
	const key = "floor"
	// Every node holds a WEAK range of the key, below the floor.
	for _, n := range s.nodes {
		next(t, n, key, Weak, 1)
		next(t, n, key, Strong, 1)
	}
	const floor = 1_000_000
	by := s.nodes[len(s.nodes)-1]
	resp, err := seq(by).SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: key, Floor: floor})
	if err != nil {
		t.Fatalf("SetFloor via %s: %v", by.Name, err)
	}
	if resp.HighWater < floor {
		t.Fatalf("SetFloor returned high water %d, below the floor", resp.HighWater)
	}
	for _, n := range s.nodes {
		if id := next(t, n, key, Strong, 1); id <= floor {
			t.Fatalf("STRONG id %d via %s after SetFloor(%d) returned", id, n.Name, floor)
		}
	}
	// Other nodes drop their WEAK ranges below the floor as they learn of
	// it: well before they would have used them up at this pace.
	for _, n := range s.nodes {
		deadline := time.Now().Add(floorApplyWithin)
		for {
			id := next(t, n, key, Weak, 1)
			if id > floor {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("WEAK via %s still hands out %d, below floor %d, %v after SetFloor", n.Name, id, floor, floorApplyWithin)
			}
			time.Sleep(floorApplyWithin / 20)
		}
	}
	// A lower floor never lowers the counter.
	resp, err = seq(s.nodes[0]).SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: key, Floor: 5})
	if err != nil {
		t.Fatal(err)
	}
	if resp.HighWater <= floor {
		t.Fatalf("SetFloor(5) returned high water %d, below the earlier floor", resp.HighWater)
	}
	if id := next(t, s.nodes[0], key, Strong, 1); id <= floor {
		t.Fatalf("STRONG id %d after a lower floor", id)
	}
	if _, err := seq(s.nodes[0]).SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: key, Floor: -1}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("negative floor: %v, want InvalidArgument", err)
	}
}

func (s *suite) overflow(t *testing.T) {
	n := s.nodes[0]
	for _, o := range []*ordinalv1.SequencerOptions{Weak, Strong} {
		key := "full-" + modeName(o)
		if _, err := seq(n).SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: key, Floor: math.MaxInt64 - 3}); err != nil {
			t.Fatal(err)
		}
		_, err := seq(n).GetNextIds(callCtx(t), &ordinalv1.GetNextIdsRequest{Key: key, Count: 4, Options: o})
		if status.Code(err) != codes.OutOfRange {
			t.Fatalf("%s: 4 ids with 3 left: %v, want OutOfRange", key, err)
		}
		if hw := highWater(t, n, key); hw != math.MaxInt64-3 {
			t.Fatalf("%s: counter moved to %d on overflow", key, hw)
		}
		if first := next(t, n, key, o, 3); first != math.MaxInt64-2 {
			t.Fatalf("%s: the last 3 ids start at %d, want %d", key, first, int64(math.MaxInt64-2))
		}
		if _, err := seq(n).GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{Key: key, Options: o}); status.Code(err) != codes.OutOfRange {
			t.Fatalf("%s: past the maximum: %v, want OutOfRange", key, err)
		}
	}
}

func (s *suite) badInput(t *testing.T) {
	c := seq(s.nodes[0])
	long := func(n int) string { return strings.Repeat("k", n) }
	tests := []struct {
		name string
		req  *ordinalv1.GetNextIdsRequest
		want codes.Code
	}{
		{"empty key", &ordinalv1.GetNextIdsRequest{Count: 1}, codes.InvalidArgument},
		{"key over 1 KiB", &ordinalv1.GetNextIdsRequest{Key: long(1025), Count: 1}, codes.InvalidArgument},
		{"key of exactly 1 KiB", &ordinalv1.GetNextIdsRequest{Key: long(1024), Count: 1}, codes.OK},
		{"store over 256 bytes", &ordinalv1.GetNextIdsRequest{StoreName: long(257), Key: "k", Count: 1}, codes.InvalidArgument},
		{"store of exactly 256 bytes", &ordinalv1.GetNextIdsRequest{StoreName: long(256), Key: "k", Count: 1}, codes.OK},
		{"store with a slash", &ordinalv1.GetNextIdsRequest{StoreName: "a/b", Key: "c/d", Count: 1}, codes.OK},
		{"unknown increment", &ordinalv1.GetNextIdsRequest{Key: "k", Count: 1, Options: &ordinalv1.SequencerOptions{Increment: 7}}, codes.InvalidArgument},
		{"zero count", &ordinalv1.GetNextIdsRequest{Key: "k", Count: 0}, codes.InvalidArgument},
		{"negative count", &ordinalv1.GetNextIdsRequest{Key: "k", Count: -5}, codes.InvalidArgument},
		{"count above the maximum", &ordinalv1.GetNextIdsRequest{Key: "k", Count: server.DefaultMaxCount + 1}, codes.InvalidArgument},
		{"count at the maximum", &ordinalv1.GetNextIdsRequest{Key: "k", Count: server.DefaultMaxCount, Options: Strong}, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.GetNextIds(callCtx(t), tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
			if tc.want != codes.OK && status.Convert(err).Message() == "" {
				t.Fatal("error without a message")
			}
		})
	}
	if _, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetNextId with empty key: %v", err)
	}
	if _, err := c.GetHighWater(callCtx(t), &ordinalv1.GetHighWaterRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetHighWater with empty key: %v", err)
	}
	if _, err := c.SetFloor(callCtx(t), &ordinalv1.SetFloorRequest{Key: "k", Floor: -1}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("negative floor: %v", err)
	}
}

func (s *suite) storesAreNamespaces(t *testing.T) {
	c := seq(s.nodes[0])
	get := func(store string) int64 {
		resp, err := c.GetNextId(callCtx(t), &ordinalv1.GetNextIdRequest{StoreName: store, Key: "ns", Options: Strong})
		if err != nil {
			t.Fatal(err)
		}
		return resp.NextId
	}
	if a, b := get(""), get("default"); a != 1 || b != 2 {
		t.Fatalf(`"" and "default" should share a counter: got %d then %d`, a, b)
	}
	if got := get("other"); got != 1 {
		t.Fatalf("another store starts at %d, want 1", got)
	}
}

func (s *suite) layottoRuntime(t *testing.T) {
	for _, n := range s.nodes {
		rt := runtimev1.NewRuntimeClient(n.Conn)
		var last int64
		for i := 0; i < 5; i++ {
			resp, err := rt.GetNextId(callCtx(t), &runtimev1.GetNextIdRequest{StoreName: "sequencer_demo", Key: "runtime"})
			if err != nil {
				t.Fatalf("Runtime/GetNextId via %s: %v", n.Name, err)
			}
			if resp.NextId <= last {
				t.Fatalf("Runtime/GetNextId via %s: %d after %d", n.Name, resp.NextId, last)
			}
			last = resp.NextId
		}
	}
}

func (s *suite) concurrent(t *testing.T) {
	rec := history.NewRecorder()
	const clients, calls = 8, 40
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 7))
			for i := 0; i < calls; i++ {
				n := s.nodes[r.IntN(len(s.nodes))]
				strong := r.IntN(2) == 0
				count := int64(1 + r.IntN(3))
				key := fmt.Sprintf("concurrent-%d", r.IntN(2))
				o := Weak
				if strong {
					o = Strong
				}
				rec.Do(history.Op{Client: c, Node: n.Name, Key: key, Strong: strong}, func() (int64, int64, error) {
					ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
					defer cancel()
					resp, err := seq(n).GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{Key: key, Options: o, Count: count})
					return resp.GetFirstId(), count, err
				})
			}
		}(c)
	}
	wg.Wait()
	ops := rec.Ops()
	if got := history.Succeeded(ops); got != len(ops) {
		for _, op := range ops {
			if op.Err != nil {
				t.Fatalf("%d of %d calls failed on a healthy deployment; one: %v", len(ops)-got, len(ops), op.Err)
			}
		}
	}
	// One key at a time: history.CheckStrong's exact check compares calls
	// across keys.
	byKey := map[string][]history.Op{}
	for _, op := range ops {
		byKey[op.Key] = append(byKey[op.Key], op)
	}
	for key, ops := range byKey {
		if err := history.CheckAll(ops, ""); err != nil {
			t.Fatalf("key %s: %v", key, err)
		}
	}
}
