// Package backup defines ordinal's backup file: a consistent copy of the
// cluster's state machine together with what a restore needs to hand out
// no ID again, namely when the copy was taken and how fast each key was
// reserving IDs at the time. It writes backups (Writer), reads and
// verifies them (Read), measures reservation rates on a running node
// (Rates) and computes how far a restore advances every key (Plan,
// Advancer).
//
// A backup is checksummed end to end: a CRC-32C over the whole file, on
// top of the state machine snapshot's own CRC-32C. Read refuses a file
// that fails either, and a format version it does not know. See DESIGN.md
// for the format, the rate measurement and the argument that a restore
// reissues no ID.
package backup

import (
	"errors"
	"hash/crc32"
	"time"

	"github.com/ordinal-dev/ordinal/fsm"
)

// File format, version 1. Integers are shortest-form uvarints and strings
// a uvarint length plus bytes, as in the state machine's own formats.
//
//	file     = magic:"ORDB" version:byte(1)
//	           cluster_id:string
//	           index:uvarint term:uvarint
//	           taken_at:uvarint                  Unix nanoseconds, UTC
//	           rates
//	           snapshot
//	           crc:uint32 big-endian             CRC-32C of every byte before it
//	rates    = window:uvarint horizon:uvarint    nanoseconds
//	           since:uvarint                     Unix nanoseconds
//	           cluster_peak:uvarint              IDs per second
//	           key_count:uvarint (store:string key:string peak:uvarint)*
//	                                             ascending (store, key); peak >= 1
//	snapshot = (length:uvarint bytes)* 0:uvarint  chunks of at most 1 MiB whose
//	                                             concatenation is an fsm snapshot
//
// The snapshot section is framed in chunks so that a backup streams: the
// leader writes it while the state machine persists, without knowing its
// length in advance.
const (
	magic = "ORDB"

	// Version is the format version Writer writes. Read accepts exactly
	// the versions it knows (only this one so far) and refuses others with
	// ErrVersion, so that an older ordinal never misreads a newer file.
	Version = 1

	// maxChunk is the largest snapshot chunk Writer writes and Read
	// accepts.
	maxChunk = 1 << 20

	// maxRateKeys bounds the per-key rates Read accepts, so a damaged
	// count cannot make it allocate much before the checksum is reached.
	// Rates tracks at most DefaultMaxRateKeys keys, far below it.
	maxRateKeys = 1 << 22
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// ErrNotBackup is returned by Read for a file that does not start like
	// an ordinal backup.
	ErrNotBackup = errors.New("backup: not an ordinal backup file")

	// ErrVersion is returned by Read for a backup of a format version this
	// ordinal does not know: a newer ordinal wrote it (or its version byte
	// is damaged). Restore it with the ordinal that wrote it.
	ErrVersion = errors.New("backup: unknown backup format version")

	// ErrCorrupt is returned by Read for a backup that is damaged:
	// truncated, failing its checksum or its snapshot's, or otherwise not
	// in the format. Nothing in it can be trusted.
	ErrCorrupt = errors.New("backup: the backup file is damaged")

	// ErrInvalidPlan is returned for a restore Plan that cannot be carried
	// out: conflicting modes, a safety factor below 1, or a backup taken
	// later than the restore's clock says it is now.
	ErrInvalidPlan = errors.New("backup: invalid restore plan")
)

// AllKeysFloor is the key whose high-water mark is the floor of every key
// of a cluster restored from a backup: keys created after the backup
// existed in the old cluster but not in the backup, so the restore cannot
// advance them one by one; instead the new cluster raises any key below
// this mark to it before reserving IDs of it (see backup/DESIGN.md, "Keys
// created after the backup"). It is an ordinary key in a store of its own, so
// snapshots, replication and later backups carry it with no format change.
var AllKeysFloor = fsm.Key{Store: "_ordinal", Name: "all-keys-floor"}

// SnowflakeTimeFloor is a restored cluster's floor of every Snowflake
// worker's reserved time (Unix milliseconds), as AllKeysFloor is of every
// counter: a worker whose time key the backup does not hold (one the old
// cluster created after the backup, or a new one) is raised to it before
// it reserves time, so that it never stamps a time the old cluster may
// have stamped under the same worker ID. It is not a worker's key (its
// name is not a number).
var SnowflakeTimeFloor = fsm.Key{Store: fsm.SnowflakeTimeStore, Name: "restored"}

// Header is what a backup records besides the state machine itself.
type Header struct {
	// Version is the file's format version (set by Read; Writer always
	// writes Version).
	Version int

	// ClusterID is the ID of the cluster the backup was taken from.
	ClusterID string

	// Index is the Raft index the backup reflects: every log entry up to
	// it is in the backup (a few later ones may be too). Term is the
	// leader's term when it took the backup.
	Index, Term uint64

	// TakenAt is when the leader started taking the backup (its wall
	// clock, UTC), before the barrier that makes the backup hold every
	// committed entry: every ID handed out before TakenAt is at or below
	// its key's high-water mark in the backup.
	TakenAt time.Time

	// Rates are the reservation rates the leader observed.
	Rates RateSummary
}

// RateSummary is how fast keys were reserving IDs when a backup was
// taken, as one node observed it (see Rates).
type RateSummary struct {
	// Window is the width of the intervals rates are counted over: a
	// rate is the most IDs reserved in one window, divided by its length.
	Window time.Duration

	// Horizon is how long a key keeps a rate of its own after its last
	// reservation. Keys without one fall back to ClusterPeak.
	Horizon time.Duration

	// Since is when the node started observing; reservations replayed
	// from its log that it made up to Horizon before count too.
	Since time.Time

	// ClusterPeak is the most IDs reserved per second, all keys together,
	// in any window since Since (rounded up).
	ClusterPeak uint64

	// Keys are the keys that reserved IDs within Horizon before the
	// backup, with their peak rates in IDs per second (rounded up),
	// sorted by store and key.
	Keys []KeyRate
}

// KeyRate is one key's peak reservation rate.
type KeyRate struct {
	Key fsm.Key
	// Peak is the most IDs the key reserved per second in any window while
	// it was observed, rounded up; at least 1.
	Peak uint64
}

// compareKeys orders keys by store, then name.
func compareKeys(a, b fsm.Key) int {
	switch {
	case a.Store < b.Store:
		return -1
	case a.Store > b.Store:
		return 1
	case a.Name < b.Name:
		return -1
	case a.Name > b.Name:
		return 1
	}
	return 0
}
