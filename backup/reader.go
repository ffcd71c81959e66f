package backup

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/ordinal-dev/ordinal/fsm"
)

// Backup is a verified backup: its header and the state machine it holds.
type Backup struct {
	Header

	// State is the cluster's state machine as the backup holds it, for
	// reading only (HighWater, ForEachKey, Len, ClusterID).
	State *fsm.FSM

	// Size is the file's length in bytes.
	Size int64
}

// Read reads a whole backup from r and verifies it: the format, the state
// machine snapshot (restored into a fresh fsm.FSM, which checks its own
// CRC-32C) and the file's CRC-32C. It returns an error wrapping
// ErrNotBackup, ErrVersion or ErrCorrupt for a file it refuses, and read
// errors of r as they are.
//
// It reads r once, front to back, and holds the state in memory, as a node
// would.
func Read(r io.Reader) (*Backup, error) {
	hr := &hashReader{br: bufio.NewReaderSize(r, 64<<10)}
	b, err := read(hr)
	if err != nil {
		return nil, err
	}
	b.Size = hr.n
	return b, nil
}

func read(hr *hashReader) (*Backup, error) {
	var head [len(magic) + 1]byte
	if _, err := io.ReadFull(hr, head[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: the file is %d bytes long, shorter than any backup", ErrNotBackup, hr.n)
		}
		return nil, hr.readErr(err)
	}
	if string(head[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: it starts with %q, not %q", ErrNotBackup, head[:len(magic)], magic)
	}
	if v := head[len(magic)]; v != Version {
		return nil, fmt.Errorf("%w: the file is format version %d; this ordinal reads version %d (restore it with the ordinal that wrote it)", ErrVersion, v, Version)
	}
	b := &Backup{Header: Header{Version: Version}}
	p := &parser{hr: hr}
	b.ClusterID = p.string("cluster ID", fsm.MaxNodeFieldLen)
	b.Index = p.uvarint("index")
	b.Term = p.uvarint("term")
	b.TakenAt = p.time("time")
	b.Rates.Window = p.duration("rate window")
	b.Rates.Horizon = p.duration("rate horizon")
	b.Rates.Since = p.time("rates since")
	b.Rates.ClusterPeak = p.uvarint("cluster peak rate")
	b.Rates.Keys = p.rates()
	if p.err == nil && b.Rates.Window <= 0 {
		p.corrupt("the rate window is 0")
	}
	if p.err != nil {
		return nil, p.err
	}

	b.State = fsm.New(nil)
	chunks := &chunkReader{p: p}
	if err := b.State.Restore(io.NopCloser(chunks)); err != nil {
		if p.err != nil {
			return nil, p.err
		}
		return nil, fmt.Errorf("%w: the state machine snapshot in it: %w", ErrCorrupt, err)
	}
	if !chunks.done {
		p.corrupt("the state machine snapshot ends before its section does")
	}
	if p.err != nil {
		return nil, p.err
	}

	want := hr.crc
	var sum [4]byte
	if _, err := io.ReadFull(hr, sum[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: truncated: the checksum at offset %d is missing", ErrCorrupt, hr.n)
		}
		return nil, hr.readErr(err)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return nil, fmt.Errorf("%w: checksum mismatch: stored %08x, computed %08x over %d bytes", ErrCorrupt, got, want, hr.n-4)
	}
	if _, err := hr.ReadByte(); err == nil {
		return nil, fmt.Errorf("%w: trailing data after the checksum at offset %d", ErrCorrupt, hr.n-1)
	} else if !errors.Is(err, io.EOF) {
		return nil, hr.readErr(err)
	}
	if id := b.State.ClusterID(); id != b.ClusterID {
		return nil, fmt.Errorf("%w: the header names cluster %q, its state machine cluster %q", ErrCorrupt, b.ClusterID, id)
	}
	return b, nil
}

// hashReader reads through a buffer and folds every byte it returns into a
// CRC-32C, so that the checksum covers exactly what was consumed.
type hashReader struct {
	br  *bufio.Reader
	crc uint32
	n   int64
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.br.Read(p)
	h.crc = crc32.Update(h.crc, castagnoli, p[:n])
	h.n += int64(n)
	return n, err
}

func (h *hashReader) ReadByte() (byte, error) {
	c, err := h.br.ReadByte()
	if err == nil {
		h.crc = crc32.Update(h.crc, castagnoli, []byte{c})
		h.n++
	}
	return c, err
}

// readErr wraps an error of the underlying reader: the file may be fine
// and the disk or network at fault, so it is not reported as damage.
func (h *hashReader) readErr(err error) error {
	return fmt.Errorf("backup: read at offset %d: %w", h.n, err)
}

// parser reads the header's fields. The first error is sticky and turns
// later reads into no-ops, so fields are read straight through and the
// error checked once.
type parser struct {
	hr  *hashReader
	err error
}

// corrupt records a format error at the current offset.
func (p *parser) corrupt(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf("%w: offset %d: %s", ErrCorrupt, p.hr.n, fmt.Sprintf(format, args...))
	}
}

// fail records an error reading field: truncation is damage, anything else
// a read error.
func (p *parser) fail(field string, err error) {
	switch {
	case p.err != nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		p.corrupt("truncated reading %s", field)
	default:
		p.err = p.hr.readErr(err)
	}
}

// uvarint reads one shortest-form uvarint.
func (p *parser) uvarint(field string) uint64 {
	if p.err != nil {
		return 0
	}
	var buf [binary.MaxVarintLen64]byte
	for i := range buf {
		c, err := p.hr.ReadByte()
		if err != nil {
			p.fail(field, err)
			return 0
		}
		buf[i] = c
		if c < 0x80 {
			v, n := binary.Uvarint(buf[:i+1])
			if n <= 0 || (n > 1 && c == 0) {
				p.corrupt("%s: malformed varint", field)
				return 0
			}
			return v
		}
	}
	p.corrupt("%s: varint longer than 64 bits", field)
	return 0
}

// string reads a length-prefixed string of at most limit bytes.
func (p *parser) string(field string, limit int) string {
	n := p.uvarint(field)
	if p.err != nil {
		return ""
	}
	if n > uint64(limit) {
		p.corrupt("%s is %d bytes long, the limit is %d", field, n, limit)
		return ""
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(p.hr, b); err != nil {
		p.fail(field, err)
		return ""
	}
	return string(b)
}

// time reads Unix nanoseconds.
func (p *parser) time(field string) time.Time {
	v := p.uvarint(field)
	if p.err == nil && v > 1<<63-1 {
		p.corrupt("%s is out of range", field)
	}
	return time.Unix(0, int64(v)).UTC()
}

// duration reads nanoseconds.
func (p *parser) duration(field string) time.Duration {
	v := p.uvarint(field)
	if p.err == nil && v > 1<<63-1 {
		p.corrupt("%s is out of range", field)
	}
	return time.Duration(v)
}

// rates reads the per-key rates, which must be in strictly ascending
// order with a peak of at least 1.
func (p *parser) rates() []KeyRate {
	count := p.uvarint("rate count")
	if p.err == nil && count > maxRateKeys {
		p.corrupt("%d keys with rates, the limit is %d", count, maxRateKeys)
	}
	if p.err != nil {
		return nil
	}
	keys := make([]KeyRate, 0, min(count, 1<<16))
	for i := uint64(0); i < count && p.err == nil; i++ {
		var kr KeyRate
		kr.Key.Store = p.string("store of a rate", fsm.MaxStoreLen)
		kr.Key.Name = p.string("key of a rate", fsm.MaxKeyLen)
		kr.Peak = p.uvarint("peak rate")
		switch {
		case p.err != nil:
		case kr.Key.Name == "" || kr.Peak == 0:
			p.corrupt("rate %d: empty key or zero rate", i)
		case i > 0 && compareKeys(keys[len(keys)-1].Key, kr.Key) >= 0:
			p.corrupt("rate of key %q in store %q is out of order", kr.Key.Name, kr.Key.Store)
		}
		keys = append(keys, kr)
	}
	return keys
}

// chunkReader yields the payload of the snapshot section's chunks and
// reports io.EOF at the section's end marker.
type chunkReader struct {
	p    *parser
	left uint64 // unread bytes of the current chunk
	done bool   // the end marker was read
}

func (c *chunkReader) Read(b []byte) (int, error) {
	if c.p.err != nil {
		return 0, c.p.err
	}
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		n := c.p.uvarint("snapshot chunk length")
		switch {
		case c.p.err != nil:
			return 0, c.p.err
		case n == 0:
			c.done = true
			return 0, io.EOF
		case n > maxChunk:
			c.p.corrupt("snapshot chunk of %d bytes, the limit is %d", n, maxChunk)
			return 0, c.p.err
		}
		c.left = n
	}
	if uint64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.p.hr.Read(b)
	c.left -= uint64(n)
	if err != nil {
		if errors.Is(err, io.EOF) && c.left > 0 {
			c.p.corrupt("truncated inside the state machine snapshot")
			return n, c.p.err
		}
		if !errors.Is(err, io.EOF) {
			c.p.fail("snapshot", err)
			return n, c.p.err
		}
	}
	return n, nil
}
