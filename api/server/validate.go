package server

import (
	"strings"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/runtimev1"
	"github.com/ordinal-dev/ordinal/fsm"
)

// DefaultStore is the store a request with an empty store_name uses.
const DefaultStore = "default"

// ReservedStorePrefix starts the names of the stores ordinal keeps its own
// marks in (a restored cluster's floor of every key, see package backup);
// no call may name one. It is the state machine's (fsm.ReservedStorePrefix).
const ReservedStorePrefix = fsm.ReservedStorePrefix

// DefaultMaxCount is the largest block GetNextIds hands out by default.
const DefaultMaxCount = 1_000_000

func keyOf(store, name string) (fsm.Key, error) {
	switch {
	case name == "":
		return fsm.Key{}, invalid("key is required")
	case len(name) > fsm.MaxKeyLen:
		return fsm.Key{}, invalid("key is %d bytes long; the limit is %d", len(name), fsm.MaxKeyLen)
	case len(store) > fsm.MaxStoreLen:
		return fsm.Key{}, invalid("store_name is %d bytes long; the limit is %d", len(store), fsm.MaxStoreLen)
	case strings.HasPrefix(store, ReservedStorePrefix):
		return fsm.Key{}, invalid("store_name %q: names starting with %q are ordinal's own", store, ReservedStorePrefix)
	case store == "":
		store = DefaultStore
	}
	return fsm.Key{Store: store, Name: name}, nil
}

// modeOf maps ordinal's AutoIncrement to a mode. Its numbers are Layotto's
// (0 WEAK, 1 STRONG) plus an explicit WEAK: AUTO_INCREMENT_UNSPECIFIED (0,
// also what missing options mean) is WEAK, as in Layotto, and so is
// AUTO_INCREMENT_WEAK (2). Any other value is InvalidArgument.
func modeOf(increment ordinalv1.SequencerOptions_AutoIncrement) (alloc.Mode, error) {
	switch increment {
	case ordinalv1.SequencerOptions_AUTO_INCREMENT_UNSPECIFIED, ordinalv1.SequencerOptions_AUTO_INCREMENT_WEAK:
		return alloc.Weak, nil
	case ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG:
		return alloc.Strong, nil
	}
	return 0, invalid("unknown increment %d: use AUTO_INCREMENT_UNSPECIFIED (0) or AUTO_INCREMENT_WEAK (2) for WEAK, AUTO_INCREMENT_STRONG (1) for STRONG", increment)
}

// incrementOfLayotto maps Layotto's AutoIncrement, WEAK (0, also what
// missing options mean) or STRONG (1), to ordinal's. Layotto has no other
// value, so any other, ordinal's AUTO_INCREMENT_WEAK (2) included, is
// InvalidArgument, as it always was on Runtime/GetNextId.
func incrementOfLayotto(increment runtimev1.SequencerOptions_AutoIncrement) (ordinalv1.SequencerOptions_AutoIncrement, error) {
	switch increment {
	case runtimev1.SequencerOptions_WEAK:
		return ordinalv1.SequencerOptions_AUTO_INCREMENT_UNSPECIFIED, nil
	case runtimev1.SequencerOptions_STRONG:
		return ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG, nil
	}
	return 0, invalid("unknown increment %d: use WEAK (0) or STRONG (1)", increment)
}

func (s *Server) countOf(count int64) (uint64, error) {
	if count <= 0 || uint64(count) > s.maxCount {
		return 0, invalid("count is %d; it must be between 1 and %d", count, s.maxCount)
	}
	return uint64(count), nil
}
