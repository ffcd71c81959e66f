// Package testutil holds the small helpers every test harness of ordinal
// needs: free loopback addresses, polling with a deadline, and a buffer a
// child process can write while a test reads it.
package testutil

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// FreeAddr returns a loopback address whose port was free a moment ago.
// Nodes keep their address across restarts, which port 0 cannot give.
//
// The port is taken at random below the kernel's ephemeral range: a port
// from that range can become the source port of any outgoing connection
// on the machine (other test packages run in parallel) between the moment
// it is found free and the moment a node binds it, or while a stopped node
// is down. A port is never handed out twice in one process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	portMu.Lock()
	defer portMu.Unlock()
	for tries := 0; tries < 1000; tries++ {
		port := minTestPort + rand.IntN(low-minTestPort)
		if handedOut[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		handedOut[port] = true
		return l.Addr().String()
	}
	t.Fatalf("no free port found between %d and %d", minTestPort, low)
	return ""
}

// minTestPort is the lowest port FreeAddr hands out.
const minTestPort = 10000

var (
	portMu    sync.Mutex
	handedOut = map[int]bool{}
)

// ephemeralLow returns the first port of the kernel's ephemeral range
// (32768 where it cannot be read).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var lo, hi int
		if _, err := fmt.Sscan(string(b), &lo, &hi); err == nil && lo > minTestPort+1000 {
			low = lo
		}
	}
	return low
}

// WaitFor polls cond every 10 ms until it holds, and fails the test if
// timeout passes first.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer safe for a process's writes and a test's
// reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CopyDir copies the directory tree src (a node's data directory, say)
// into a new temporary directory of the test and returns its path.
func CopyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	return dst
}
