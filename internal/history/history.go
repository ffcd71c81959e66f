// Package history records the ID calls a test makes, with their real-time
// intervals, and checks the guarantees against the record: no ID twice,
// WEAK IDs increasing per node, and STRONG histories linearizable (checked
// with porcupine).
package history

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Op is one recorded call.
type Op struct {
	Client int    // the calling goroutine; calls of one client never overlap
	Node   string // the node the call was sent to
	Key    string
	Strong bool
	Call   int64 // ns since the recorder started, when the call was sent
	Return int64 // ns when the answer came back
	First  int64 // first ID of the answer
	Count  int64 // how many IDs the answer holds
	Err    error // non-nil: the call failed or its outcome is unknown
}

// Recorder collects Ops from concurrent clients.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Do runs call, timing it, and records the outcome.
func (r *Recorder) Do(op Op, call func() (first, count int64, err error)) Op {
	op.Call = int64(time.Since(r.start))
	op.First, op.Count, op.Err = call()
	op.Return = int64(time.Since(r.start))
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
	return op
}

// Ops returns a copy of what was recorded.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Succeeded counts the calls that returned IDs.
func Succeeded(ops []Op) int {
	n := 0
	for _, op := range ops {
		if op.Err == nil {
			n++
		}
	}
	return n
}

// CheckUnique fails if any ID was handed out twice for a key, whatever the
// modes and nodes.
func CheckUnique(ops []Op) error {
	type span struct {
		first, last int64
		op          Op
	}
	byKey := map[string][]span{}
	for _, op := range ops {
		if op.Err == nil {
			byKey[op.Key] = append(byKey[op.Key], span{op.First, op.First + op.Count - 1, op})
		}
	}
	for key, spans := range byKey {
		sort.Slice(spans, func(i, j int) bool { return spans[i].first < spans[j].first })
		for i := 1; i < len(spans); i++ {
			if spans[i].first <= spans[i-1].last {
				return fmt.Errorf("key %s: ids %d..%d (%s via %s) overlap %d..%d (%s via %s)", key,
					spans[i].first, spans[i].last, mode(spans[i].op), spans[i].op.Node,
					spans[i-1].first, spans[i-1].last, mode(spans[i-1].op), spans[i-1].op.Node)
			}
		}
	}
	return nil
}

func mode(op Op) string {
	if op.Strong {
		return "STRONG"
	}
	return "WEAK"
}

// CheckWeakPerNode fails if a node answered a WEAK call with an ID lower
// than one it returned for a call that had already completed.
func CheckWeakPerNode(ops []Op) error {
	groups := map[string][]Op{}
	for _, op := range ops {
		if !op.Strong && op.Err == nil {
			k := op.Node + "\x00" + op.Key
			groups[k] = append(groups[k], op)
		}
	}
	for _, g := range groups {
		if err := checkRealTimeOrder(g); err != nil {
			return fmt.Errorf("WEAK via %s: %w", g[0].Node, err)
		}
	}
	return nil
}

// checkRealTimeOrder checks that every op returned IDs above those of every
// op that returned before it was called.
func checkRealTimeOrder(ops []Op) error {
	byReturn := append([]Op(nil), ops...)
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	byCall := append([]Op(nil), ops...)
	sort.Slice(byCall, func(i, j int) bool { return byCall[i].Call < byCall[j].Call })
	var maxDone int64
	var maxOp Op
	j := 0
	for _, op := range byCall {
		for ; j < len(byReturn) && byReturn[j].Return < op.Call; j++ {
			if last := byReturn[j].First + byReturn[j].Count - 1; last > maxDone {
				maxDone, maxOp = last, byReturn[j]
			}
		}
		if op.First <= maxDone {
			return fmt.Errorf("key %s: call at %v got %d, but a call that returned at %v already got up to %d",
				op.Key, time.Duration(op.Call), op.First, time.Duration(maxOp.Return), maxDone)
		}
	}
	return nil
}

// ErrNotLinearizable is returned by CheckStrong for a history no
// sequential order explains.
var ErrNotLinearizable = errors.New("history: STRONG history is not linearizable")

type output struct {
	first, count int64
	unknown      bool
}

// strongModel is a counter per key that may skip values: each call's IDs
// must lie above every ID handed out before it in the linearization.
var strongModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(string)
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return int64(0) },
	Step: func(state, _ interface{}, out interface{}) (bool, interface{}) {
		last, o := state.(int64), out.(output)
		if o.unknown {
			return true, last // it may have taken IDs nobody saw: a gap
		}
		if o.first <= last {
			return false, last
		}
		return true, o.first + o.count - 1
	},
	DescribeOperation: func(in, out interface{}) string {
		o := out.(output)
		if o.unknown {
			return fmt.Sprintf("next(%s) -> ?", in)
		}
		return fmt.Sprintf("next(%s) -> %d..%d", in, o.first, o.first+o.count-1)
	},
	DescribeState: func(state interface{}) string { return fmt.Sprintf("last=%d", state) },
}

// CheckStrong checks the STRONG calls for linearizability. Calls that
// failed are indeterminate: they may have taken effect at any time after
// they were sent.
//
// Two checks run. Porcupine searches for a linearization of the recorded
// history; on failure it writes its visualisation to vizPath (when not
// empty). Its search is exponential in the number of overlapping calls
// (every subset of concurrent calls, taken in ID order, is a valid partial
// linearization), so it is given a time budget. The second check is exact
// and O(n log n) for this object: a history of a counter that may skip
// values is linearizable if and only if no two calls share an ID and every
// call's IDs are above those of every call that returned before it was
// sent — then ordering the calls by ID is a linearization, and if two
// calls violate real-time order no linearization exists. Failed calls
// return nothing, so they constrain nothing. When porcupine runs out of
// time, the exact check decides.
func CheckStrong(ops []Op, timeout time.Duration, vizPath string) error {
	var strong []Op
	for _, op := range ops {
		if op.Strong {
			strong = append(strong, op)
		}
	}
	exact := CheckUnique(strong)
	for _, ops := range byKey(succeeded(strong)) {
		exact = errors.Join(exact, checkRealTimeOrder(ops))
	}
	result, info := porcupine.CheckOperationsVerbose(strongModel, porcupineHistory(strong), timeout)
	switch {
	case result == porcupine.Illegal:
		return fmt.Errorf("%w: %w", ErrNotLinearizable, visualize(info, vizPath, exact))
	case exact != nil:
		return fmt.Errorf("%w: %w", ErrNotLinearizable, exact)
	}
	return nil
}

// byKey groups ops by key: each key is an independent counter.
func byKey(ops []Op) map[string][]Op {
	out := map[string][]Op{}
	for _, op := range ops {
		out[op.Key] = append(out[op.Key], op)
	}
	return out
}

func succeeded(ops []Op) []Op {
	var out []Op
	for _, op := range ops {
		if op.Err == nil {
			out = append(out, op)
		}
	}
	return out
}

func porcupineHistory(ops []Op) []porcupine.Operation {
	history := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		p := porcupine.Operation{ClientId: op.Client, Input: op.Key, Call: op.Call, Return: op.Return,
			Output: output{first: op.First, count: op.Count}}
		if op.Err != nil {
			p.Output, p.Return = output{unknown: true}, math.MaxInt64
		}
		history = append(history, p)
	}
	return history
}

// visualize writes porcupine's visualisation and returns an error that
// names it, joined with the exact check's finding.
func visualize(info porcupine.LinearizationInfo, path string, exact error) error {
	if path == "" {
		return exact
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return errors.Join(exact, err)
	}
	if err := porcupine.VisualizePath(strongModel, info, path); err != nil {
		return errors.Join(exact, err)
	}
	return errors.Join(exact, fmt.Errorf("porcupine visualisation: %s", path))
}

// CheckAll runs every check and joins their errors.
func CheckAll(ops []Op, vizPath string) error {
	return errors.Join(CheckUnique(ops), CheckWeakPerNode(ops), CheckStrong(ops, 5*time.Second, vizPath))
}
