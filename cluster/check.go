package cluster

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"hash/fnv"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"

	"github.com/ordinal-dev/ordinal/fsm"
)

// The check of a data directory (see DESIGN.md, "Checking the data
// directory"): what Node.New runs before it hands raft.db to Raft, and what
// `ordinal check` runs on a stopped node. It never lets a damaged file
// crash the process: the parts of raft.db that bbolt would trust blindly
// (meta pages, file size, freelist page, the offsets in every tree page)
// are read with plain reads first, and bbolt then reads the file only
// inside readSafely, where a memory fault on the mapped file or a bbolt
// assertion becomes an error.

var (
	// ErrDamaged is wrapped (through a *DamageError) by every error that
	// says a node's data directory is damaged: its Raft log, a log entry,
	// a snapshot, or its identity file. The node must not serve from it;
	// DamageError's message says what to do.
	ErrDamaged = errors.New("cluster: the data directory is damaged")

	// ErrDataDirInUse is returned by CheckDataDir when another process
	// holds raft.db's lock: a node runs on the directory. Checking a
	// running node's files would race with its writes; stop it first.
	ErrDataDirInUse = errors.New("cluster: the data directory is in use")
)

// DamageError says which file of a node's data directory is damaged and
// how, and what to do about it. It wraps ErrDamaged and the cause.
type DamageError struct {
	// DataDir is the node's data directory.
	DataDir string
	// File is the damaged file or directory.
	File string
	// Index is the index of the damaged log entry, or 0 when the damage is
	// not in one entry.
	Index uint64
	// Err is what is wrong.
	Err error
}

// Error names what is damaged, how, and what to do.
func (e *DamageError) Error() string {
	what := e.File + " is damaged"
	if e.Index != 0 {
		what = fmt.Sprintf("the log entry at index %d (in %s) is damaged", e.Index, e.File)
	}
	return fmt.Sprintf("%s: %v: %s", what, e.Err, damageRemedy(e.DataDir))
}

// Unwrap returns ErrDamaged and the cause.
func (e *DamageError) Unwrap() []error { return []error{ErrDamaged, e.Err} }

// damageRemedy is what an operator does about a damaged data directory.
func damageRemedy(dataDir string) string {
	return "stop this node, wipe its data directory " + dataDir + " and start it again with --join; " +
		"the cluster re-admits it as a new member (if it is the cluster's only node, do not wipe it: " +
		"its data is the only record of the IDs handed out, so restore it from a backup instead)"
}

// CheckOptions configure CheckDataDir.
type CheckOptions struct {
	// VerifySnapshots reads every snapshot in full: Raft's CRC-64 of its
	// state and the state machine's own format and CRC-32C. Without it,
	// only the newest snapshot's CRC-64 and every snapshot's metadata are
	// checked, which is what a node does when it starts: the snapshot Raft
	// restores is parsed and verified by the state machine anyway, and a
	// failure stops the node with a DamageError.
	VerifySnapshots bool

	// LockTimeout bounds how long CheckDataDir waits for raft.db's file
	// lock, which a running node holds. Default 1s.
	LockTimeout time.Duration
}

// CheckReport says what CheckDataDir looked at.
type CheckReport struct {
	// DataDir is the directory checked.
	DataDir string
	// NodeID is the node ID node.json records, "" if it has none.
	NodeID string
	// LogFile is raft.db's path and LogFileSize its size; 0 if there is
	// no raft.db yet (a node that never started).
	LogFile     string
	LogFileSize int64
	// PageSize and Pages describe raft.db: its bbolt page size and how many
	// pages its last transaction uses.
	PageSize int
	Pages    uint64
	// Entries is how many log entries raft.db holds, FirstIndex and
	// LastIndex their range (all 0 when it holds none), and Commands how
	// many of them are state machine commands.
	Entries               uint64
	FirstIndex, LastIndex uint64
	Commands              uint64
	// CurrentTerm is the Raft term raft.db records.
	CurrentTerm uint64
	// Snapshots describes the snapshots, newest first.
	Snapshots []SnapshotReport
	// Warnings are findings that are not damage, such as a meta page left
	// invalid by a crash during a commit (bbolt then uses the other one).
	Warnings []string
	// Elapsed is how long the check took.
	Elapsed time.Duration
}

// SnapshotReport describes one snapshot CheckDataDir looked at.
type SnapshotReport struct {
	// ID, Index, Term and Size are from the snapshot's metadata.
	ID          string
	Index, Term uint64
	Size        int64
	// CRCChecked says the state file's CRC-64 was verified.
	CRCChecked bool
	// Parsed says the state machine read the snapshot in full and
	// verified its CRC-32C; Keys and AppliedIndex are then what it holds.
	Parsed       bool
	Keys         int
	AppliedIndex uint64
}

// Names inside a data directory that the check knows, besides raftDBFile
// and identityFile. The snapshot ones are hashicorp/raft's
// FileSnapshotStore layout.
const (
	snapshotsDir      = "snapshots"
	snapshotMetaFile  = "meta.json"
	snapshotStateFile = "state.bin"
	snapshotTmpSuffix = ".tmp"
)

// maxCheckErrors bounds how many of bbolt's consistency errors a
// DamageError quotes.
const maxCheckErrors = 5

// CheckDataDir verifies the data directory of a node that is not running:
// raft.db's bbolt structure (meta pages, file size, freelist, every page
// reachable from the root, bbolt's own consistency check), every log entry
// (decoded as Raft decodes it, with every state machine command decoded
// and its checksum verified), the stable store's values, the snapshots'
// metadata and CRC-64 (see CheckOptions), and that the log continues where
// the newest snapshot ends. It never crashes on a damaged file.
//
// Damage yields a *DamageError (wrapping ErrDamaged) that names the file,
// and the log entry when the damage is in one, and says what to do. A
// directory a running node holds yields ErrDataDirInUse. Other errors
// (permissions, I/O) are returned as they are. A directory without
// raft.db, as a node leaves it before its first start, is fine.
func CheckDataDir(dir string, opts CheckOptions) (*CheckReport, error) {
	start := time.Now()
	if opts.LockTimeout == 0 {
		opts.LockTimeout = boltOpenTimeout
	}
	rep := &CheckReport{DataDir: dir, LogFile: filepath.Join(dir, raftDBFile)}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("check data directory: %w", err)
	}
	id, err := readIdentity(dir)
	if err != nil && isPathError(err) {
		return nil, fmt.Errorf("check data directory: %w", err)
	}
	if err != nil {
		return nil, &DamageError{DataDir: dir, File: filepath.Join(dir, identityFile), Err: err}
	}
	rep.NodeID = id.NodeID
	if err := checkRaftDB(rep, opts); err != nil {
		return nil, err
	}
	if err := checkSnapshots(rep, opts); err != nil {
		return nil, err
	}
	if err := checkContinuity(rep); err != nil {
		return nil, err
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// damaged returns a DamageError about raft.db.
func (rep *CheckReport) damaged(index uint64, format string, args ...any) error {
	return &DamageError{DataDir: rep.DataDir, File: rep.LogFile, Index: index, Err: fmt.Errorf(format, args...)}
}

// checkRaftDB checks raft.db in two passes: plain reads of what bbolt
// trusts on open, then, on a read-only handle, every key and value (every
// log entry decoded and checked) and bbolt's consistency check.
func checkRaftDB(rep *CheckReport, opts CheckOptions) error {
	st, err := os.Stat(rep.LogFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("check %s: %w", rep.LogFile, err)
	}
	rep.LogFileSize = st.Size()
	if rep.LogFileSize == 0 {
		// bbolt initialises an empty file on open; a node that crashed
		// between creating raft.db and writing its first pages leaves one.
		return nil
	}
	m, err := readBoltHeader(rep)
	if err != nil {
		return err
	}
	rep.PageSize, rep.Pages = int(m.pageSize), m.pgid
	return walkBolt(rep, opts)
}

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common), version 2:
// every page starts with a 16-byte header (id uint64, flags uint16, count
// uint16, overflow uint32); a meta page's body is magic, version, page
// size and flags (uint32 each), the root bucket (root pgid, sequence),
// the freelist pgid, the high-water pgid, the txid and an FNV-64a checksum
// of the fields before it, all in the machine's byte order.
const (
	boltPageHeaderSize = 16
	boltMetaSize       = 64
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltMetaPageFlag   = 0x04
	boltFreelistFlag   = 0x10
	boltNoFreelist     = ^uint64(0)
	boltMinPageSize    = 1024
	boltMaxPageSize    = 1 << 16
)

// boltMeta is one parsed meta page.
type boltMeta struct {
	pageSize                 uint32
	root, freelist, pgid, id uint64
	txid                     uint64
}

// parseBoltMeta parses the meta page at the start of page and reports why
// bbolt would refuse it.
func parseBoltMeta(page []byte) (boltMeta, error) {
	if len(page) < boltPageHeaderSize+boltMetaSize {
		return boltMeta{}, errors.New("shorter than a meta page")
	}
	ne := binary.NativeEndian
	hdr, b := page[:boltPageHeaderSize], page[boltPageHeaderSize:boltPageHeaderSize+boltMetaSize]
	m := boltMeta{
		id:       ne.Uint64(hdr[0:]),
		pageSize: ne.Uint32(b[8:]),
		root:     ne.Uint64(b[16:]),
		freelist: ne.Uint64(b[32:]),
		pgid:     ne.Uint64(b[40:]),
		txid:     ne.Uint64(b[48:]),
	}
	h := fnv.New64a()
	h.Write(b[:56])
	switch {
	case ne.Uint32(b[0:]) != boltMagic:
		return m, errors.New("not a bbolt meta page (bad magic)")
	case ne.Uint32(b[4:]) != boltVersion:
		return m, fmt.Errorf("unsupported bbolt version %d", ne.Uint32(b[4:]))
	case h.Sum64() != ne.Uint64(b[56:]):
		return m, errors.New("checksum mismatch")
	case ne.Uint16(hdr[8:])&boltMetaPageFlag == 0:
		return m, errors.New("not flagged as a meta page")
	}
	return m, nil
}

// readBoltHeader reads, with plain reads, what bbolt would otherwise trust
// blindly: that a valid meta page exists, that the file holds every page
// it counts (a file cut short faults when bbolt touches the missing pages
// through its mapping), that the freelist page is one, and that every
// tree page and element lies inside the file (treeWalker). It returns the
// meta page bbolt uses.
func readBoltHeader(rep *CheckReport) (boltMeta, error) {
	f, err := os.Open(rep.LogFile)
	if err != nil {
		return boltMeta{}, fmt.Errorf("check %s: %w", rep.LogFile, err)
	}
	defer f.Close()
	size := rep.LogFileSize
	readPage := func(off int64, n int) ([]byte, error) {
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			return nil, err
		}
		return b, nil
	}

	// Meta page 0 sits at offset 0 and gives the page size; meta page 1
	// sits one page further.
	var metas [2]boltMeta
	var errs [2]error
	if size < boltMinPageSize*2 {
		return boltMeta{}, rep.damaged(0, "the file is %d bytes, too short for bbolt's two meta pages", size)
	}
	p0, err := readPage(0, boltPageHeaderSize+boltMetaSize)
	if err != nil {
		return boltMeta{}, fmt.Errorf("check %s: %w", rep.LogFile, err)
	}
	metas[0], errs[0] = parseBoltMeta(p0)
	pageSize := int64(metas[0].pageSize)
	if errs[0] != nil || !validPageSize(pageSize) {
		// Like bbolt, look for meta page 1 at every plausible page size.
		pageSize = 0
		for ps := int64(boltMinPageSize); ps <= boltMaxPageSize && ps*2 <= size; ps *= 2 {
			if p1, err := readPage(ps, boltPageHeaderSize+boltMetaSize); err == nil {
				if m, err := parseBoltMeta(p1); err == nil && int64(m.pageSize) == ps {
					pageSize = ps
					break
				}
			}
		}
		if pageSize == 0 {
			return boltMeta{}, rep.damaged(0, "neither meta page is valid (meta page 0: %v)", errs[0])
		}
	}
	if size < 2*pageSize {
		return boltMeta{}, rep.damaged(0, "the file is %d bytes, shorter than its two %d-byte meta pages", size, pageSize)
	}
	p1, err := readPage(pageSize, boltPageHeaderSize+boltMetaSize)
	if err != nil {
		return boltMeta{}, fmt.Errorf("check %s: %w", rep.LogFile, err)
	}
	metas[1], errs[1] = parseBoltMeta(p1)
	for i := range metas {
		if errs[i] == nil && (metas[i].pageSize != uint32(pageSize) || metas[i].id != uint64(i)) {
			errs[i] = fmt.Errorf("inconsistent (page size %d, page id %d)", metas[i].pageSize, metas[i].id)
		}
	}

	// bbolt uses the valid meta page with the higher transaction ID.
	use := 0
	switch {
	case errs[0] != nil && errs[1] != nil:
		return boltMeta{}, rep.damaged(0, "neither meta page is valid (meta page 0: %v; meta page 1: %v)", errs[0], errs[1])
	case errs[0] != nil:
		use = 1
	case errs[1] == nil && metas[1].txid > metas[0].txid:
		use = 1
	}
	if other := 1 - use; errs[other] != nil {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("meta page %d of %s is invalid (%v); bbolt uses meta page %d, as after a crash during a commit", other, rep.LogFile, errs[other], use))
	}
	m := metas[use]
	switch {
	case m.pgid < 3:
		return boltMeta{}, rep.damaged(0, "meta page %d counts %d pages, fewer than a bbolt file has", use, m.pgid)
	case m.pgid > uint64(size)/uint64(pageSize):
		return boltMeta{}, rep.damaged(0, "the file is %d bytes but its last transaction uses %d pages of %d bytes (%d bytes): the end of the file is missing",
			size, m.pgid, pageSize, m.pgid*uint64(pageSize))
	case m.root < 2 || m.root >= m.pgid:
		return boltMeta{}, rep.damaged(0, "meta page %d puts the root bucket at page %d, outside 2..%d", use, m.root, m.pgid-1)
	case m.freelist == boltNoFreelist:
		return boltMeta{}, rep.damaged(0, "meta page %d records no freelist, which raft-boltdb always writes", use)
	case m.freelist < 2 || m.freelist >= m.pgid:
		return boltMeta{}, rep.damaged(0, "meta page %d puts the freelist at page %d, outside 2..%d", use, m.freelist, m.pgid-1)
	}

	// The freelist page: bbolt panics on one that is not, and reads as many
	// IDs as its count says.
	hdr, err := readPage(int64(m.freelist)*pageSize, boltPageHeaderSize+8)
	if err != nil {
		return boltMeta{}, fmt.Errorf("check %s: %w", rep.LogFile, err)
	}
	ne := binary.NativeEndian
	flags, count, overflow := ne.Uint16(hdr[8:]), uint64(ne.Uint16(hdr[10:])), uint64(ne.Uint32(hdr[12:]))
	head := uint64(0)
	if count == 0xFFFF { // the real count is the first element
		count, head = ne.Uint64(hdr[boltPageHeaderSize:]), 1
	}
	switch {
	case ne.Uint64(hdr[0:]) != m.freelist:
		return boltMeta{}, rep.damaged(0, "the freelist page %d identifies itself as page %d", m.freelist, ne.Uint64(hdr[0:]))
	case flags != boltFreelistFlag:
		return boltMeta{}, rep.damaged(0, "page %d is not a freelist page (flags %#x)", m.freelist, flags)
	case overflow >= m.pgid-m.freelist:
		return boltMeta{}, rep.damaged(0, "the freelist at page %d runs %d pages past the last page %d", m.freelist, overflow, m.pgid-1)
	case count > m.pgid || (count+head)*8 > (overflow+1)*uint64(pageSize)-boltPageHeaderSize:
		return boltMeta{}, rep.damaged(0, "the freelist at page %d counts %d free pages, more than fit", m.freelist, count)
	}
	w := &treeWalker{rep: rep, f: f, pageSize: pageSize, pgid: m.pgid, seen: make(map[uint64]bool)}
	if err := w.page(m.root, 0, "the meta page"); err != nil {
		return boltMeta{}, err
	}
	return m, nil
}

// bbolt's tree pages: after the page header come count elements of 16
// bytes. A branch element is pos, ksize (uint32) and the child's pgid; a
// leaf element is flags, pos, ksize, vsize (uint32). pos is the offset of
// the key from the element itself; a leaf's value follows its key. A leaf
// element flagged as a bucket holds the bucket's root pgid and sequence
// (and, for an inline bucket, root 0 and the bucket's page after them).
const (
	boltBranchPageFlag = 0x01
	boltLeafPageFlag   = 0x02
	boltBucketLeafFlag = 0x01
	boltElementSize    = 16
	boltBucketHdrSize  = 16
	boltMaxTreeDepth   = 64
)

// treeWalker reads every branch and leaf page reachable from the root
// bucket with plain reads, and checks that each is what its parent says
// it is and that every element's key and value lie inside its page. bbolt
// trusts these offsets: a cursor follows a branch page's child pgids but
// reads its keys only when seeking, while tx.Check reads every key, on a
// goroutine where a bad offset (one flipped bit in a pos field) would
// crash the process. After this walk, nothing bbolt reads lies outside the
// file.
type treeWalker struct {
	rep      *CheckReport
	f        *os.File
	pageSize int64
	pgid     uint64
	seen     map[uint64]bool
}

// page walks the tree page id, which parent points to.
func (w *treeWalker) page(id uint64, depth int, parent string) error {
	damaged := func(format string, args ...any) error {
		return w.rep.damaged(0, "page %d (from %s): %s", id, parent, fmt.Sprintf(format, args...))
	}
	switch {
	case depth > boltMaxTreeDepth:
		return damaged("the tree is deeper than %d levels", boltMaxTreeDepth)
	case id < 2 || id >= w.pgid:
		return damaged("outside the pages in use (2..%d)", w.pgid-1)
	case w.seen[id]:
		return damaged("referenced twice")
	}
	w.seen[id] = true
	hdr := make([]byte, boltPageHeaderSize)
	if _, err := w.f.ReadAt(hdr, int64(id)*w.pageSize); err != nil {
		return fmt.Errorf("check %s: %w", w.rep.LogFile, err)
	}
	ne := binary.NativeEndian
	flags, count, overflow := ne.Uint16(hdr[8:]), int(ne.Uint16(hdr[10:])), uint64(ne.Uint32(hdr[12:]))
	switch {
	case ne.Uint64(hdr[0:]) != id:
		return damaged("it identifies itself as page %d", ne.Uint64(hdr[0:]))
	case flags != boltBranchPageFlag && flags != boltLeafPageFlag:
		return damaged("not a branch or leaf page (flags %#x)", flags)
	case overflow >= w.pgid-id:
		return damaged("its %d overflow pages run past the last page %d", overflow, w.pgid-1)
	}
	for i := uint64(1); i <= overflow; i++ {
		if w.seen[id+i] {
			return damaged("its overflow page %d is used twice", id+i)
		}
		w.seen[id+i] = true
	}
	b := make([]byte, int64(overflow+1)*w.pageSize)
	if _, err := w.f.ReadAt(b, int64(id)*w.pageSize); err != nil {
		return fmt.Errorf("check %s: %w", w.rep.LogFile, err)
	}
	if boltPageHeaderSize+count*boltElementSize > len(b) {
		return damaged("%d elements do not fit", count)
	}
	for i := range count {
		at := boltPageHeaderSize + i*boltElementSize
		e := b[at : at+boltElementSize]
		if flags == boltBranchPageFlag {
			pos, ksize := uint64(ne.Uint32(e[0:])), uint64(ne.Uint32(e[4:]))
			if uint64(at)+pos+ksize > uint64(len(b)) {
				return damaged("the key of element %d lies outside the page", i)
			}
			if err := w.page(ne.Uint64(e[8:]), depth+1, fmt.Sprintf("branch page %d", id)); err != nil {
				return err
			}
			continue
		}
		eflags, pos, ksize, vsize := ne.Uint32(e[0:]), uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		end := uint64(at) + pos + ksize + vsize
		if end > uint64(len(b)) {
			return damaged("the key or value of element %d lies outside the page", i)
		}
		if eflags&boltBucketLeafFlag == 0 {
			continue
		}
		if vsize < boltBucketHdrSize {
			return damaged("bucket element %d is %d bytes, shorter than a bucket header", i, vsize)
		}
		if root := ne.Uint64(b[end-vsize:]); root != 0 {
			key := b[uint64(at)+pos : uint64(at)+pos+ksize]
			if err := w.page(root, depth+1, fmt.Sprintf("bucket %q", key)); err != nil {
				return err
			}
		}
	}
	return nil
}

func validPageSize(ps int64) bool {
	return ps >= boltMinPageSize && ps <= boltMaxPageSize && bits.OnesCount64(uint64(ps)) == 1
}

// readSafely runs fn, which reads a memory-mapped file, so that it cannot
// crash the process: a memory fault (SIGBUS on a page the file no longer
// backs, SIGSEGV on a wild pointer) becomes a panic on this goroutine
// (debug.SetPanicOnFault), and every panic (those, bbolt's assertions, an
// index out of range) becomes an error. fn must release what it holds with
// defer, since it may be unwound at any point.
func readSafely(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if fault, ok := r.(interface{ Addr() uintptr }); ok {
			err = fmt.Errorf("reading it failed: memory fault at address %#x (%v): the file is shorter than its pages say, or a page points outside it", fault.Addr(), r)
			return
		}
		err = fmt.Errorf("reading it failed: %v", r)
	}()
	return fn()
}

// Raft's buckets and stable-store keys in raft.db (raft-boltdb's layout and
// hashicorp/raft's key names).
var (
	boltLogsBucket = []byte("logs")
	boltConfBucket = []byte("conf")
	stableUint64s  = []string{"CurrentTerm", "LastVoteTerm"}
)

// walkBolt opens raft.db read-only and reads every page reachable from its
// root, every key and every value, then runs bbolt's consistency check. It
// checks every log entry (walkLogs) and that the stable store's numbers
// are numbers.
func walkBolt(rep *CheckReport, opts CheckOptions) error {
	var checkErrs []string
	var index uint64 // the log entry being read, for an error that unwinds
	err := readSafely(func() error {
		// PreLoadFreelist reads the freelist here, inside readSafely;
		// otherwise tx.Check would read it first, on a goroutine of its
		// own where a panic would end the process.
		db, err := bbolt.Open(rep.LogFile, 0o600, &bbolt.Options{ReadOnly: true, Timeout: opts.LockTimeout, PreLoadFreelist: true})
		if errors.Is(err, bbolt.ErrTimeout) {
			return fmt.Errorf("%w: another process holds the lock on %s (is another ordinal using this data directory?)", ErrDataDirInUse, rep.LogFile)
		}
		if err != nil && !isPathError(err) {
			return rep.damaged(0, "bbolt cannot open it: %w", err)
		}
		if err != nil {
			return fmt.Errorf("check %s: %w", rep.LogFile, err)
		}
		defer db.Close()
		tx, err := db.Begin(false)
		if err != nil {
			return fmt.Errorf("check %s: %w", rep.LogFile, err)
		}
		defer tx.Rollback()
		if err := walkLogs(rep, tx, &index); err != nil {
			return err
		}
		if err := walkRest(rep, tx); err != nil {
			return err
		}
		// tx.Check reads on a goroutine of its own, where a panic would
		// end the process. Every page and offset it reads, readBoltHeader
		// has checked with plain reads and the walk above has read
		// through bbolt, so it meets nothing that could panic.
		for err := range tx.Check() {
			if len(checkErrs) < maxCheckErrors {
				checkErrs = append(checkErrs, err.Error())
			}
		}
		return nil
	})
	switch {
	case err == nil && len(checkErrs) > 0:
		return rep.damaged(0, "bbolt's consistency check failed: %s", strings.Join(checkErrs, "; "))
	case err != nil && !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrDataDirInUse) && !isPathError(err):
		return rep.damaged(index, "%w", err)
	}
	return err
}

// isPathError reports whether err is an operating system error about a
// file (permission denied, I/O), which is not evidence of damage.
func isPathError(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe)
}

// walkLogs reads every entry of the log: the keys must be contiguous
// indexes, and every value must decode as Raft will read it and pass
// checkEntry. It decodes with the msgpack codec and handle raft-boltdb's
// GetLog uses, in one pass over a cursor with one decoder, which is four
// to eight times faster than a GetLog per entry (see DESIGN.md).
// *index is the entry being decoded, for errors that unwind.
func walkLogs(rep *CheckReport, tx *bbolt.Tx, index *uint64) error {
	logs := tx.Bucket(boltLogsBucket)
	if logs == nil {
		return rep.damaged(0, "it has no %q bucket", boltLogsBucket)
	}
	dec := newLogDecoder()
	c := logs.Cursor()
	var prev uint64
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			return rep.damaged(0, "a log key is %d bytes, not 8 (after index %d)", len(k), prev)
		}
		if v == nil {
			return rep.damaged(0, "the log holds a bucket after index %d", prev)
		}
		i := binary.BigEndian.Uint64(k)
		switch {
		case rep.Entries == 0:
			rep.FirstIndex = i
		case i != prev+1:
			return rep.damaged(0, "the log jumps from index %d to %d: entries are missing", prev, i)
		}
		*index = i // while this entry is decoded; not while the cursor moves
		var l raft.Log
		if err := decodeLog(dec, v, &l); err != nil {
			return rep.damaged(i, "it does not decode: %w", err)
		}
		if err := checkEntry(&l, i); err != nil {
			return rep.damaged(i, "%w", err)
		}
		*index = 0
		if l.Type == raft.LogCommand {
			rep.Commands++
		}
		prev = i
		rep.Entries++
	}
	rep.LastIndex = prev
	return nil
}

// newLogDecoder returns a decoder for decodeLog.
func newLogDecoder() *codec.Decoder {
	return codec.NewDecoderBytes(nil, &codec.MsgpackHandle{})
}

// decodeLog decodes a value of raft.db's logs bucket into l, as
// raft-boltdb's GetLog does (msgpack, a zero MsgpackHandle), reusing dec.
func decodeLog(dec *codec.Decoder, v []byte, l *raft.Log) error {
	dec.ResetBytes(v)
	return dec.Decode(l)
}

// walkRest reads every other bucket, nested ones included, and checks the
// stable store's numbers, which Raft reads as 8-byte big-endian integers
// (a shorter value would crash it).
func walkRest(rep *CheckReport, tx *bbolt.Tx) error {
	conf := tx.Bucket(boltConfBucket)
	if conf == nil {
		return rep.damaged(0, "it has no %q bucket", boltConfBucket)
	}
	for _, key := range stableUint64s {
		if v := conf.Get([]byte(key)); v != nil && len(v) != 8 {
			return rep.damaged(0, "the stable store's %s is %d bytes, not 8", key, len(v))
		}
	}
	if v := conf.Get([]byte("CurrentTerm")); len(v) == 8 {
		rep.CurrentTerm = binary.BigEndian.Uint64(v)
	}
	var walk func(b *bbolt.Bucket) error
	walk = func(b *bbolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			touch(k)
			if v != nil {
				touch(v)
				return nil
			}
			return walk(b.Bucket(k))
		})
	}
	return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
		if string(name) == string(boltLogsBucket) {
			return nil
		}
		return walk(b)
	})
}

// touchSink keeps touch's reads from being optimised away.
var touchSink atomic.Uint32

// touch reads every byte of b, so that a value on a page the file no longer
// backs faults here, inside readSafely.
func touch(b []byte) {
	var x byte
	for _, c := range b {
		x ^= c
	}
	touchSink.Add(uint32(x))
}

// checkEntry checks one decoded log entry stored under index.
func checkEntry(l *raft.Log, index uint64) error {
	if l.Index != index {
		return fmt.Errorf("it is stored under index %d but records index %d", index, l.Index)
	}
	switch l.Type {
	case raft.LogCommand:
		if _, err := fsm.Decode(l.Data); err != nil {
			return err
		}
	case raft.LogConfiguration:
		// DecodeConfiguration panics on bad input; readSafely turns that
		// into an error naming this entry.
		raft.DecodeConfiguration(l.Data)
	case raft.LogNoop, raft.LogBarrier, raft.LogAddPeerDeprecated, raft.LogRemovePeerDeprecated:
	default:
		return fmt.Errorf("unknown log entry type %d", l.Type)
	}
	return nil
}

// snapshotMeta is the meta.json of hashicorp/raft's FileSnapshotStore.
type snapshotMeta struct {
	raft.SnapshotMeta
	CRC []byte
}

// checkSnapshots checks the snapshot store: every snapshot's metadata
// (Raft silently ignores a snapshot whose meta.json it cannot read, and
// would restore an older one, or none, instead), the size and CRC-64 of
// the newest one's state (every one's with VerifySnapshots), and with
// VerifySnapshots the state machine's parse of each.
func checkSnapshots(rep *CheckReport, opts CheckOptions) error {
	root := filepath.Join(rep.DataDir, snapshotsDir)
	entries, err := os.ReadDir(root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("check %s: %w", root, err)
	}
	var metas []snapshotMeta
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if strings.HasSuffix(e.Name(), snapshotTmpSuffix) {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s is a snapshot that was never completed; Raft ignores it", filepath.Join(root, e.Name())))
			continue
		}
		dir := filepath.Join(root, e.Name())
		m, err := readSnapshotMeta(dir)
		if err != nil {
			return &DamageError{DataDir: rep.DataDir, File: filepath.Join(dir, snapshotMetaFile), Err: err}
		}
		if m.ID != e.Name() {
			return &DamageError{DataDir: rep.DataDir, File: filepath.Join(dir, snapshotMetaFile), Err: fmt.Errorf("it names snapshot %q", m.ID)}
		}
		metas = append(metas, m)
	}
	// Newest first, as Raft orders them.
	slices.SortFunc(metas, func(a, b snapshotMeta) int {
		switch {
		case a.Term != b.Term:
			return cmpDesc(a.Term, b.Term)
		case a.Index != b.Index:
			return cmpDesc(a.Index, b.Index)
		}
		return strings.Compare(b.ID, a.ID)
	})
	for i, m := range metas {
		sr := SnapshotReport{ID: m.ID, Index: m.Index, Term: m.Term, Size: m.Size}
		if i == 0 || opts.VerifySnapshots {
			if err := checkSnapshotState(rep, &sr, m, opts.VerifySnapshots); err != nil {
				return err
			}
		}
		rep.Snapshots = append(rep.Snapshots, sr)
	}
	return nil
}

func cmpDesc(a, b uint64) int {
	if a > b {
		return -1
	}
	return 1
}

// readSnapshotMeta reads and sanity-checks a snapshot's meta.json.
func readSnapshotMeta(dir string) (snapshotMeta, error) {
	var m snapshotMeta
	b, err := os.ReadFile(filepath.Join(dir, snapshotMetaFile))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("it does not parse: %w", err)
	}
	switch {
	case m.Version < raft.SnapshotVersionMin || m.Version > raft.SnapshotVersionMax:
		return m, fmt.Errorf("unsupported snapshot version %d", m.Version)
	case len(m.CRC) != 8:
		return m, fmt.Errorf("its CRC is %d bytes, not 8", len(m.CRC))
	case m.Index == 0 || m.Term == 0 || m.Size < 0:
		return m, fmt.Errorf("index %d, term %d, size %d are not a snapshot's", m.Index, m.Term, m.Size)
	}
	return m, nil
}

// checkSnapshotState checks a snapshot's state.bin against its metadata:
// size and CRC-64, and with parse the state machine's reading of it.
func checkSnapshotState(rep *CheckReport, sr *SnapshotReport, m snapshotMeta, parse bool) error {
	path := filepath.Join(rep.DataDir, snapshotsDir, m.ID, snapshotStateFile)
	damaged := func(format string, args ...any) error {
		return &DamageError{DataDir: rep.DataDir, File: path, Err: fmt.Errorf(format, args...)}
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return damaged("it is missing")
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	defer f.Close()
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if n != m.Size {
		return damaged("it is %d bytes, its metadata says %d", n, m.Size)
	}
	if got := h.Sum(nil); string(got) != string(m.CRC) {
		return damaged("CRC-64 mismatch: meta.json says %x, the file has %x", m.CRC, got)
	}
	sr.CRCChecked = true
	if !parse {
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	sm := fsm.New(nil)
	if err := sm.Restore(io.NopCloser(f)); err != nil {
		var fe *fsm.FailedError
		if errors.As(err, &fe) {
			err = fe.Err
		}
		return damaged("%w", err)
	}
	if sm.AppliedIndex() > m.Index {
		return damaged("it holds the state at index %d, after the index %d its metadata gives", sm.AppliedIndex(), m.Index)
	}
	sr.Parsed, sr.Keys, sr.AppliedIndex = true, sm.Len(), sm.AppliedIndex()
	return nil
}

// checkContinuity checks that the log continues where the newest snapshot
// ends. A gap would leave Raft without the entries between them: it
// panics when it looks for the first one.
func checkContinuity(rep *CheckReport) error {
	var newest uint64
	if len(rep.Snapshots) > 0 {
		newest = rep.Snapshots[0].Index
	}
	switch {
	case rep.Entries > 0 && rep.FirstIndex > newest+1:
		return rep.damaged(0, "its log starts at index %d, but the newest snapshot ends at index %d: entries %d to %d are missing",
			rep.FirstIndex, newest, newest+1, rep.FirstIndex-1)
	case rep.Entries == 0 && rep.LogFileSize == 0 && newest > 0:
		return rep.damaged(0, "it is empty or missing, but the directory holds snapshots up to index %d", newest)
	}
	return nil
}

// checkOnOpen checks the data directory of node n before New hands it to
// Raft. Tests of what a node does when damage shows up later, at run time,
// replace it to let a damaged entry through.
var checkOnOpen = func(n *Node) error {
	rep, err := CheckDataDir(n.cfg.DataDir, CheckOptions{LockTimeout: boltOpenTimeout})
	if err != nil {
		return err
	}
	for _, w := range rep.Warnings {
		n.logger.Warn("data directory check: " + w)
	}
	if rep.LogFileSize > 0 {
		n.logger.Info("checked the data directory", "data_dir", rep.DataDir, "entries", rep.Entries,
			"first_index", rep.FirstIndex, "last_index", rep.LastIndex, "snapshots", len(rep.Snapshots), "took", rep.Elapsed)
	}
	return nil
}

// Failed returns a channel that is closed when the node stops itself
// because its data turned out damaged while it ran: a log entry or
// snapshot its state machine could not apply. Raft is shut down then, so
// the node neither serves nor votes; Err says why. The process should exit
// with that error.
func (n *Node) Failed() <-chan struct{} { return n.failedCh }

// Err returns nil while the node has found no damage, and the
// *DamageError (wrapping ErrDamaged) it stopped itself with once it has.
// It says so from the moment the state machine stops, before Raft is shut
// down.
func (n *Node) Err() error {
	select {
	case <-n.failedCh:
		return n.failure
	default:
	}
	if n.fsm.Err() != nil {
		return n.failFromFSM()
	}
	return nil
}

// fail stops the node with err, unless it stopped already, and returns the
// error it stopped with.
func (n *Node) fail(err error) error {
	n.failOnce.Do(func() {
		// Log first: whoever watches Failed may end the process at once.
		n.logger.Error("stopping: this node's data is damaged", "error", err)
		n.failure = err
		close(n.failedCh)
	})
	return n.Err()
}

// failFromFSM stops the node if its state machine has stopped, with an
// error naming the damaged entry or the snapshot, and returns that error;
// it returns nil while the state machine runs.
func (n *Node) failFromFSM() error {
	var fe *fsm.FailedError
	if !errors.As(n.fsm.Err(), &fe) {
		return nil
	}
	derr := &DamageError{DataDir: n.cfg.DataDir, File: filepath.Join(n.cfg.DataDir, raftDBFile), Index: fe.Index, Err: fe.Err}
	if fe.Snapshot {
		derr = &DamageError{DataDir: n.cfg.DataDir, File: filepath.Join(n.cfg.DataDir, snapshotsDir),
			Err: fmt.Errorf("a snapshot could not be restored: %w", fe.Err)}
	}
	return n.fail(derr)
}

// watchFSM stops the node when its state machine stops. The state machine
// then lacks an entry (or a snapshot) that the rest of the cluster
// applied, so its high-water marks may be too low: the node must not lead,
// hand out IDs, answer leadership proofs or take a snapshot that would
// compact the damaged entry away. Shutting Raft down does all of that.
func (n *Node) watchFSM() {
	defer n.wg.Done()
	select {
	case <-n.closeCh:
		return
	case <-n.fsm.Failed():
	}
	n.failFromFSM()
	n.startMu.Lock()
	r := n.raft
	n.startMu.Unlock()
	if r == nil {
		return // Raft did not start: startRaft returns the error
	}
	if err := r.Shutdown().Error(); err != nil {
		n.logger.Warn("shutting raft down after finding damage", "error", err)
	}
}
