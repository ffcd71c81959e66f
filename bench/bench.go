// Package bench is ordinal's load generator and verifier. It drives a
// bounded load against ordinal nodes, the no-op ceiling server (package
// noop) or etcd used the way Layotto's etcd sequencer uses it, measures
// throughput and latency, and checks every ID it received: no ID twice,
// STRONG IDs in real-time order across all targets, WEAK IDs in order per
// target (through one client with WithWeakPrefetch, in order per caller:
// runPrefetch). cmd/ordinal-bench is its command line (`ordinal-bench run`,
// serve-noop, failover and compare).
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/internal/cputime"
)

// Mode is what the callers ask for.
type Mode string

const (
	// ModeStrong: one STRONG ID per unary GetNextId call.
	ModeStrong Mode = "strong"
	// ModeWeak: one WEAK ID per unary GetNextId call.
	ModeWeak Mode = "weak"
	// ModeBatch: Count STRONG IDs per unary GetNextIds call.
	ModeBatch Mode = "batch"
	// ModeStream: STRONG IDs (Count per call) through one client per
	// target made with client.WithStreaming and shared by every caller,
	// which coalesces concurrent callers over the NextIdStream stream.
	ModeStream Mode = "stream"
)

// Backend is the kind of server the targets are.
type Backend string

const (
	// BackendOrdinal speaks ordinal.v1.SequencerService: ordinal nodes and the
	// no-op server.
	BackendOrdinal Backend = "ordinal"
	// BackendEtcd is etcd used as Layotto's etcd sequencer uses it.
	BackendEtcd Backend = "etcd"
)

// KeyDist is how each caller picks the key of each call.
type KeyDist string

const (
	// KeyCycle: each caller goes through the keys in turn, caller i
	// starting at key i·Keys/Concurrency, so that the callers spread over
	// the keys instead of calling the same few at the same moment.
	KeyCycle KeyDist = "cycle"
	// KeyFresh: every call asks for a key never used before, by any
	// caller or any earlier run: "<Key>-<nonce>-<n>", the nonce drawn per
	// run. Keys is then 1 (it has no meaning).
	KeyFresh KeyDist = "fresh"
	// KeyZipf: each call draws its key from a Zipf distribution over the
	// Keys keys (ZipfS), from a source of its caller's own, seeded with
	// Config.Seed and the caller's index: key "<Key>-0" is the most
	// popular, and every caller sees the same popularity.
	KeyZipf KeyDist = "zipf"
)

// ZipfS is the exponent of KeyZipf: key k (from 0) is drawn with
// probability proportional to (k+1)^-ZipfS. math/rand/v2's Zipf needs an
// exponent above 1; 1.1 is the mildest usual skew it allows (YCSB's
// zipfian constant, 0.99, is just below). Over 100,000 keys it gives the
// most popular key about 13% of the calls and the most popular 1% of the
// keys about three quarters (properties of the distribution, checked by
// TestKeySeqZipf), while most keys are called rarely or never in a run.
const ZipfS = 1.1

// MaxKeys is the most keys Config.Keys may name: their names are made
// before the run.
const MaxKeys = 1 << 24

// Defaults of Config.
const (
	DefaultConcurrency = 64
	DefaultDuration    = 10 * time.Second
	DefaultWarmup      = time.Second
	DefaultBatchCount  = 1000
	DefaultKey         = "bench"
	DefaultTimeout     = 5 * time.Second
)

// Config describes one run.
type Config struct {
	Mode    Mode
	Backend Backend // default BackendOrdinal
	// Targets are host:port addresses; caller i sends to Targets[i%len],
	// unless MultiAddress.
	Targets []string
	// MultiAddress makes each client over all Targets at once, as
	// client.New("a:1,b:2,c:3") does, instead of one client per target:
	// every caller shares the Conns such clients, and the client picks the
	// node of each call (STRONG to the node that leads, WEAK in turn over
	// the healthy nodes). Which node served a call is then not known, so
	// WEAK IDs without WeakPrefetch are checked for uniqueness only
	// (OrderNone); STRONG IDs are checked in real-time order, as always.
	MultiAddress bool
	// WeakPrefetch, when not zero, adds client.WithWeakPrefetch of that
	// block size to every client: WEAK IDs come from blocks taken ahead
	// and are handed out from memory. Mode weak and one key only. Such a
	// run calls too fast for a record per call, so it is measured and
	// verified in a streaming way (runPrefetch): every ID once at most,
	// each caller's IDs increasing (OrderPerCaller), latencies of one call
	// in PrefetchSampleEvery.
	WeakPrefetch int
	// Concurrency is the number of callers, each making one call at a
	// time. Default DefaultConcurrency.
	Concurrency int
	// Duration is how long calls are measured, after Warmup. Calls made
	// during Warmup are verified but not measured. Defaults
	// DefaultDuration and DefaultWarmup; a negative Warmup means none.
	Duration, Warmup time.Duration
	// NoWarmup measures from the first call, whatever Warmup says: with
	// it, a Warmup of zero means none rather than DefaultWarmup (what
	// `ordinal-bench run --warmup 0` asks for).
	NoWarmup bool
	// Count is the IDs per call: default DefaultBatchCount in ModeBatch,
	// 1 otherwise.
	Count int64
	// Key is the key, or with Keys > 1 the prefix of Keys keys
	// "<Key>-0".."<Key>-<Keys-1>", or with KeyDist KeyFresh the prefix of
	// the fresh keys.
	Key  string
	Keys int
	// KeyDist is how callers pick each call's key among the Keys keys;
	// default KeyCycle (with one key, every call asks for Key).
	KeyDist KeyDist
	// Seed seeds the callers' sources of KeyZipf: caller i draws from a
	// PCG seeded with (Seed, i), so a run's keys are reproducible.
	Seed uint64
	// Store is the store of the keys (ordinal only; etcd keys follow
	// Layotto's naming, which has no store).
	Store string
	// Timeout is how long calls still in flight when the run ends may take
	// before they are abandoned (and counted as DeadlineExceeded). Calls
	// share one deadline rather than each making its own: a per-call
	// context.WithTimeout costs the load generator a fifth of its CPU in
	// the stream mode. Default DefaultTimeout.
	Timeout time.Duration
	// Conns is the number of clients (gRPC connections) per target the
	// callers share. Default 1.
	Conns int
	// Label names the run in its RESULT line.
	Label string
	// ClientOptions are added to the options of every client of an
	// ordinal target, for example client.WithTLS and client.WithToken to
	// load a secured cluster. BackendEtcd does not use them.
	ClientOptions []client.Option
}

// UsageError is returned by Run for a Config that cannot run.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf(format, args...)}
}

// WithDefaults fills in zero fields and checks the result.
func (c Config) WithDefaults() (Config, error) {
	if c.Backend == "" {
		c.Backend = BackendOrdinal
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	switch {
	case c.NoWarmup || c.Warmup < 0:
		c.Warmup, c.NoWarmup = 0, true
	case c.Warmup == 0:
		c.Warmup = DefaultWarmup
	}
	if c.Count == 0 {
		c.Count = 1
		if c.Mode == ModeBatch {
			c.Count = DefaultBatchCount
		}
	}
	if c.Key == "" {
		c.Key = DefaultKey
	}
	if c.Keys == 0 {
		c.Keys = 1
	}
	if c.KeyDist == "" {
		c.KeyDist = KeyCycle
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Conns == 0 {
		c.Conns = 1
	}
	switch {
	case c.Mode != ModeStrong && c.Mode != ModeWeak && c.Mode != ModeBatch && c.Mode != ModeStream:
		return c, usagef("unknown mode %q: use strong, weak, batch or stream", c.Mode)
	case c.Backend != BackendOrdinal && c.Backend != BackendEtcd:
		return c, usagef("unknown backend %q: use ordinal or etcd", c.Backend)
	case c.Backend == BackendEtcd && (c.Mode == ModeBatch || c.Mode == ModeStream || c.Count != 1):
		return c, usagef("backend etcd takes one ID per call (Layotto's etcd sequencer): use mode strong or weak without --count")
	case len(c.Targets) == 0:
		return c, usagef("no targets given")
	case len(c.Targets) > math.MaxUint16:
		return c, usagef("%d targets; at most %d", len(c.Targets), math.MaxUint16)
	case c.Concurrency < 1:
		return c, usagef("concurrency is %d; it must be at least 1", c.Concurrency)
	case c.Duration < 0:
		return c, usagef("duration is %v; it must be positive", c.Duration)
	case c.Count < 1 || c.Count > math.MaxInt32:
		return c, usagef("count is %d; it must be between 1 and %d", c.Count, math.MaxInt32)
	case c.KeyDist != KeyCycle && c.KeyDist != KeyFresh && c.KeyDist != KeyZipf:
		return c, usagef("unknown key distribution %q: use cycle, fresh or zipf", c.KeyDist)
	case c.Keys < 1 || c.Keys > MaxKeys:
		return c, usagef("keys is %d; it must be between 1 and %d", c.Keys, MaxKeys)
	case c.KeyDist == KeyFresh && c.Keys != 1:
		return c, usagef("keys is %d, but with the key distribution fresh every call asks for a new key: leave keys out", c.Keys)
	case c.Timeout < 0:
		return c, usagef("timeout is %v; it must be positive", c.Timeout)
	case c.Conns < 1:
		return c, usagef("conns is %d; it must be at least 1", c.Conns)
	case c.MultiAddress && c.Backend != BackendOrdinal:
		return c, usagef("multi-address makes one ordinal client over all targets; backend %s has none", c.Backend)
	case c.WeakPrefetch != 0 && (c.WeakPrefetch < 2 || c.WeakPrefetch > client.MaxWeakPrefetch):
		return c, usagef("weak prefetch is %d; the block size must be between 2 and %d", c.WeakPrefetch, client.MaxWeakPrefetch)
	case c.WeakPrefetch != 0 && (c.Mode != ModeWeak || c.Backend != BackendOrdinal):
		return c, usagef("weak prefetch serves WEAK IDs of ordinal nodes: use mode weak and backend ordinal")
	case c.WeakPrefetch != 0 && (c.Keys != 1 || c.KeyDist != KeyCycle):
		return c, usagef("weak prefetch runs are verified per caller for one key: leave keys and key-dist out")
	}
	for _, t := range c.Targets {
		if t == "" {
			return c, usagef("empty target address")
		}
	}
	return c, nil
}

// keysText says which keys the callers ask for.
func (c Config) keysText() string {
	switch {
	case c.KeyDist == KeyFresh:
		return "a new key per call"
	case c.KeyDist == KeyZipf:
		return fmt.Sprintf("%d keys drawn from Zipf (s=%g)", c.Keys, ZipfS)
	case c.Keys > 1:
		return fmt.Sprintf("%d keys in turn", c.Keys)
	}
	return "1 key"
}

// strong reports whether the run's IDs must be in real-time order across
// all targets. etcd is linearizable whatever mode Layotto is asked for.
func (c Config) strong() bool { return c.Mode != ModeWeak || c.Backend == BackendEtcd }

// order is the ordering guarantee the run's IDs are checked against.
func (c Config) order() Order {
	switch {
	case c.strong():
		return OrderStrong
	case c.WeakPrefetch > 0:
		return OrderPerCaller
	case c.MultiAddress && len(c.Targets) > 1:
		return OrderNone
	}
	return OrderPerTarget
}

// groups are the names of the callers' groups, Record.Target's values:
// the targets, or with MultiAddress the one list of them all.
func (c Config) groups() []string {
	if c.MultiAddress {
		return []string{strings.Join(c.Targets, ",")}
	}
	return c.Targets
}

// clientText says how the callers reach the targets, for reports.
func (c Config) clientText() string {
	var s string
	switch {
	case c.Backend == BackendEtcd:
		return fmt.Sprintf("over %s", strings.Join(c.Targets, ","))
	case c.MultiAddress:
		s = fmt.Sprintf("sharing one client over %s", strings.Join(c.Targets, ","))
		if c.Conns > 1 {
			s = fmt.Sprintf("sharing %d clients, each over %s", c.Conns, strings.Join(c.Targets, ","))
		}
	default:
		s = fmt.Sprintf("over %s", strings.Join(c.Targets, ","))
	}
	if c.WeakPrefetch > 0 {
		s += fmt.Sprintf(" with WithWeakPrefetch(%d)", c.WeakPrefetch)
	}
	return s
}

// keyNames names the keys of a run. Fresh keys get a nonce drawn here, so
// that no run asks for a key an earlier one made.
func (c Config) keyNames() *keyNames {
	switch {
	case c.KeyDist == KeyFresh:
		return &keyNames{prefix: c.Key + "-" + strconv.FormatUint(rand.Uint64()>>24, 36) + "-"}
	case c.Keys == 1:
		return &keyNames{names: []string{c.Key}}
	}
	names := make([]string, c.Keys)
	for i := range names {
		names[i] = c.Key + "-" + strconv.Itoa(i)
	}
	return &keyNames{names: names}
}

// keyNames maps the key indices of a run (Record.Key) to key names.
type keyNames struct {
	names  []string // KeyCycle and KeyZipf: the name of each index
	prefix string   // KeyFresh: the name is prefix followed by the index
}

// name is key k's name; for fresh keys it is made in buf, and the string
// allocated is the only per-call allocation of a fresh key.
func (n *keyNames) name(k uint64, buf *[]byte) string {
	if n.names != nil {
		return n.names[k]
	}
	*buf = strconv.AppendUint(append((*buf)[:0], n.prefix...), k, 10)
	return string(*buf)
}

// keySeq is the sequence of keys one caller asks for, as indices: one
// draw per call made, failed calls included. It is a function of the
// run's Config and the caller's index alone, so a worker need not record
// the key of each call: appendTo draws the same sequence again.
type keySeq struct {
	dist  KeyDist
	k     uint64 // KeyCycle: the next key; KeyFresh: the next index
	n     uint64 // KeyCycle: the number of keys; KeyFresh: the step (callers)
	draws uint64 // keys drawn so far
	zipf  *rand.Zipf
}

func newKeySeq(c Config, caller int) *keySeq {
	s := &keySeq{dist: c.KeyDist}
	switch c.KeyDist {
	case KeyFresh:
		// Caller i's n-th key is n·Concurrency + i: no two calls of the
		// run share one.
		s.k, s.n = uint64(caller), uint64(c.Concurrency)
	case KeyZipf:
		s.zipf = rand.NewZipf(rand.New(rand.NewPCG(c.Seed, uint64(caller))), ZipfS, 1, uint64(c.Keys-1))
	default:
		s.n = uint64(c.Keys)
		s.k = uint64(caller) % uint64(c.Concurrency) * s.n / uint64(c.Concurrency)
	}
	return s
}

// next draws the key of the next call.
func (s *keySeq) next() uint64 {
	s.draws++
	switch s.dist {
	case KeyZipf:
		return s.zipf.Uint64()
	case KeyFresh:
		k := s.k
		s.k += s.n
		return k
	}
	k := s.k
	if s.k++; s.k == s.n {
		s.k = 0
	}
	return k
}

// skipTo draws and drops keys until draws keys have been drawn.
func (s *keySeq) skipTo(draws uint64) {
	for s.draws < draws {
		s.next()
	}
}

// Result is what a run measured and found.
type Result struct {
	Config Config

	// Calls and IDs count the successful calls sent after the warm-up, and
	// the IDs they returned, over Elapsed: from the end of the warm-up to
	// the return of the last call.
	Calls, IDs int64
	Elapsed    time.Duration
	// P50, P99, P999 and Max are latencies of those calls, or with
	// LatencySample above 1 of one call in LatencySample (WeakPrefetch
	// runs, which time one call in PrefetchSampleEvery).
	P50, P99, P999, Max time.Duration
	LatencySample       int

	// Errors counts failed calls by gRPC code, warm-up included.
	Errors map[codes.Code]int64

	// AllCalls counts every call made, warm-up and failures included, and
	// LoadCPU is the CPU time this process (the load generator) spent
	// while making them; zero where the OS does not say.
	AllCalls int64
	LoadCPU  time.Duration

	// Keys is the number of keys the run asked for: Config.Keys, or with
	// KeyFresh one per call made (AllCalls).
	Keys int64

	// Verified is the number of successful calls checked, warm-up
	// included; VerifyErr is what the check found, nil if all is well.
	Verified  int
	Order     Order
	VerifyErr error
}

// CallsPerSec is the measured rate of successful calls.
func (r *Result) CallsPerSec() float64 { return perSec(r.Calls, r.Elapsed) }

// IDsPerSec is the measured rate of IDs handed out.
func (r *Result) IDsPerSec() float64 { return perSec(r.IDs, r.Elapsed) }

func perSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ErrorCount is the number of failed calls.
func (r *Result) ErrorCount() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// ErrNoCalls is returned by Run when no call succeeded.
var ErrNoCalls = errors.New("bench: no call succeeded")

// worker is one caller's private record, merged into Records when the run
// ends. Only its caller touches it during the run, so recording takes no
// lock.
//
// A worker keeps 16 bytes per successful call, the end time and the first
// ID: everything else a Record holds follows from the calls before. Count
// and Target are the worker's own; a call starts when the worker's
// previous call ended and asks for the key its keySeq drew next, except
// the worker's first call and every call after a failure, whose start and
// draw (the keys drawn before it, failed calls' included) a gap records.
// So however keys are picked (in turn, fresh, Zipf), recording a call
// costs the same: appendTo draws the caller's keys again, after the run.
// With thousands of callers each record lands in memory nobody touched
// lately, so its store is a cache miss: 16 bytes instead of a Record's 40
// is 2.5 times fewer lines written (about 6 ns per call in a profile with
// 4096 callers, when a Record was 32 bytes).
type worker struct {
	// done holds full chunks of calls; cur is the one being filled.
	// Chunks grow in size rather than one slice, so that a long run never
	// copies what it recorded.
	done [][]callEnd
	cur  []callEnd
	n    int   // calls recorded
	gaps []gap // in the order of at
	// gapNext: the next call recorded starts a gap, at gapStart, asking
	// for draw gapDraw of the worker's keySeq.
	gapNext  bool
	gapStart int64
	gapDraw  uint64
	errors   map[codes.Code]int64 // nil until a call fails
	_        [64]byte             // keeps workers' headers off each other's cache lines
}

// callEnd is what a worker keeps of one successful call.
type callEnd struct{ end, first int64 }

// gap marks a call that does not follow its worker's previous recorded
// call: the call at index at started at start and asked for the key its
// keySeq drew after draw others.
type gap struct {
	at    int
	start int64
	draw  uint64
}

// maxChunk is the most calls a worker allocates room for at once (256
// KiB).
const maxChunk = 1 << 14

// restart says that the next call starts at start and asks for the key
// its keySeq draws after draw others, whatever the previous recorded call
// was.
func (w *worker) restart(start int64, draw uint64) {
	w.gapNext, w.gapStart, w.gapDraw = true, start, draw
}

// record keeps a successful call that started when the previous one ended
// (or as restart said) and ended at end.
func (w *worker) record(end, first int64) {
	if w.gapNext {
		w.gaps = append(w.gaps, gap{at: w.n, start: w.gapStart, draw: w.gapDraw})
		w.gapNext = false
	}
	if len(w.cur) == cap(w.cur) {
		if len(w.cur) > 0 {
			w.done = append(w.done, w.cur)
		}
		w.cur = make([]callEnd, 0, min(max(2*cap(w.cur), 64), maxChunk))
	}
	w.cur = append(w.cur, callEnd{end, first})
	w.n++
}

func (w *worker) fail(err error) {
	if w.errors == nil {
		w.errors = map[codes.Code]int64{}
	}
	w.errors[status.Code(err)]++
}

// appendTo appends w's calls to out as Records and lets go of them. keys
// is a new keySeq equal to the one the worker's caller drew from.
func (w *worker) appendTo(out []Record, count int32, target uint16, keys *keySeq) []Record {
	var prevEnd int64
	gaps := w.gaps
	i := 0
	add := func(c callEnd) {
		start := prevEnd
		if len(gaps) > 0 && gaps[0].at == i {
			start = gaps[0].start
			keys.skipTo(gaps[0].draw)
			gaps = gaps[1:]
		}
		out = append(out, Record{Start: start, End: c.end, First: c.first, Key: keys.next(), Count: count, Target: target})
		prevEnd = c.end
		i++
	}
	for _, chunk := range w.done {
		for _, c := range chunk {
			add(c)
		}
	}
	for _, c := range w.cur {
		add(c)
	}
	w.done, w.cur, w.gaps = nil, nil, nil
	return out
}

// Run runs the load described by cfg and verifies what it got. It returns
// an error when the load could not run at all (a bad Config is a
// *UsageError, no successful call is ErrNoCalls); a verification failure
// is reported in Result.VerifyErr.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	res, _, _, err := run(ctx, cfg)
	return res, err
}

// run is Run, also returning the verified records (reordered by the
// verification) and the names of their keys.
func run(ctx context.Context, cfg Config) (*Result, []Record, *keyNames, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, nil, nil, err
	}
	callers, err := dial(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	defer func() {
		for _, cs := range callers {
			for _, c := range cs {
				_ = c.close()
			}
		}
	}()
	keys := cfg.keyNames()
	if cfg.WeakPrefetch > 0 {
		res, err := runPrefetch(ctx, cfg, callers, keys)
		return res, nil, keys, err
	}
	groups := len(callers)
	workers := make([]worker, cfg.Concurrency)
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
			// Each caller has its own context, as callers in a real
			// process do: one Done channel shared by thousands of
			// goroutines waiting in select makes its lock the most
			// contended in the process. The deadline is callCtx's, so
			// this costs no timer.
			wctx, wcancel := context.WithCancel(callCtx)
			defer wcancel()
			seq := newKeySeq(cfg, i)
			var buf []byte // the name of a fresh key is made here
			k := seq.next()
			// One clock reading per call: the end of a call is the start
			// of the next. It is taken before the next call is sent, which
			// is all the order check needs (an earlier start only widens
			// the call's interval), and halves the time spent reading the
			// clock.
			now := int64(time.Since(base))
			w.restart(now, 0)
			for ctx.Err() == nil {
				if now >= stopAt {
					return
				}
				first, err := c.next(wctx, keys.name(k, &buf), cfg.Count)
				now = int64(time.Since(base))
				k = seq.next()
				if err == nil {
					w.record(now, first)
					continue
				}
				if ctx.Err() != nil {
					return // the run was cancelled; not the target's failure
				}
				w.fail(err)
				// A target that fails at once (refused connection, no
				// leader) would otherwise be hammered in a tight loop.
				time.Sleep(time.Millisecond)
				now = int64(time.Since(base))
				w.restart(now, seq.draws-1) // k, drawn already
			}
		})
	}
	wg.Wait()
	loadCPU := cputime.Self() - cpuBefore
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, err
	}
	res := &Result{Config: cfg, Errors: map[codes.Code]int64{}, LoadCPU: loadCPU}
	total := 0
	for i := range workers {
		total += workers[i].n
		for code, n := range workers[i].errors {
			res.Errors[code] += n
		}
	}
	res.AllCalls = int64(total) + res.ErrorCount()
	res.Keys = int64(cfg.Keys)
	if cfg.KeyDist == KeyFresh {
		res.Keys = res.AllCalls
	}
	records := make([]Record, 0, total)
	for i := range workers {
		records = workers[i].appendTo(records, int32(cfg.Count), uint16(i%groups), newKeySeq(cfg, i))
	}
	if len(records) == 0 {
		return res, nil, keys, fmt.Errorf("%w: %s", ErrNoCalls, res.errorSummary())
	}
	res.measure(records, warmEnd, stopAt)
	res.Order = cfg.order()
	res.Verified = len(records)
	res.VerifyErr = verify(records, res.Order, keys, cfg.groups())
	return res, records, keys, nil
}

// dial makes Conns callers per group of callers (Config.groups): per
// target, or with MultiAddress Conns callers over all targets. Caller i
// of the run uses group i%groups.
func dial(cfg Config) ([][]caller, error) {
	mode := client.Strong
	if cfg.Mode == ModeWeak {
		mode = client.Weak
	}
	groups := cfg.groups()
	out := make([][]caller, len(groups))
	for t, addr := range groups {
		for range cfg.Conns {
			var c caller
			var err error
			if cfg.Backend == BackendEtcd {
				c, err = newEtcdCaller(addr)
			} else {
				c, err = newOrdinalCaller(addr, cfg.Store, mode, cfg.Mode == ModeStream, cfg.WeakPrefetch, cfg.ClientOptions)
			}
			if err != nil {
				for _, cs := range out {
					for _, c := range cs {
						_ = c.close()
					}
				}
				return nil, err
			}
			out[t] = append(out[t], c)
		}
	}
	return out, nil
}

// measure computes rates and latencies of the calls sent after the
// warm-up.
func (r *Result) measure(records []Record, warmEnd, stopAt int64) {
	lat := make([]int64, 0, len(records))
	lastEnd := stopAt
	for _, rec := range records {
		if rec.Start < warmEnd {
			continue
		}
		lat = append(lat, rec.End-rec.Start)
		r.Calls++
		r.IDs += int64(rec.Count)
		lastEnd = max(lastEnd, rec.End)
	}
	r.Elapsed = time.Duration(lastEnd - warmEnd)
	r.setLatencies(lat)
}

// setLatencies sets P50, P99, P999 and Max from lat, which it sorts.
func (r *Result) setLatencies(lat []int64) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(lat)))) - 1
		return time.Duration(lat[max(0, min(i, len(lat)-1))])
	}
	r.P50, r.P99, r.P999, r.Max = pct(0.50), pct(0.99), pct(0.999), time.Duration(lat[len(lat)-1])
}

func (r *Result) errorSummary() string { return codeCounts(r.Errors) }

// Summary is the one-line, machine-readable result: space-separated
// key=value pairs after "RESULT".
func (r *Result) Summary() string {
	c := r.Config
	verified := "ok"
	if r.VerifyErr != nil {
		verified = "FAILED"
	}
	label := c.Label
	if label == "" {
		label = "-"
	}
	errs := r.errorSummary()
	return fmt.Sprintf("RESULT label=%s backend=%s mode=%s targets=%s conc=%d count=%d keys=%d key_dist=%s duration_s=%g "+
		"calls=%d calls_per_s=%.0f ids_per_s=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f "+
		"errors=%d error_codes=%s verified_calls=%d verified=%s load_cpu_us_per_call=%.2f load_cpu_us_per_id=%.3f "+
		"multi_address=%t weak_prefetch=%d",
		label, c.Backend, c.Mode, strings.Join(c.Targets, ","), c.Concurrency, c.Count, r.Keys, c.KeyDist, r.Elapsed.Seconds(),
		r.Calls, r.CallsPerSec(), r.IDsPerSec(), us(r.P50), us(r.P99), us(r.P999), us(r.Max),
		r.ErrorCount(), errs, r.Verified, verified, r.LoadCPUPerCall(), r.LoadCPUPerCall()/float64(c.Count),
		c.MultiAddress, c.WeakPrefetch)
}

// LoadCPUPerCall is the load generator's CPU time per call in µs: LoadCPU
// over AllCalls (warm-up and failed calls included, as LoadCPU is), or 0
// when either is unknown. It covers the client library and the callers'
// record keeping, not the verification after the run.
func (r *Result) LoadCPUPerCall() float64 {
	if r.AllCalls == 0 || r.LoadCPU <= 0 {
		return 0
	}
	return us(r.LoadCPU) / float64(r.AllCalls)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Print writes the human-readable report followed by the RESULT line.
func (r *Result) Print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "ordinal-bench run: backend %s, mode %s, %d callers %s, %v measured after %v warm-up, %d id(s) per call, %s\n",
		c.Backend, c.Mode, c.Concurrency, c.clientText(), c.Duration, c.Warmup, c.Count, c.keysText())
	fmt.Fprintf(w, "  ids/s      %.0f\n", r.IDsPerSec())
	fmt.Fprintf(w, "  calls/s    %.0f (%d calls in %.2fs)\n", r.CallsPerSec(), r.Calls, r.Elapsed.Seconds())
	fmt.Fprintf(w, "  latency    p50 %v  p99 %v  p99.9 %v  max %v", round(r.P50), round(r.P99), round(r.P999), round(r.Max))
	if r.LatencySample > 1 {
		fmt.Fprintf(w, " (of 1 call in %d, timed on its own)", r.LatencySample)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  errors     %d (%s)\n", r.ErrorCount(), r.errorSummary())
	if cpu := r.LoadCPUPerCall(); cpu > 0 {
		fmt.Fprintf(w, "  load CPU   %.2f µs per call (%v over %d calls, warm-up included; verification excluded)\n", cpu, r.LoadCPU.Round(time.Millisecond), r.AllCalls)
	}
	switch {
	case r.VerifyErr != nil:
		fmt.Fprintf(w, "  verified   FAILED over %d calls: %v\n", r.Verified, r.VerifyErr)
	case r.Order == OrderPerCaller:
		fmt.Fprintf(w, "  verified   %d calls: %s\n", r.Verified, prefetchVerified)
	case c.KeyDist == KeyFresh:
		// Checks run per key, and no two calls share one.
		fmt.Fprintf(w, "  verified   %d calls: every ID positive and every call's key its own (%d keys made), so no ID twice and %s hold trivially\n",
			r.Verified, r.Keys, r.Order)
	default:
		fmt.Fprintf(w, "  verified   %d calls: no ID twice, %s\n", r.Verified, r.Order)
	}
	fmt.Fprintln(w, r.Summary())
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}
