package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
)

// maxBatchesInFlight is how many batches of one key and mode may travel at
// once. One would make a batch wait for the previous answer; a few keep the
// stream busy while batches still grow with the load. It bounds batching,
// not correctness: any number of batches in flight would stay linearizable
// (see streamer).
const maxBatchesInFlight = 2

// maxBatchCount caps the IDs one batch asks for; it matches the server's
// default maximum block size.
const maxBatchCount = 1_000_000

// streamer carries NextID and NextIDs calls over one bidirectional stream
// and coalesces concurrent callers of the same key and mode into one
// request.
//
// Linearizability: a caller only ever joins a batch that has not been sent
// yet, and the batch's request is sent after it joined, so the block the
// server allocates for the batch — and the caller's share of it — is
// allocated after the call started. A caller's share is fixed when it
// joins (its offset in the batch, in arrival order), so nothing that
// happens after the answer arrives can reorder callers.
//
// Cost per caller: a caller allocates nothing and takes one lock (its
// key's); it then sleeps on its batch's done channel, which the receive
// loop closes once for all the batch's callers, and computes its IDs from
// the batch's first ID and its own offset.
type streamer struct {
	seqClient ordinalv1.SequencerServiceClient

	// bmu guards batchers, kept apart from mu so that looking up a key does
	// not wait for the stream's bookkeeping.
	bmu      sync.Mutex
	batchers map[batchKey]*batcher
	// last is the batcher looked up last: a process taking IDs of one key
	// finds it without a lock.
	last atomic.Pointer[batcher]

	mu      sync.Mutex
	stream  ordinalv1.SequencerService_NextIdStreamClient
	cancel  context.CancelFunc
	next    uint64
	pending map[uint64]*batch
	closed  bool

	sendMu sync.Mutex // serialises stream.Send
}

type batchKey struct {
	store, key string
	mode       Mode
}

// batcher queues the batches of one key and mode.
type batcher struct {
	key batchKey

	mu sync.Mutex
	// queue holds the batches not sent yet, oldest first. Callers join
	// the last one; the others are full (maxBatchCount).
	queue    []*batch
	inFlight int
}

// batch is one request's worth of callers. count grows while the batch is
// queued and is fixed once it is sent; first and err are written once,
// before done is closed, and read only after.
type batch struct {
	b     *batcher
	count int64 // IDs the callers who joined asked for
	done  chan struct{}
	first int64
	err   error
}

func newStreamer(c ordinalv1.SequencerServiceClient) *streamer {
	return &streamer{seqClient: c, pending: map[uint64]*batch{}, batchers: map[batchKey]*batcher{}}
}

// nextIDs hands out count IDs of the key through the stream.
func (s *streamer) nextIDs(ctx context.Context, k batchKey, count int64) (int64, error) {
	if count <= 0 || count > maxBatchCount {
		return 0, status.Errorf(codes.InvalidArgument, "count is %d; it must be between 1 and %d", count, maxBatchCount)
	}
	b := s.batcher(k)
	b.mu.Lock()
	bt, off := b.join(count)
	var out *batch
	if b.inFlight < maxBatchesInFlight {
		out = b.take()
	}
	b.mu.Unlock()
	if out != nil {
		s.send(out)
	}
	if done := ctx.Done(); done == nil {
		<-bt.done
	} else {
		select {
		case <-bt.done:
		case <-done:
			// The share stays in the batch: those IDs are skipped, never
			// handed out to anyone else.
			return 0, status.FromContextError(ctx.Err()).Err()
		}
	}
	if bt.err != nil {
		return 0, bt.err
	}
	return bt.first + off, nil
}

func (s *streamer) batcher(k batchKey) *batcher {
	if b := s.last.Load(); b != nil && b.key == k {
		return b
	}
	s.bmu.Lock()
	b := s.batchers[k]
	if b == nil {
		if len(s.batchers) >= sweepBatchersAt {
			s.sweepLocked()
		}
		b = &batcher{key: k}
		s.batchers[k] = b
	}
	s.bmu.Unlock()
	s.last.Store(b)
	return b
}

// sweepBatchersAt is the number of keys above which a new key first drops
// the batchers of keys with nothing queued or in flight, so that a client
// used for ever more keys (a follower forwarding calls for any key) keeps
// memory bounded by its busy keys, without a batcher being dropped and
// recreated on every call of a quiet key.
const sweepBatchersAt = 1024

// sweepLocked drops idle batchers. A caller that looked one up just before
// may still use it: it is a complete batcher on its own, and callers of the
// same key joining a new one only coalesce less. The caller holds s.bmu.
func (s *streamer) sweepLocked() {
	for k, b := range s.batchers {
		b.mu.Lock()
		idle := b.inFlight == 0 && len(b.queue) == 0
		b.mu.Unlock()
		if idle {
			delete(s.batchers, k)
			s.last.CompareAndSwap(b, nil)
		}
	}
}

// join adds a caller of count IDs to the newest unsent batch, or to a new
// one when there is none or it is full, and returns the batch and the
// caller's offset in its block. The caller holds b.mu.
func (b *batcher) join(count int64) (*batch, int64) {
	if n := len(b.queue); n > 0 {
		if bt := b.queue[n-1]; bt.count+count <= maxBatchCount {
			off := bt.count
			bt.count += count
			return bt, off
		}
	}
	bt := &batch{b: b, count: count, done: make(chan struct{})}
	b.queue = append(b.queue, bt)
	return bt, 0
}

// take removes the oldest unsent batch, if any, and counts it as in
// flight; from then on no caller joins it. The caller holds b.mu.
func (b *batcher) take() *batch {
	n := len(b.queue)
	if n == 0 {
		return nil
	}
	bt := b.queue[0]
	copy(b.queue, b.queue[1:])
	b.queue[n-1] = nil
	b.queue = b.queue[:n-1]
	b.inFlight++
	return bt
}

// send puts a batch on the stream, opening the stream if needed.
func (s *streamer) send(bt *batch) {
	stream, seq, err := s.register(bt)
	if err != nil {
		s.finish(bt, 0, err)
		return
	}
	req := &ordinalv1.NextIdStreamRequest{
		Seq:       seq,
		StoreName: bt.b.key.store,
		Key:       bt.b.key.key,
		Options:   sequencerOptions(bt.b.key.mode),
		Count:     bt.count,
	}
	s.sendMu.Lock()
	err = stream.Send(req)
	s.sendMu.Unlock()
	if err != nil {
		// The receive loop sees the broken stream too and fails every
		// pending batch, this one included.
		s.breakStream(stream, err)
	}
}

// register assigns bt a sequence number on the current stream.
func (s *streamer) register(bt *batch) (ordinalv1.SequencerService_NextIdStreamClient, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, 0, status.Error(codes.Canceled, "client closed")
	}
	if s.stream == nil {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := s.seqClient.NextIdStream(ctx)
		if err != nil {
			cancel()
			return nil, 0, err
		}
		s.stream, s.cancel = stream, cancel
		go s.receive(stream)
	}
	s.next++
	s.pending[s.next] = bt
	return s.stream, s.next, nil
}

// receive dispatches answers until the stream breaks.
func (s *streamer) receive(stream ordinalv1.SequencerService_NextIdStreamClient) {
	for {
		resp, err := stream.Recv()
		if err != nil {
			s.breakStream(stream, err)
			return
		}
		s.mu.Lock()
		bt := s.pending[resp.GetSeq()]
		delete(s.pending, resp.GetSeq())
		s.mu.Unlock()
		if bt == nil {
			continue
		}
		var rerr error
		if code := codes.Code(resp.GetCode()); code != codes.OK {
			rerr = status.Error(code, resp.GetMessage())
		}
		s.finish(bt, resp.GetFirstId(), rerr)
	}
}

// finish ends bt, which was sent or failed to be: it wakes bt's callers,
// each of whom takes its share of the block at its offset, then sends the
// key's next batch if callers are waiting for one. It runs once per batch.
// The callers are woken first so that a Send held up by flow control does
// not hold up answers that have arrived.
func (s *streamer) finish(bt *batch, first int64, err error) {
	bt.first, bt.err = first, err
	close(bt.done)
	b := bt.b
	b.mu.Lock()
	b.inFlight--
	next := b.take()
	b.mu.Unlock()
	if next != nil {
		s.send(next)
	}
}

// breakStream fails every batch pending on stream with Unavailable, so
// callers can retry; the next call opens a new stream.
func (s *streamer) breakStream(stream ordinalv1.SequencerService_NextIdStreamClient, cause error) {
	s.mu.Lock()
	if s.stream != stream {
		s.mu.Unlock()
		return
	}
	s.cancel()
	s.stream, s.cancel = nil, nil
	pending := s.pending
	s.pending = map[uint64]*batch{}
	s.mu.Unlock()
	err := status.Errorf(codes.Unavailable, "stream to the node broke: %v", cause)
	if st, ok := status.FromError(cause); ok && st.Code() != codes.Unknown && !errors.Is(cause, context.Canceled) {
		err = st.Err()
	}
	for _, bt := range pending {
		s.finish(bt, 0, err)
	}
}

func (s *streamer) close() {
	s.mu.Lock()
	s.closed = true
	stream := s.stream
	s.mu.Unlock()
	if stream != nil {
		s.breakStream(stream, status.Error(codes.Canceled, "client closed"))
	}
}
