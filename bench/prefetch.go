package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/internal/cputime"
)

// PrefetchSampleEvery is how often a caller of a WeakPrefetch run reads
// the clock: one call in this many is timed on its own (the clock read
// right before and right after it), and those readings also end the
// warm-up and the run. The latencies of such a run are those of the timed
// calls.
const PrefetchSampleEvery = 64

// A WeakPrefetch run serves IDs from memory, tens of millions a second:
// more than a Record per call (40 bytes, and 16 while the run lasts) and
// a sort of them all could keep up with. So runPrefetch measures and
// verifies as the calls go:
//
//   - each caller checks that its IDs increase (first above the previous
//     call's last), the promise of a client with WithWeakPrefetch
//     (OrderPerCaller): its IDs of a key increase in the order it hands
//     them out, and a caller's calls follow one another;
//   - each caller keeps its IDs as a stream of varint deltas to its
//     previous ID, about a byte per call (callers share the client's
//     blocks, so a caller's IDs are a few apart), and after the run every
//     ID of every caller is set in a bitmap, which finds any ID handed out
//     twice, to one caller or to two;
//   - each caller reads the clock once every PrefetchSampleEvery calls.
//
// What a caller spends per call besides the call is then a compare and a
// byte or so (BenchmarkPrefetchBookkeeping: about 4 ns, against about 30
// ns for the client's own path), and memory about a byte per call: some
// 150 MB for 25M calls a second over 6 s, and the bitmap after the run
// about a bit per ID.
//
// The keys are one (Config.WithDefaults refuses more), so no key is kept
// per call.

// prefetchVerified says how a WeakPrefetch run was verified, for reports.
const prefetchVerified = "no ID twice (every ID of every call, kept by each caller as varint deltas and set in a bitmap after the run), " +
	"and each caller's IDs increasing (checked as the calls returned: one prefetching client's IDs of a key increase in the order it hands them out); " +
	"no real-time order across callers (that would take a record per call)"

// prefetchWorker is one caller's account of a WeakPrefetch run. Only its
// caller touches it during the run.
type prefetchWorker struct {
	// done holds full chunks of the delta stream; cur is the one being
	// filled. No varint straddles two chunks.
	done [][]byte
	cur  []byte
	// calls counts successful calls; warmCalls those made before the
	// first timed call that started after the warm-up, measuring whether
	// that call was made.
	calls, warmCalls int64
	measuring        bool
	last             int64   // the last ID of the previous successful call; 0 before the first
	lat              []int64 // latencies of the timed calls made while measuring, ns
	end              int64   // the clock at the caller's last reading, ns since the run started
	orderErr         error   // the first call whose IDs did not lie above the previous call's
	errors           map[codes.Code]int64
	_                [64]byte // keeps workers' headers off each other's cache lines
}

// prefetchChunk is the most bytes of delta stream a worker allocates at
// once (1 MiB).
const prefetchChunk = 1 << 20

// add keeps a successful call that got count IDs from first: checks them
// against the caller's previous call and appends them to the stream.
func (w *prefetchWorker) add(caller int, first, count int64) {
	// The common case: a call whose IDs lie just above the previous
	// call's, whose delta is one byte (the varint of 2·d).
	if d := first - w.last; d > 0 && d < 64 && len(w.cur) < cap(w.cur) {
		w.cur = append(w.cur, byte(d<<1))
		w.calls++
		w.last = first + count - 1
		return
	}
	if first <= w.last && w.orderErr == nil { // w.last is never negative
		if first < 1 {
			w.orderErr = fmt.Errorf("caller %d's call %d got the block %d (count %d): IDs must be positive", caller, w.calls+1, first, count)
		} else {
			w.orderErr = fmt.Errorf("ORDER (%s): caller %d's call %d got %d..%d, but its previous call had got IDs up to %d",
				OrderPerCaller, caller, w.calls+1, first, first+count-1, w.last)
		}
	}
	w.calls++
	if len(w.cur)+binary.MaxVarintLen64 > cap(w.cur) {
		if len(w.cur) > 0 {
			w.done = append(w.done, w.cur)
		}
		w.cur = make([]byte, 0, min(max(2*cap(w.cur), 4096), prefetchChunk))
	}
	w.cur = binary.AppendVarint(w.cur, first-w.last)
	w.last = first + count - 1
}

func (w *prefetchWorker) fail(err error) {
	if w.errors == nil {
		w.errors = map[codes.Code]int64{}
	}
	w.errors[status.Code(err)]++
}

// measured is the number of successful calls made while measuring.
func (w *prefetchWorker) measured() int64 {
	if !w.measuring {
		return 0
	}
	return w.calls - w.warmCalls
}

// each calls f with the first ID of every call the worker kept, in order;
// count is the IDs per call.
func (w *prefetchWorker) each(count int64, f func(first int64) error) error {
	var prev int64 // the last ID of the previous call, as add's w.last
	for _, chunk := range append(w.done, w.cur) {
		for len(chunk) > 0 {
			d, n := binary.Varint(chunk)
			if n <= 0 {
				return fmt.Errorf("bench: corrupt delta stream")
			}
			chunk = chunk[n:]
			first := prev + d
			if err := f(first); err != nil {
				return err
			}
			prev = first + count - 1
		}
	}
	return nil
}

// runPrefetch is Run for a Config with WeakPrefetch: callers are the
// dialled clients (each with client.WithWeakPrefetch), keys the one key.
func runPrefetch(ctx context.Context, cfg Config, callers [][]caller, keys *keyNames) (*Result, error) {
	var buf []byte
	key := keys.name(0, &buf)
	groups := len(callers)
	workers := make([]prefetchWorker, cfg.Concurrency)
	warmEnd := int64(cfg.Warmup)
	stopAt := int64(cfg.Warmup + cfg.Duration)
	cpuBefore := cputime.Self()
	base := time.Now()
	callCtx, cancel := context.WithDeadline(ctx, base.Add(time.Duration(stopAt)+cfg.Timeout))
	defer cancel()
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		c := callers[i%groups][(i/groups)%cfg.Conns]
		wg.Go(func() {
			wctx, wcancel := context.WithCancel(callCtx)
			defer wcancel()
			// failed counts a failed call, unless the run was cancelled,
			// and reports whether the caller goes on.
			failed := func(err error) bool {
				if ctx.Err() != nil {
					return false // the run was cancelled; not the target's failure
				}
				w.fail(err)
				time.Sleep(time.Millisecond) // no tight loop against a target that fails at once
				return true
			}
			for ctx.Err() == nil {
				// A timed call, whose clock readings also end the
				// warm-up and the run.
				start := int64(time.Since(base))
				if start >= stopAt {
					w.end = max(w.end, start)
					return
				}
				if !w.measuring && start >= warmEnd {
					w.measuring, w.warmCalls = true, w.calls
				}
				first, err := c.next(wctx, key, cfg.Count)
				w.end = int64(time.Since(base))
				if err != nil {
					if !failed(err) {
						return
					}
					continue
				}
				w.add(i, first, cfg.Count)
				if w.measuring {
					w.lat = append(w.lat, w.end-start)
				}
				// Untimed calls.
				for range PrefetchSampleEvery - 1 {
					first, err := c.next(wctx, key, cfg.Count)
					if err != nil {
						if !failed(err) {
							return
						}
						break
					}
					w.add(i, first, cfg.Count)
				}
			}
		})
	}
	wg.Wait()
	loadCPU := cputime.Self() - cpuBefore
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := &Result{Config: cfg, Errors: map[codes.Code]int64{}, LoadCPU: loadCPU, Keys: 1, Order: OrderPerCaller,
		LatencySample: PrefetchSampleEvery}
	var calls int64
	var lat []int64
	lastEnd := stopAt
	for i := range workers {
		w := &workers[i]
		calls += w.calls
		res.Calls += w.measured()
		lat = append(lat, w.lat...)
		w.lat = nil
		lastEnd = max(lastEnd, w.end)
		for code, n := range w.errors {
			res.Errors[code] += n
		}
	}
	res.AllCalls = calls + res.ErrorCount()
	if calls == 0 {
		return res, fmt.Errorf("%w: %s", ErrNoCalls, res.errorSummary())
	}
	res.IDs = res.Calls * cfg.Count
	res.Elapsed = time.Duration(lastEnd - warmEnd)
	res.setLatencies(lat)
	res.Verified = int(calls)
	res.VerifyErr = verifyPrefetch(workers, cfg.Count, key)
	return res, nil
}

// verifyPrefetch checks the callers' accounts of a WeakPrefetch run: each
// caller's IDs increased (checked as the calls returned), and no ID was
// handed out twice, which it checks by setting every ID of every caller in
// a bitmap. It lets go of the workers' streams.
func verifyPrefetch(workers []prefetchWorker, count int64, key string) error {
	for i := range workers {
		if err := workers[i].orderErr; err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
	}
	var seen idSet
	for i := range workers {
		w := &workers[i]
		err := w.each(count, func(first int64) error {
			if first < 1 {
				return fmt.Errorf("key %q: caller %d got the block %d (count %d): IDs must be positive", key, i, first, count)
			}
			for id := first; id < first+count; id++ {
				if !seen.add(id) {
					return fmt.Errorf("DUPLICATE: key %q: ID %d was handed out twice (the second time found in caller %d's calls)", key, id, i)
				}
			}
			return nil
		})
		w.done, w.cur = nil, nil
		if err != nil {
			return err
		}
	}
	return nil
}

// idSet is a set of positive IDs: a bitmap in pages of 65,536 IDs, made
// as IDs land in them, so that IDs spread over a few ranges (blocks taken
// from a node) cost about a bit each.
type idSet struct {
	pages    map[int64]*idPage
	lastNo   int64
	lastPage *idPage
}

type idPage [1 << 10]uint64

// add adds id and reports whether it was not in the set yet.
func (s *idSet) add(id int64) bool {
	no := id >> 16
	p := s.lastPage
	if p == nil || no != s.lastNo {
		if s.pages == nil {
			s.pages = map[int64]*idPage{}
		}
		if p = s.pages[no]; p == nil {
			p = new(idPage)
			s.pages[no] = p
		}
		s.lastNo, s.lastPage = no, p
	}
	word, bit := &p[(id>>6)&(1<<10-1)], uint64(1)<<(id&63)
	if *word&bit != 0 {
		return false
	}
	*word |= bit
	return true
}
