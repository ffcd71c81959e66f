package backup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/ordinal-dev/ordinal/fsm"
)

// Writer writes one backup file. NewWriter writes the header; the state
// machine snapshot is then written through Write, as fsm's Persist does;
// Close ends the file with its checksum. Nothing is buffered beyond one
// frame's length prefix: every Write reaches the underlying writer before
// it returns.
type Writer struct {
	w      io.Writer
	crc    uint32
	n      int64
	err    error // sticky: the first write error
	closed bool
}

// errClosed is returned by Write and Close after Close.
var errClosed = errors.New("backup: writer is closed")

// NewWriter writes h (with Version, whatever h.Version says) to w and
// returns a Writer for the snapshot that follows. Rates in h are written
// in canonical order (sorted by store and key); h is not modified.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	keys := slices.Clone(h.Rates.Keys)
	slices.SortFunc(keys, func(a, b KeyRate) int { return compareKeys(a.Key, b.Key) })
	for i := 1; i < len(keys); i++ {
		if compareKeys(keys[i-1].Key, keys[i].Key) == 0 {
			return nil, fmt.Errorf("backup: key %q of store %q has two rates", keys[i].Key.Name, keys[i].Key.Store)
		}
	}
	b := make([]byte, 0, 64+len(h.ClusterID)+len(keys)*32)
	b = append(b, magic...)
	b = append(b, Version)
	b = appendString(b, h.ClusterID)
	b = binary.AppendUvarint(b, h.Index)
	b = binary.AppendUvarint(b, h.Term)
	b = binary.AppendUvarint(b, uint64(h.TakenAt.UnixNano()))
	r := h.Rates
	b = binary.AppendUvarint(b, uint64(r.Window))
	b = binary.AppendUvarint(b, uint64(r.Horizon))
	b = binary.AppendUvarint(b, uint64(r.Since.UnixNano()))
	b = binary.AppendUvarint(b, r.ClusterPeak)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k.Key.Store)
		b = appendString(b, k.Key.Name)
		b = binary.AppendUvarint(b, k.Peak)
	}
	bw := &Writer{w: w}
	bw.write(b)
	if bw.err != nil {
		return nil, bw.err
	}
	return bw, nil
}

// checkHeader refuses a header Read would refuse, so that Writer never
// writes a file that cannot be restored.
func checkHeader(h Header) error {
	switch {
	case len(h.ClusterID) > fsm.MaxNodeFieldLen:
		return fmt.Errorf("backup: cluster ID is %d bytes, the limit is %d", len(h.ClusterID), fsm.MaxNodeFieldLen)
	case h.TakenAt.UnixNano() <= 0 || h.Rates.Since.UnixNano() < 0:
		return fmt.Errorf("backup: time %v or %v is before 1970", h.TakenAt, h.Rates.Since)
	case h.Rates.Window <= 0 || h.Rates.Horizon < 0:
		return fmt.Errorf("backup: rate window %v must be positive and horizon %v not negative", h.Rates.Window, h.Rates.Horizon)
	case len(h.Rates.Keys) > maxRateKeys:
		return fmt.Errorf("backup: %d keys with rates, the limit is %d", len(h.Rates.Keys), maxRateKeys)
	}
	for _, k := range h.Rates.Keys {
		switch {
		case len(k.Key.Store) > fsm.MaxStoreLen || len(k.Key.Name) > fsm.MaxKeyLen || k.Key.Name == "":
			return fmt.Errorf("backup: rate of key %q in store %q: key or store name empty or too long", k.Key.Name, k.Key.Store)
		case k.Peak == 0:
			return fmt.Errorf("backup: rate of key %q in store %q is 0; keys without reservations carry no rate", k.Key.Name, k.Key.Store)
		}
	}
	return nil
}

// Write writes p as part of the state machine snapshot, in chunks of at
// most 1 MiB. It implements io.Writer.
func (bw *Writer) Write(p []byte) (int, error) {
	if bw.closed {
		return 0, errClosed
	}
	written := 0
	var prefix [binary.MaxVarintLen64]byte
	for len(p) > 0 && bw.err == nil {
		n := min(len(p), maxChunk)
		bw.write(prefix[:binary.PutUvarint(prefix[:], uint64(n))])
		bw.write(p[:n])
		if bw.err == nil {
			written += n
		}
		p = p[n:]
	}
	return written, bw.err
}

// Close ends the snapshot and writes the file's checksum. It does not
// close the underlying writer.
func (bw *Writer) Close() error {
	if bw.closed {
		return errClosed
	}
	bw.closed = true
	bw.write([]byte{0})
	crc := bw.crc
	bw.write(binary.BigEndian.AppendUint32(nil, crc))
	return bw.err
}

// Size returns how many bytes were written so far.
func (bw *Writer) Size() int64 { return bw.n }

// write writes b whole, folding it into the checksum.
func (bw *Writer) write(b []byte) {
	if bw.err != nil {
		return
	}
	bw.crc = crc32.Update(bw.crc, castagnoli, b)
	n, err := bw.w.Write(b)
	bw.n += int64(n)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		bw.err = fmt.Errorf("backup: write: %w", err)
	}
}

// appendString appends a uvarint length prefix and the bytes of s.
func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}
