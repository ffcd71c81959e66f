package client

import (
	"context"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// prefetch serves WEAK IDs from blocks taken ahead (WithWeakPrefetch): a
// double buffer per store and key, as Leaf's segments.
//
// A caller takes IDs from the key's current block with one atomic add:
// no lock, no allocation. The caller whose add crosses the middle of the
// block starts a fetch of the next block in the background. A caller that
// finds the current block used up takes the lock and swaps in the next
// block, which is there unless blocks come back slower than half a block
// is used; only then, or for a key's first block, does a caller wait for a
// fetch.
type prefetch struct {
	c    *Client
	size int64 // IDs per block

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed, and wg.Add against Close's Wait
	closed bool
	wg     sync.WaitGroup // fetches in flight

	keys sync.Map                  // prefetchKey → *keyBuffer
	last atomic.Pointer[keyBuffer] // the buffer looked up last
}

type prefetchKey struct{ store, key string }

// segment is a block of IDs, first..last, handed out in order.
type segment struct {
	first, last int64
	// used counts the IDs handed out. It runs past the block's size as
	// callers find it used up; those callers go to the next block.
	used atomic.Int64
}

// keyBuffer is the double buffer of one key.
type keyBuffer struct {
	k   prefetchKey
	cur atomic.Pointer[segment] // nil until the first block arrives

	mu       sync.Mutex
	next     *segment // the block fetched ahead, nil if none
	fetching *fetch   // the fetch in flight, nil if none
	high     int64    // the last ID of the newest block: the next lies above
	node     *node    // the node the newest block came from
}

// fetch is one block being taken; done is closed once err is set.
type fetch struct {
	done chan struct{}
	err  error
}

func newPrefetch(c *Client, size int64) *prefetch {
	p := &prefetch{c: c, size: size}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// next hands out count IDs of key (count at most half a block) and
// returns the first.
func (p *prefetch) next(ctx context.Context, store, key string, count int64) (int64, error) {
	kb := p.buffer(store, key)
	for {
		s := kb.cur.Load()
		if s != nil {
			end := s.used.Add(count)
			if first := s.first + end - count; first+count-1 <= s.last {
				if half := max(1, (s.last-s.first+1)/2); end-count < half && end >= half {
					p.fetchAhead(kb)
				}
				return first, nil
			}
		}
		if err := p.refill(ctx, kb, s); err != nil {
			return 0, err
		}
	}
}

// buffer returns the double buffer of key, making it on first use.
func (p *prefetch) buffer(store, key string) *keyBuffer {
	k := prefetchKey{store: store, key: key}
	if kb := p.last.Load(); kb != nil && kb.k == k {
		return kb
	}
	v, ok := p.keys.Load(k)
	if !ok {
		v, _ = p.keys.LoadOrStore(k, &keyBuffer{k: k})
	}
	kb := v.(*keyBuffer)
	p.last.Store(kb)
	return kb
}

// fetchAhead starts fetching the block after the current one, unless one
// is fetched or in flight already.
func (p *prefetch) fetchAhead(kb *keyBuffer) {
	kb.mu.Lock()
	if kb.next == nil && kb.fetching == nil {
		p.startFetch(kb)
	}
	kb.mu.Unlock()
}

// refill makes a block other than used (the one the caller found used
// up, or nil) current: the block fetched ahead if there is one, otherwise
// the one a fetch brings, waiting for it.
func (p *prefetch) refill(ctx context.Context, kb *keyBuffer, used *segment) error {
	kb.mu.Lock()
	for {
		if kb.cur.Load() != used {
			kb.mu.Unlock() // another caller swapped already
			return nil
		}
		if kb.next != nil {
			kb.cur.Store(kb.next)
			kb.next = nil
			kb.mu.Unlock()
			return nil
		}
		if kb.fetching == nil && !p.startFetch(kb) {
			kb.mu.Unlock()
			return errClosed
		}
		f := kb.fetching
		kb.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-p.ctx.Done():
			return errClosed
		}
		if f.err != nil {
			return f.err
		}
		kb.mu.Lock()
	}
}

// startFetch starts taking the next block of kb, unless the Client is
// closed, and reports whether it did. The caller holds kb.mu.
func (p *prefetch) startFetch(kb *keyBuffer) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.wg.Add(1)
	p.mu.Unlock()
	f := &fetch{done: make(chan struct{})}
	kb.fetching = f
	high, prefer := kb.high, kb.node
	go func() {
		defer p.wg.Done()
		seg, n, err := p.take(kb.k, high, prefer)
		kb.mu.Lock()
		if err == nil {
			kb.next, kb.high, kb.node = seg, seg.last, n
		}
		f.err = err
		kb.fetching = nil
		kb.mu.Unlock()
		close(f.done)
	}()
	return true
}

// take fetches a block of WEAK IDs of k above high, from the node prefer
// while it is as good as any. A block from one node lies above every
// block that node handed out before; a block from another node may lie
// below IDs already handed out. Then its part above high is kept, or, when
// all of it lies below, the same node is asked for a block long enough to
// reach past high: a node hands out its IDs in order, so that block ends
// above high (or the node reserves a fresh range, above every ID reserved
// so far). The IDs skipped are a gap. The fetch runs for the Client, not
// for one caller: it retries for the Client's retry window and ends with
// the Client.
func (p *prefetch) take(k prefetchKey, high int64, prefer *node) (*segment, *node, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.c.retry.window)
	defer cancel()
	s := p.c.Store(k.store)
	count := p.size
	for {
		first, n, err := s.take(ctx, k.key, Weak, count, true, prefer)
		if err != nil {
			if p.ctx.Err() != nil {
				return nil, nil, errClosed
			}
			return nil, nil, err
		}
		last := first + count - 1
		if last > high {
			seg := &segment{first: max(first, high+1), last: last}
			return seg, n, nil
		}
		if ctx.Err() != nil {
			return nil, nil, status.Error(codes.Unavailable, "ordinal: could not take a block of WEAK IDs above those handed out before in time")
		}
		prefer = n
		count = min(maxBatchCount, high-first+1+p.size)
	}
}

// close ends the fetches in flight; callers waiting for one fail with
// Canceled.
func (p *prefetch) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}
