//go:build unix

package cluster

import (
	"os"
	"syscall"
)

// mmapFile maps the first n bytes of f read-only, as bbolt maps raft.db.
func mmapFile(f *os.File, n int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, n, syscall.PROT_READ, syscall.MAP_SHARED)
}

func munmapFile(b []byte) { _ = syscall.Munmap(b) }
