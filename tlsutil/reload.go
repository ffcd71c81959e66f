package tlsutil

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultReloadInterval is how often, at most, KeyPair and CAPool check
// whether their files changed.
const DefaultReloadInterval = time.Second

// fileStamp is what tells a file's versions apart without reading it.
// Replacing a file by renaming another over it (as Kubernetes does for
// mounted secrets, through a symlink) changes the inode; rewriting it in
// place changes its modification time, and usually its size.
type fileStamp struct {
	size  int64
	mtime int64 // UnixNano
	dev   uint64
	inode uint64
}

func statFiles(files []string) ([]fileStamp, error) {
	stamps := make([]fileStamp, len(files))
	for i, f := range files {
		fi, err := os.Stat(f) // follows symlinks: the target is what is read
		if err != nil {
			return nil, err
		}
		dev, inode := fileID(fi)
		stamps[i] = fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano(), dev: dev, inode: inode}
	}
	return stamps, nil
}

func sameStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// reloader holds a value read from files and reads it again when the
// files change. The value is checked lazily, by get, at most once per
// interval; between checks get costs one atomic load and a clock read.
// There is no background goroutine, so there is nothing to stop.
type reloader[T any] struct {
	files  []string
	what   string            // "certificate", "CA bundle": for logs
	load   func() (T, error) // reads files; errors name the file
	fields func(T) []any     // log fields describing a value
	logger hclog.Logger

	state atomic.Pointer[reloadState[T]]

	mu        sync.Mutex // serializes checks and interval changes
	interval  time.Duration
	failedKey string // stamps of the files that last failed to load, to log each failure once
}

// reloadState is immutable once stored.
type reloadState[T any] struct {
	value   T
	stamps  []fileStamp // of the files value was read from
	checked time.Time
	next    time.Time // the first time get checks the files again
}

// newReloader stats the files, then loads the value. Stamping before
// reading means a change racing with the read is seen by the next check.
func newReloader[T any](what string, files []string, load func() (T, error), fields func(T) []any, logger hclog.Logger) (*reloader[T], error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	r := &reloader[T]{files: files, what: what, load: load, fields: fields, logger: logger, interval: DefaultReloadInterval}
	stamps, err := statFiles(files)
	if err != nil {
		return nil, err
	}
	v, err := load()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	r.state.Store(&reloadState[T]{value: v, stamps: stamps, checked: now, next: now.Add(r.interval)})
	return r, nil
}

// get returns the current value, checking the files first when the
// interval since the last check has passed.
func (r *reloader[T]) get() T {
	s := r.state.Load()
	if time.Now().Before(s.next) {
		return s.value
	}
	return r.check()
}

func (r *reloader[T]) check() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.state.Load()
	now := time.Now()
	if now.Before(s.next) { // another caller checked while we waited
		return s.value
	}
	keep := func() T {
		r.state.Store(&reloadState[T]{value: s.value, stamps: s.stamps, checked: now, next: now.Add(r.interval)})
		return s.value
	}
	stamps, err := statFiles(r.files)
	if err == nil && sameStamps(stamps, s.stamps) {
		r.failedKey = ""
		return keep()
	}
	var v T
	if err == nil {
		v, err = r.load()
	}
	if err != nil {
		// Log once per version of the files, not once per check: a
		// half-written file is retried at every interval until it is
		// complete, or until it changes again.
		key := fmt.Sprint(stamps, err)
		if key != r.failedKey {
			r.failedKey = key
			r.logger.Error("cannot reload the "+r.what+"; still using the one loaded before, will try again when the files change",
				"files", r.files, "error", err)
		}
		return keep()
	}
	r.failedKey = ""
	r.state.Store(&reloadState[T]{value: v, stamps: stamps, checked: now, next: now.Add(r.interval)})
	r.logger.Info("reloaded the "+r.what, append([]any{"files", r.files}, r.fields(v)...)...)
	return v
}

// setInterval changes the interval and applies it from the last check on.
func (r *reloader[T]) setInterval(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.interval = d
	s := r.state.Load()
	r.state.Store(&reloadState[T]{value: s.value, stamps: s.stamps, checked: s.checked, next: s.checked.Add(d)})
}
