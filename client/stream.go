package client

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
)

// maxBatchesInFlight is how many batches of one key and mode may travel at
// once. One would make a batch wait for the previous answer; a few keep the
// stream busy while batches still grow with the load.
const maxBatchesInFlight = 2

// maxBatchCount caps the IDs one batch asks for; it matches the server's
// default maximum block size.
const maxBatchCount = 1_000_000

// streamer carries NextID and NextIDs calls over one bidirectional stream
// and coalesces concurrent callers of the same key and mode into one
// request. A caller joins a batch that has not been sent yet, so the IDs it
// gets are allocated by the server after the call started: coalescing keeps
// STRONG calls linearizable.
type streamer struct {
	seqClient ordinalv1.SequencerClient

	mu       sync.Mutex
	stream   ordinalv1.Sequencer_NextIdStreamClient
	cancel   context.CancelFunc
	next     uint64
	pending  map[uint64]*batch
	batchers map[batchKey]*batcher
	closed   bool

	sendMu sync.Mutex // serialises stream.Send
}

type batchKey struct {
	store, key string
	mode       Mode
}

// batcher queues the callers of one key and mode.
type batcher struct {
	key      batchKey
	mu       sync.Mutex
	waiting  []*waiter
	queued   int64 // IDs the waiting callers want
	inFlight int
}

type waiter struct {
	count int64
	done  chan result // buffered: the answer never blocks on a gone caller
}

type result struct {
	first int64
	err   error
}

type batch struct {
	b       *batcher
	waiters []*waiter
}

func newStreamer(c ordinalv1.SequencerClient) *streamer {
	return &streamer{seqClient: c, pending: map[uint64]*batch{}, batchers: map[batchKey]*batcher{}}
}

// next hands out count IDs of the key through the stream.
func (s *streamer) nextIDs(ctx context.Context, k batchKey, count int64) (int64, error) {
	if count <= 0 || count > maxBatchCount {
		return 0, status.Errorf(codes.InvalidArgument, "count is %d; it must be between 1 and %d", count, maxBatchCount)
	}
	b := s.batcher(k)
	w := &waiter{count: count, done: make(chan result, 1)}
	b.mu.Lock()
	b.waiting = append(b.waiting, w)
	b.queued += count
	var out *batch
	if b.inFlight < maxBatchesInFlight {
		out = b.take()
	}
	b.mu.Unlock()
	if out != nil {
		s.send(out)
	}
	select {
	case r := <-w.done:
		return r.first, r.err
	case <-ctx.Done():
		return 0, status.FromContextError(ctx.Err()).Err()
	}
}

func (s *streamer) batcher(k batchKey) *batcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.batchers[k]
	if b == nil {
		b = &batcher{key: k}
		s.batchers[k] = b
	}
	return b
}

// take removes the waiting callers that fit in one batch and counts the
// batch as in flight. The caller holds b.mu.
func (b *batcher) take() *batch {
	if len(b.waiting) == 0 {
		return nil
	}
	var total int64
	n := 0
	for n < len(b.waiting) && total+b.waiting[n].count <= maxBatchCount {
		total += b.waiting[n].count
		n++
	}
	out := &batch{b: b, waiters: b.waiting[:n:n]}
	b.waiting = b.waiting[n:]
	b.queued -= total
	b.inFlight++
	return out
}

func (bt *batch) total() int64 {
	var t int64
	for _, w := range bt.waiters {
		t += w.count
	}
	return t
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
		Count:     bt.total(),
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
func (s *streamer) register(bt *batch) (ordinalv1.Sequencer_NextIdStreamClient, uint64, error) {
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
func (s *streamer) receive(stream ordinalv1.Sequencer_NextIdStreamClient) {
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

// finish hands each caller of bt its share of the block, in the order they
// arrived, and sends the next batch of the key if callers are waiting.
func (s *streamer) finish(bt *batch, first int64, err error) {
	for _, w := range bt.waiters {
		if err != nil {
			w.done <- result{err: err}
			continue
		}
		w.done <- result{first: first}
		first += w.count
	}
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
func (s *streamer) breakStream(stream ordinalv1.Sequencer_NextIdStreamClient, cause error) {
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
