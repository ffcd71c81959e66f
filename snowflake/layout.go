package snowflake

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ordinal-dev/ordinal/keyspace"
)

// Layout is how a Snowflake ID packs its three parts into the 63 bits of a
// non-negative int64, most significant first:
//
//	time (TimeBits) | worker (WorkerBits) | sequence (SeqBits)
//
// time counts Units since Epoch, worker is the serving node's worker ID and
// sequence numbers the IDs of one key within one unit on one worker. IDs of
// one key therefore sort by time first.
type Layout struct {
	// TimeBits, WorkerBits and SeqBits are the widths of the three parts;
	// each at least 1, together at most 63. More time bits last longer
	// (2^TimeBits Units after Epoch); more worker bits allow more nodes
	// over the cluster's life; more sequence bits allow more IDs of one key
	// per Unit on one node before the node borrows the next Unit.
	TimeBits, WorkerBits, SeqBits uint8
	// Unit is the length of one time step: a whole number of milliseconds.
	Unit time.Duration
	// Epoch is time zero, a whole number of milliseconds since the Unix
	// epoch.
	Epoch time.Time
}

// DefaultEpoch is the start of time of both preset layouts, Layotto's
// default startTime: 2022-01-01T00:00:00Z.
var DefaultEpoch = time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)

// Seconds is Layotto's snowflake layout and the default: 28 bits of
// seconds since 2022-01-01 (which run out in 2030), 22 bits of worker ID
// and 13 of sequence (8192 IDs per key per second per node).
var Seconds = Layout{TimeBits: 28, WorkerBits: 22, SeqBits: 13, Unit: time.Second, Epoch: DefaultEpoch}

// Milliseconds is a layout like Meituan Leaf's: 41 bits of milliseconds
// since 2022-01-01 (69 years), 10 bits of worker ID (1024 workers) and 12 of
// sequence (4096 IDs per key per millisecond per node).
var Milliseconds = Layout{TimeBits: 41, WorkerBits: 10, SeqBits: 12, Unit: time.Millisecond, Epoch: DefaultEpoch}

// ErrLayout is wrapped by every error ParseLayout and Layout.Validate
// return.
var ErrLayout = errors.New("snowflake: invalid layout")

// ParseLayout reads a layout: "seconds" (or "layotto"), "milliseconds" (or
// "leaf"), or a comma-separated list of
//
//	time=BITS,worker=BITS,seq=BITS[,unit=DURATION][,epoch=DATE]
//
// where DURATION is a Go duration of whole milliseconds (default 1s) and
// DATE is RFC 3339 or YYYY-MM-DD (default 2022-01-01), as String writes it.
func ParseLayout(s string) (Layout, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "seconds", "layotto", "":
		return Seconds, nil
	case "milliseconds", "leaf", "ms":
		return Milliseconds, nil
	}
	l := Layout{Unit: time.Second, Epoch: DefaultEpoch}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Layout{}, fmt.Errorf("%w: %q: want NAME=VALUE, or one of seconds, milliseconds", ErrLayout, part)
		}
		if seen[name] {
			return Layout{}, fmt.Errorf("%w: %s given twice", ErrLayout, name)
		}
		seen[name] = true
		var err error
		switch name {
		case "time":
			l.TimeBits, err = parseBits(value)
		case "worker":
			l.WorkerBits, err = parseBits(value)
		case "seq":
			l.SeqBits, err = parseBits(value)
		case "unit":
			l.Unit, err = time.ParseDuration(value)
		case "epoch":
			l.Epoch, err = parseDate(value)
		default:
			return Layout{}, fmt.Errorf("%w: unknown part %q (time, worker, seq, unit, epoch)", ErrLayout, name)
		}
		if err != nil {
			return Layout{}, fmt.Errorf("%w: %s=%s: %w", ErrLayout, name, value, err)
		}
	}
	for _, need := range []string{"time", "worker", "seq"} {
		if !seen[need] {
			return Layout{}, fmt.Errorf("%w: %q lacks %s=BITS", ErrLayout, s, need)
		}
	}
	return l, l.Validate()
}

func parseBits(v string) (uint8, error) {
	n, err := strconv.ParseUint(v, 10, 8)
	return uint8(n), err
}

func parseDate(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	return time.Parse(time.DateOnly, v)
}

// Validate reports whether l can be used: every part at least one bit, at
// most 63 bits in all, a Unit of whole milliseconds and an Epoch after
// 1970 in whole milliseconds.
func (l Layout) Validate() error {
	switch {
	case l.TimeBits == 0 || l.WorkerBits == 0 || l.SeqBits == 0:
		return fmt.Errorf("%w: time, worker and seq need at least one bit each (have %d, %d, %d)", ErrLayout, l.TimeBits, l.WorkerBits, l.SeqBits)
	case int(l.TimeBits)+int(l.WorkerBits)+int(l.SeqBits) > 63:
		return fmt.Errorf("%w: %d+%d+%d bits exceed the 63 of a non-negative int64", ErrLayout, l.TimeBits, l.WorkerBits, l.SeqBits)
	case l.WorkerBits > 31:
		return fmt.Errorf("%w: at most 31 worker bits (have %d)", ErrLayout, l.WorkerBits)
	case l.Unit < time.Millisecond || l.Unit%time.Millisecond != 0:
		return fmt.Errorf("%w: unit %s is not a whole number of milliseconds", ErrLayout, l.Unit)
	case l.Epoch.UnixMilli() < 0 || l.Epoch.Nanosecond()%int(time.Millisecond) != 0:
		return fmt.Errorf("%w: epoch %s is before 1970 or not a whole millisecond", ErrLayout, l.Epoch.Format(time.RFC3339Nano))
	}
	return nil
}

// String writes l in the form ParseLayout reads, the same for equal
// layouts: the canonical text the cluster records for a store.
func (l Layout) String() string {
	return fmt.Sprintf("time=%d,worker=%d,seq=%d,unit=%s,epoch=%s",
		l.TimeBits, l.WorkerBits, l.SeqBits, l.Unit, l.Epoch.UTC().Format(time.RFC3339Nano))
}

// MaxWorker is the largest worker ID the layout holds.
func (l Layout) MaxWorker() uint64 { return 1<<l.WorkerBits - 1 }

// MaxSeq is the largest sequence number: a key gets MaxSeq+1 IDs per Unit
// on one node.
func (l Layout) MaxSeq() uint64 { return 1<<l.SeqBits - 1 }

// MaxTick is the last time step the layout holds.
func (l Layout) MaxTick() uint64 { return 1<<l.TimeBits - 1 }

// End is when the layout's time runs out: the start of the step after
// MaxTick.
func (l Layout) End() time.Time { return l.Epoch.Add(time.Duration(l.MaxTick()+1) * l.Unit) }

func (l Layout) unitMs() uint64  { return uint64(l.Unit / time.Millisecond) }
func (l Layout) epochMs() uint64 { return uint64(l.Epoch.UnixMilli()) }

// TickAt returns the time step that holds ms (Unix milliseconds); 0 for any
// time before Epoch.
func (l Layout) TickAt(ms uint64) uint64 {
	if ms < l.epochMs() {
		return 0
	}
	return (ms - l.epochMs()) / l.unitMs()
}

// TickFrom returns the first time step that starts at or after ms.
func (l Layout) TickFrom(ms uint64) uint64 {
	if ms <= l.epochMs() {
		return 0
	}
	u := l.unitMs()
	return (ms - l.epochMs() + u - 1) / u
}

// StartMs returns when step tick starts, in Unix milliseconds.
func (l Layout) StartMs(tick uint64) uint64 { return l.epochMs() + tick*l.unitMs() }

// Compose packs an ID. The parts must fit their widths.
func (l Layout) Compose(tick, worker, seq uint64) uint64 {
	return tick<<(l.WorkerBits+l.SeqBits) | worker<<l.SeqBits | seq
}

// Parts is a Snowflake ID taken apart.
type Parts struct {
	// Tick is the time step; Time when it starts.
	Tick uint64
	Time time.Time
	// Worker is the worker ID of the node that handed the ID out.
	Worker uint64
	// Seq is the sequence number within the step.
	Seq uint64
}

// Decode takes id apart. It fails for a negative int64 (an id above
// keyspace.MaxID), which no layout produces.
func (l Layout) Decode(id uint64) (Parts, error) {
	if id > keyspace.MaxID {
		return Parts{}, fmt.Errorf("snowflake: %d is not a non-negative int64", id)
	}
	tick := id >> (l.WorkerBits + l.SeqBits)
	return Parts{
		Tick:   tick,
		Time:   time.UnixMilli(int64(l.StartMs(tick))).UTC(),
		Worker: id >> l.SeqBits & l.MaxWorker(),
		Seq:    id & l.MaxSeq(),
	}, nil
}
