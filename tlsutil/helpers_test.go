package tlsutil

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

// testValidity is how long the tests' certificates are valid.
const testValidity = 24 * time.Hour

func newTestCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name, 30*24*time.Hour)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, req CertRequest) (certPEM, keyPEM []byte) {
	t.Helper()
	if req.Validity == 0 {
		req.Validity = testValidity
	}
	certPEM, keyPEM, err := ca.Issue(req)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", req, err)
	}
	return certPEM, keyPEM
}

// mustIssueExpired issues a certificate that expired a day ago.
func mustIssueExpired(t *testing.T, ca *CA, req CertRequest) (certPEM, keyPEM []byte) {
	t.Helper()
	req.Validity = testValidity
	certPEM, keyPEM, err := ca.issue(req, time.Now().Add(-2*testValidity))
	if err != nil {
		t.Fatalf("issue(%+v): %v", req, err)
	}
	return certPEM, keyPEM
}

// mustIssueWith is mustIssue, or mustIssueExpired when expired.
func mustIssueWith(t *testing.T, ca *CA, req CertRequest, expired bool) (certPEM, keyPEM []byte) {
	t.Helper()
	if expired {
		return mustIssueExpired(t, ca, req)
	}
	return mustIssue(t, ca, req)
}

// writePair writes a certificate and key as dir/name.pem and
// dir/name-key.pem, replacing them atomically (write beside, rename over)
// as Kubernetes and WriteFiles do.
func writePair(t *testing.T, dir, name string, certPEM, keyPEM []byte) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(dir, name+".pem")
	keyFile = filepath.Join(dir, name+"-key.pem")
	if err := WriteFiles(certFile, keyFile, certPEM, keyPEM, true); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// writeCA writes a CA's certificate as dir/name.pem and returns the file.
func writeCA(t *testing.T, dir, name string, certPEM ...[]byte) string {
	t.Helper()
	file := filepath.Join(dir, name+".pem")
	if err := writeFile(file, bytes.Join(certPEM, nil), 0o644, true); err != nil {
		t.Fatal(err)
	}
	return file
}

func mustLoadKeyPair(t *testing.T, certFile, keyFile string, logger hclog.Logger) *KeyPair {
	t.Helper()
	kp, err := LoadKeyPair(certFile, keyFile, logger)
	if err != nil {
		t.Fatalf("LoadKeyPair: %v", err)
	}
	return kp
}

func mustLoadCAPool(t *testing.T, file string) *CAPool {
	t.Helper()
	p, err := LoadCAPool(file, nil)
	if err != nil {
		t.Fatalf("LoadCAPool: %v", err)
	}
	return p
}

// logBuffer collects a logger's output; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// count returns how many lines contain s.
func (b *logBuffer) count(s string) int {
	n := 0
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

func newTestLogger() (hclog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Debug}), buf
}

// echoServer is a TLS server on 127.0.0.1 that echoes what each
// connection sends and reports failed handshakes.
type echoServer struct {
	addr string
	errs chan error // failed server-side handshakes

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startEchoServer(t *testing.T, cfg *tls.Config) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{addr: ln.Addr().String(), errs: make(chan error, 1000), conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[conn] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go s.serve(tls.Server(conn, cfg))
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) serve(conn *tls.Conn) {
	defer s.wg.Done()
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	if err := conn.Handshake(); err != nil {
		select {
		case s.errs <- err:
		default:
		}
		return
	}
	_ = conn.SetDeadline(time.Time{})
	_, _ = io.Copy(conn, conn)
}

// handshakeError waits for the server's next failed handshake.
func (s *echoServer) handshakeError(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(testTimeout):
		t.Fatal("the server reported no failed handshake")
		return nil
	}
}

// dial connects to addr with cfg and echoes a message through the
// connection, which proves that both ends accepted the handshake (with
// TLS 1.3 a client learns that the server refused its certificate only
// when it reads). It returns the open connection.
func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	if err := echo(conn); err != nil {
		_ = conn.Close()
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, nil
}

// echo sends a message through conn and checks that it comes back.
func echo(conn *tls.Conn) error {
	if err := conn.SetDeadline(time.Now().Add(testTimeout)); err != nil {
		return err
	}
	defer conn.SetDeadline(time.Time{})
	msg := []byte("ping")
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo: got %q, want %q", got, msg)
	}
	return nil
}

// eventually calls f until it returns nil, failing the test with f's last
// error if that takes longer than testTimeout.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, testTimeout, err)
		}
	}
}

var errNotYet = errors.New("not yet")
