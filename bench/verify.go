package bench

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Record is one successful call: who sent it where, when, and the block of
// IDs it got. Failed calls are not recorded: they returned nothing, so
// they constrain nothing. The struct is 40 bytes and holds no pointers, so
// that millions of them cost little memory and no GC scanning. Records
// exist only after the run: during it a worker keeps 16 bytes per call.
type Record struct {
	Start int64 // ns since the run started, taken before the call was sent
	End   int64 // ns since the run started, taken after the answer arrived
	First int64 // first ID of the answer
	// Key is the index of the key the call asked for: of the run's keys,
	// or of its fresh keys (keyNames).
	Key   uint64
	Count int32 // IDs in the answer: First .. First+Count-1
	// Target is the index of the address the call was sent to.
	Target uint16
}

func (r Record) last() int64 { return r.First + int64(r.Count) - 1 }

// Order is the ordering guarantee Verify checks besides uniqueness.
type Order int

const (
	// OrderStrong is linearizability for a counter that may skip values:
	// if call A returned before call B was sent, B's IDs are above A's,
	// whichever targets served them.
	OrderStrong Order = iota

	// OrderPerTarget is the WEAK guarantee: the same, but only between
	// calls served by the same target.
	OrderPerTarget

	// OrderPerCaller is what one client with WithWeakPrefetch promises
	// besides uniqueness: its IDs of a key increase in the order it hands
	// them out, so each caller's, whose calls follow one another, increase.
	// Checked by runPrefetch as the calls return, not by Verify.
	OrderPerCaller

	// OrderNone checks uniqueness alone: WEAK calls through one client
	// over several nodes (Config.MultiAddress), where which node served a
	// call, and so which order applies, is not known.
	OrderNone
)

func (o Order) String() string {
	switch o {
	case OrderPerTarget:
		return "per-target order (WEAK)"
	case OrderPerCaller:
		return "per-caller order (WEAK through one prefetching client)"
	case OrderNone:
		return "no order (WEAK through one client over several nodes: the node of each call is not known)"
	}
	return "real-time order (STRONG)"
}

// Verify checks records: every ID of a key was handed out at most once,
// every ID is positive, and the IDs respect order. It reorders records in
// place and runs in O(n log n).
//
// The order check is the exact criterion of internal/history (a history of
// a counter that may skip values is linearizable iff no ID is shared and
// every call's IDs lie above those of every call that returned before it
// was sent), computed with one sort instead of two: with the calls of a
// group sorted by ID, call B violates it iff some call with higher IDs
// ended before B started, so one backward sweep keeping the earliest end
// among higher IDs decides. Timestamps are taken before sending and after
// receiving, so a reported violation is real, never an artefact of timing.
func Verify(records []Record, order Order) error {
	return verify(records, order, nil, nil)
}

// verify is Verify with the names of the keys and targets, for messages.
func verify(records []Record, order Order, keys *keyNames, targets []string) error {
	n := namer{keys, targets}
	// Uniqueness across targets, per key.
	slices.SortFunc(records, func(a, b Record) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.First, b.First))
	})
	for i, r := range records {
		if r.Count < 1 || r.First < 1 {
			return fmt.Errorf("key %s: a call via %s returned the block %d (count %d): IDs and counts must be positive",
				n.key(r.Key), n.target(r.Target), r.First, r.Count)
		}
		if i > 0 && records[i-1].Key == r.Key && r.First <= records[i-1].last() {
			p := records[i-1]
			return fmt.Errorf("DUPLICATE: key %s: ids %d..%d (via %s, sent at %v) overlap %d..%d (via %s, sent at %v)",
				n.key(r.Key), r.First, r.last(), n.target(r.Target), time.Duration(r.Start),
				p.First, p.last(), n.target(p.Target), time.Duration(p.Start))
		}
	}
	switch order {
	case OrderNone:
		return nil
	case OrderPerCaller:
		return fmt.Errorf("verify: %s is checked as the calls return, not from records", order)
	case OrderPerTarget:
		slices.SortFunc(records, func(a, b Record) int {
			return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Target, b.Target), cmp.Compare(a.First, b.First))
		})
	}
	sameGroup := func(a, b Record) bool {
		return a.Key == b.Key && (order == OrderStrong || a.Target == b.Target)
	}
	for end := len(records); end > 0; {
		start := end - 1
		for start > 0 && sameGroup(records[start-1], records[end-1]) {
			start--
		}
		if err := checkOrder(records[start:end], order, n); err != nil {
			return err
		}
		end = start
	}
	return nil
}

// checkOrder checks one group sorted by First: no call got IDs below those
// of a call that had returned before it was sent.
func checkOrder(group []Record, order Order, n namer) error {
	earliest := -1 // index of the earliest-ending call with higher IDs
	for i := len(group) - 1; i >= 0; i-- {
		b := group[i]
		if earliest >= 0 && group[earliest].End < b.Start {
			a := group[earliest]
			return fmt.Errorf("ORDER (%s): key %s: a call via %s sent at %v got %d..%d, but a call via %s that had returned at %v got %d..%d",
				order, n.key(b.Key), n.target(b.Target), time.Duration(b.Start), b.First, b.last(),
				n.target(a.Target), time.Duration(a.End), a.First, a.last())
		}
		if earliest < 0 || b.End < group[earliest].End {
			earliest = i
		}
	}
	return nil
}

// namer names keys and targets by index in messages.
type namer struct {
	keys    *keyNames
	targets []string
}

func (n namer) key(i uint64) string {
	if n.keys != nil && (n.keys.names == nil || i < uint64(len(n.keys.names))) {
		var buf []byte
		return fmt.Sprintf("%q", n.keys.name(i, &buf))
	}
	return fmt.Sprintf("#%d", i)
}

func (n namer) target(i uint16) string {
	if int(i) < len(n.targets) {
		return n.targets[i]
	}
	return fmt.Sprintf("target #%d", i)
}
