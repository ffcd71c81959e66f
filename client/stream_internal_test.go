package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/cputime"
	"github.com/ordinal-dev/ordinal/internal/history"
)

// These tests drive the streamer against fakeServer, an in-process stand-in
// for a node's NextIdStream, so that they control exactly when each request
// is answered and see every request the streamer sends.

// fakeServer implements NextIdStream only. In auto mode it answers every
// request at once, allocating the block from one counter when the request
// is sent, as a node allocates it after receiving the request. Otherwise
// it hands each request to the test (next) and answers when told (answer).
type fakeServer struct {
	ordinalv1.SequencerServiceClient // nil: only NextIdStream is used

	auto  bool
	delay time.Duration // auto mode: answer this long after the request
	last  atomic.Int64

	mu      sync.Mutex
	streams []*fakeStream
	sent    chan sentReq // manual mode: every request, in the order sent
}

type sentReq struct {
	req    *ordinalv1.NextIdStreamRequest
	stream *fakeStream
}

type fakeStream struct {
	grpc.ClientStream // nil: only Send and Recv are used

	srv    *fakeServer
	ctx    context.Context
	out    chan *ordinalv1.NextIdStreamResponse
	broken chan struct{} // closed by breakWith
	err    error         // Recv's error once broken
}

func newFakeServer(auto bool) *fakeServer {
	return &fakeServer{auto: auto, sent: make(chan sentReq, 1024)}
}

func (f *fakeServer) NextIdStream(ctx context.Context, _ ...grpc.CallOption) (grpc.BidiStreamingClient[ordinalv1.NextIdStreamRequest, ordinalv1.NextIdStreamResponse], error) {
	st := &fakeStream{srv: f, ctx: ctx, out: make(chan *ordinalv1.NextIdStreamResponse, 1<<14), broken: make(chan struct{})}
	f.mu.Lock()
	f.streams = append(f.streams, st)
	f.mu.Unlock()
	return st, nil
}

func (f *fakeServer) openStreams() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.streams)
}

func (st *fakeStream) Send(req *ordinalv1.NextIdStreamRequest) error {
	if st.ctx.Err() != nil {
		return status.FromContextError(st.ctx.Err()).Err()
	}
	if !st.srv.auto {
		st.srv.sent <- sentReq{req: req, stream: st}
		return nil
	}
	resp := &ordinalv1.NextIdStreamResponse{Seq: req.GetSeq(), Count: req.GetCount()}
	if req.GetKey() == "" {
		resp.Code, resp.Message = int32(codes.InvalidArgument), "key is empty"
	} else {
		resp.FirstId = st.srv.last.Add(req.GetCount()) - req.GetCount() + 1
	}
	if st.srv.delay == 0 {
		st.out <- resp
		return nil
	}
	due := time.Now().Add(st.srv.delay)
	go func() {
		time.Sleep(time.Until(due))
		st.out <- resp
	}()
	return nil
}

func (st *fakeStream) Recv() (*ordinalv1.NextIdStreamResponse, error) {
	select {
	case resp := <-st.out:
		return resp, nil
	case <-st.broken:
		return nil, st.err
	case <-st.ctx.Done():
		return nil, status.FromContextError(st.ctx.Err()).Err()
	}
}

// breakWith makes the stream's Recv fail with err, as a dropped connection
// does.
func (st *fakeStream) breakWith(err error) {
	st.err = err
	close(st.broken)
}

const internalTestTimeout = 10 * time.Second

// next returns the next request the streamer sent, failing the test if none
// comes.
func (f *fakeServer) next(t *testing.T) sentReq {
	t.Helper()
	select {
	case r := <-f.sent:
		return r
	case <-time.After(internalTestTimeout):
		t.Fatal("no request was sent")
		return sentReq{}
	}
}

// noneSent fails the test if a request was sent and not taken by next.
func (f *fakeServer) noneSent(t *testing.T) {
	t.Helper()
	select {
	case r := <-f.sent:
		t.Fatalf("request %+v was sent; want none now", r.req)
	default:
	}
}

// answer answers r with the block starting at first.
func (r sentReq) answer(first int64) {
	r.stream.out <- &ordinalv1.NextIdStreamResponse{Seq: r.req.GetSeq(), FirstId: first, Count: r.req.GetCount()}
}

type callResult struct {
	id  int64
	err error
}

// start runs one nextIDs call in a goroutine; its result arrives on the
// returned channel.
func start(ctx context.Context, s *streamer, k batchKey, count int64) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		id, err := s.nextIDs(ctx, k, count)
		ch <- callResult{id, err}
	}()
	return ch
}

func await(t *testing.T, ch <-chan callResult) callResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(internalTestTimeout):
		t.Fatal("the call did not return")
		return callResult{}
	}
}

func wantID(t *testing.T, ch <-chan callResult, want int64) {
	t.Helper()
	if r := await(t, ch); r.err != nil || r.id != want {
		t.Fatalf("call returned %d, %v; want %d", r.id, r.err, want)
	}
}

// queued is how many IDs the callers of k waiting for an unsent batch
// asked for.
func (s *streamer) queued(k batchKey) int64 {
	b := s.batcher(k)
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for _, bt := range b.queue {
		n += bt.count
	}
	return n
}

// waitQueued waits until the callers of k waiting for an unsent batch
// asked for want IDs in all: the calls started have joined. It polls a
// condition, not a clock.
func waitQueued(t *testing.T, s *streamer, k batchKey, want int64) {
	t.Helper()
	deadline := time.Now().Add(internalTestTimeout)
	for s.queued(k) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d IDs queued, want %d", s.queued(k), want)
		}
		runtime.Gosched()
	}
}

// startQueued starts a call on k that must join the batch waiting to be
// sent, and waits until it has joined.
func startQueued(ctx context.Context, t *testing.T, s *streamer, k batchKey, count int64) <-chan callResult {
	t.Helper()
	before := s.queued(k)
	ch := start(ctx, s, k, count)
	waitQueued(t, s, k, before+count)
	return ch
}

// fillInFlight starts two one-ID calls on k and takes their requests: with
// two batches in flight, later callers of k wait in a batch of their own.
func fillInFlight(ctx context.Context, t *testing.T, s *streamer, srv *fakeServer, k batchKey) (x, y <-chan callResult, r1, r2 sentReq) {
	t.Helper()
	x = start(ctx, s, k, 1)
	r1 = srv.next(t)
	y = start(ctx, s, k, 1)
	r2 = srv.next(t)
	return x, y, r1, r2
}

// newTestStreamer returns a streamer over a new fakeServer, closed when the
// test ends.
func newTestStreamer(t *testing.T, auto bool) (*streamer, *fakeServer) {
	t.Helper()
	srv := newFakeServer(auto)
	s := newStreamer(srv)
	t.Cleanup(s.close)
	return s, srv
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), internalTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

var strongKey = batchKey{key: "k", mode: Strong}

// A caller joins only a batch that has not been sent, and the callers of a
// batch share its block in the order they arrived.
func TestStreamerBatchesInArrivalOrder(t *testing.T) {
	ctx := testCtx(t)
	s, srv := newTestStreamer(t, false)
	k := strongKey

	a := start(ctx, s, k, 1)
	r1 := srv.next(t)
	// b starts after a's request was sent: it must not be part of it.
	b := start(ctx, s, k, 2)
	r2 := srv.next(t)
	if r1.req.GetCount() != 1 || r2.req.GetCount() != 2 || r2.req.GetSeq() == r1.req.GetSeq() {
		t.Fatalf("requests %+v, %+v; want counts 1 and 2 with distinct seqs", r1.req, r2.req)
	}
	if r1.req.GetKey() != "k" || r1.req.GetOptions().GetIncrement() != ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG {
		t.Fatalf("request %+v; want key k, STRONG", r1.req)
	}

	// Two batches are in flight: the next callers wait, in one batch.
	c := startQueued(ctx, t, s, k, 1)
	d := startQueued(ctx, t, s, k, 7)
	e := startQueued(ctx, t, s, k, 2)
	srv.noneSent(t)

	// Answers may come in any order; one answer lets the waiting batch go.
	r2.answer(50)
	wantID(t, b, 50)
	r3 := srv.next(t)
	if r3.req.GetCount() != 10 {
		t.Fatalf("third request asks for %d IDs; want 10 (1+7+2)", r3.req.GetCount())
	}
	if s.queued(k) != 0 {
		t.Fatalf("%d IDs still queued after the batch was sent", s.queued(k))
	}
	r3.answer(100)
	wantID(t, c, 100)
	wantID(t, d, 101)
	wantID(t, e, 108)
	r1.answer(10)
	wantID(t, a, 10)
	if n := srv.openStreams(); n != 1 {
		t.Fatalf("%d streams opened; want 1", n)
	}
}

// Keys and modes are batched apart, each with its own in-flight limit.
func TestStreamerBatchesPerKeyAndMode(t *testing.T) {
	ctx := testCtx(t)
	s, srv := newTestStreamer(t, false)
	keys := []batchKey{{key: "x", mode: Strong}, {key: "x", mode: Weak}, {store: "other", key: "x", mode: Strong}}
	var calls []<-chan callResult
	var reqs []sentReq
	for _, k := range keys {
		for range maxBatchesInFlight {
			calls = append(calls, start(ctx, s, k, 1))
			reqs = append(reqs, srv.next(t))
		}
	}
	srv.noneSent(t)
	for i, r := range reqs {
		k := keys[i/maxBatchesInFlight]
		if r.req.GetStoreName() != k.store || r.req.GetKey() != k.key || r.req.GetOptions().GetIncrement() != k.mode.increment() {
			t.Fatalf("request %d is %+v; want %+v", i, r.req, k)
		}
		r.answer(int64(1000 * (i + 1)))
	}
	for i, c := range calls {
		wantID(t, c, int64(1000*(i+1)))
	}
}

// A caller whose context ends returns at once; its share of the batch is
// skipped, and the others get theirs.
func TestStreamerCancelledCaller(t *testing.T) {
	ctx := testCtx(t)
	s, srv := newTestStreamer(t, false)
	k := strongKey
	x, y, r1, r2 := fillInFlight(ctx, t, s, srv, k)

	cctx, cancel := context.WithCancel(ctx)
	a := startQueued(cctx, t, s, k, 3)
	b := startQueued(ctx, t, s, k, 1)
	cancel()
	if r := await(t, a); status.Code(r.err) != codes.Canceled {
		t.Fatalf("cancelled call returned %d, %v; want Canceled", r.id, r.err)
	}
	r1.answer(1)
	r3 := srv.next(t)
	if r3.req.GetCount() != 4 {
		t.Fatalf("batch asks for %d IDs; want 4: a cancelled caller's share stays in its batch", r3.req.GetCount())
	}
	r3.answer(200)
	wantID(t, b, 203)
	r2.answer(2)
	wantID(t, x, 1)
	wantID(t, y, 2)
}

// A batch answered with an error fails all its callers, and only them.
func TestStreamerErrorAnswer(t *testing.T) {
	ctx := testCtx(t)
	s, srv := newTestStreamer(t, false)
	k := strongKey
	x, y, r1, r2 := fillInFlight(ctx, t, s, srv, k)
	a := startQueued(ctx, t, s, k, 1)
	b := startQueued(ctx, t, s, k, 1)
	r1.stream.out <- &ordinalv1.NextIdStreamResponse{Seq: r1.req.GetSeq(), Code: int32(codes.OutOfRange), Message: "exhausted"}
	if r := await(t, x); status.Code(r.err) != codes.OutOfRange {
		t.Fatalf("call of the failed batch: %d, %v; want OutOfRange", r.id, r.err)
	}
	r3 := srv.next(t)
	r3.answer(7)
	wantID(t, a, 7)
	wantID(t, b, 8)
	r2.answer(5)
	wantID(t, y, 5)
}

// When the stream breaks, the batches in flight fail with Unavailable (so
// that callers retry), and the waiting batch goes out on a new stream.
func TestStreamerStreamBreaks(t *testing.T) {
	ctx := testCtx(t)
	s, srv := newTestStreamer(t, false)
	k := strongKey
	x, y, r1, _ := fillInFlight(ctx, t, s, srv, k)
	a := startQueued(ctx, t, s, k, 2)

	r1.stream.breakWith(errors.New("connection reset"))
	for _, c := range []<-chan callResult{x, y} {
		if r := await(t, c); status.Code(r.err) != codes.Unavailable {
			t.Fatalf("call in flight on a broken stream: %d, %v; want Unavailable", r.id, r.err)
		}
	}
	r3 := srv.next(t)
	if r3.stream == r1.stream || r3.req.GetCount() != 2 {
		t.Fatalf("waiting batch sent on the broken stream or with count %d; want a new stream, count 2", r3.req.GetCount())
	}
	r3.answer(30)
	wantID(t, a, 30)
	if n := srv.openStreams(); n != 2 {
		t.Fatalf("%d streams opened; want 2", n)
	}
}

// Close fails the calls in flight and waiting, and every later call.
func TestStreamerClose(t *testing.T) {
	ctx := testCtx(t)
	srv := newFakeServer(false)
	s := newStreamer(srv)
	k := strongKey
	x, y, _, _ := fillInFlight(ctx, t, s, srv, k)
	a := startQueued(ctx, t, s, k, 1)
	s.close()
	for _, c := range []<-chan callResult{x, y, a} {
		if r := await(t, c); status.Code(r.err) != codes.Canceled {
			t.Fatalf("call when the client closed: %d, %v; want Canceled", r.id, r.err)
		}
	}
	if _, err := s.nextIDs(ctx, k, 1); status.Code(err) != codes.Canceled {
		t.Fatalf("call after close: %v; want Canceled", err)
	}
}

func TestStreamerRejectsCount(t *testing.T) {
	s := newStreamer(newFakeServer(true))
	defer s.close()
	for _, n := range []int64{0, -1, maxBatchCount + 1} {
		if _, err := s.nextIDs(testCtx(t), strongKey, n); status.Code(err) != codes.InvalidArgument {
			t.Errorf("count %d: %v; want InvalidArgument", n, err)
		}
	}
}

// Many callers of a few keys, the server allocating when it receives each
// request: every call's IDs are unique and the history linearizable.
func TestStreamerLinearizableUnderLoad(t *testing.T) {
	s, _ := newTestStreamer(t, true)
	ctx := testCtx(t)
	rec := history.NewRecorder()
	const callers, perCaller = 64, 150
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for j := range perCaller {
				count := int64(1 + j%3)
				key := fmt.Sprintf("k%d", j%2)
				op := rec.Do(history.Op{Client: i, Node: "n1", Key: key, Strong: true}, func() (int64, int64, error) {
					first, err := s.nextIDs(ctx, batchKey{key: key, mode: Strong}, count)
					return first, count, err
				})
				if op.Err != nil {
					t.Error(op.Err)
					return
				}
			}
		})
	}
	wg.Wait()
	ops := rec.Ops()
	if got := history.Succeeded(ops); got != callers*perCaller {
		t.Fatalf("%d calls succeeded, want %d", got, callers*perCaller)
	}
	// Porcupine cannot search this many overlapping calls; past its short
	// budget the exact O(n log n) check of CheckStrong decides.
	if err := errors.Join(history.CheckUnique(ops), history.CheckStrong(ops, 100*time.Millisecond, "")); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkStreamer measures the coalescer alone: G goroutines taking one
// ID each per call through one streamer over an in-process stream that
// answers each request 50µs after it was sent, about a loopback round
// trip. ns/op is wall time per call; cpu-ns/op is the process's CPU time
// per call, the fake server's included.
func BenchmarkStreamer(b *testing.B) {
	for _, g := range []int{512, 4096} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			srv := newFakeServer(true)
			srv.delay = 50 * time.Microsecond
			s := newStreamer(srv)
			defer s.close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cputime.Self()
			var wg sync.WaitGroup
			for range g {
				wg.Go(func() {
					ctx, cancel := context.WithCancel(ctx)
					defer cancel()
					for left.Add(-1) >= 0 {
						if _, err := s.nextIDs(ctx, strongKey, 1); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if cpu := cputime.Self() - cpu; cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
		})
	}
}

// A client used for ever more keys keeps memory bounded: batchers of idle
// keys are dropped once there are many; a key with a batch in flight keeps
// its batcher.
func TestStreamerDropsIdleBatchers(t *testing.T) {
	ctx := testCtx(t)
	s, srv := newTestStreamer(t, false)
	busy := batchKey{key: "busy", mode: Strong}
	pending := start(ctx, s, busy, 1)
	busyReq := srv.next(t)
	for i := range 3 * sweepBatchersAt {
		c := start(ctx, s, batchKey{key: fmt.Sprintf("k%d", i), mode: Strong}, 1)
		srv.next(t).answer(int64(i + 1))
		wantID(t, c, int64(i+1))
	}
	s.bmu.Lock()
	n := len(s.batchers)
	_, kept := s.batchers[busy]
	s.bmu.Unlock()
	if n > sweepBatchersAt {
		t.Fatalf("%d batchers kept after %d keys were each used once; want at most %d", n, 3*sweepBatchersAt, sweepBatchersAt)
	}
	if !kept {
		t.Fatal("the batcher of a key with a batch in flight was dropped")
	}
	busyReq.answer(7)
	wantID(t, pending, 7)
}
