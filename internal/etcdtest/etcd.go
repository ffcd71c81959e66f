// Package etcdtest runs a real etcd server for tests on loopback, with a
// temporary data directory and free ports: $ORDINAL_ETCD_BIN, else
// Debian's etcd-server binary (/usr/bin/etcd, or etcd on PATH), else the
// embedded etcd of tools/etcd, an etcd server built from
// go.etcd.io/etcd/server/v3's embed package in a module of its own, which
// the first test that needs it builds with the go command (about a minute,
// downloads included; then cached, see Embedded). So the etcd tests need
// Go alone. It also provides a TCP proxy that can pause or cut one
// client's link to etcd, in-process ordinal nodes backed by etcd, and a
// table of API checks that runs over any store.
//
// When there is no binary and the embedded one cannot be built (no module
// proxy, say), the tests that need etcd skip, unless
// ORDINAL_REQUIRE_ETCD=1 (which CI sets), which turns the skip into a
// failure.
package etcdtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// BinaryEnv names an etcd binary to use instead of the default;
	// EmbeddedBinary as its value selects the embedded etcd even when
	// Debian's is installed.
	BinaryEnv = "ORDINAL_ETCD_BIN"
	// RequireEnv set to 1 makes a missing etcd (none installed, and the
	// embedded one not buildable) fail the tests instead of skipping them.
	RequireEnv = "ORDINAL_REQUIRE_ETCD"
	// DefaultBinary is where Debian's etcd-server package installs etcd.
	DefaultBinary = "/usr/bin/etcd"
	// StartTimeout bounds waiting for a new etcd to report healthy.
	StartTimeout = 20 * time.Second
)

// Etcd is a running single-member etcd.
type Etcd struct {
	// Endpoint is the client address, host:port.
	Endpoint string

	scheme    string
	healthTLS *tls.Config
	dir       string
	log       *os.File
	cmd       *exec.Cmd
	exited    chan struct{}
	err       error // the process's exit, once exited is closed

	stopOnce sync.Once
}

// Binary returns the etcd binary to run: $ORDINAL_ETCD_BIN, else
// DefaultBinary, else etcd on PATH, else the embedded etcd, built on first
// use (Embedded).
func Binary() (string, error) {
	if b := os.Getenv(BinaryEnv); b != "" {
		if b == EmbeddedBinary {
			return Embedded()
		}
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinaryEnv, b, err)
		}
		return b, nil
	}
	if _, err := os.Stat(DefaultBinary); err == nil {
		return DefaultBinary, nil
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	b, err := Embedded()
	if err != nil {
		return "", fmt.Errorf("no etcd binary installed (Debian: apt-get install etcd-server; or set %s), and %w", BinaryEnv, err)
	}
	return b, nil
}

// Require skips tb, or fails it under ORDINAL_REQUIRE_ETCD=1, when there
// is no etcd to run (none installed, and the embedded one cannot be
// built), and returns the binary otherwise.
func Require(tb testing.TB) string {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("%v; %s=1 requires the etcd tests to run", err, RequireEnv)
		}
		tb.Skipf("skipping: %v (set %s=1 to fail instead)", err, RequireEnv)
	}
	return bin
}

// Start starts a fresh etcd for tb and stops it when tb ends.
func Start(tb testing.TB) *Etcd {
	tb.Helper()
	bin := Require(tb)
	e, err := Launch(bin)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Stop)
	return e
}

var (
	sharedOnce sync.Once
	shared     *Etcd
	sharedErr  error
)

// Shared returns an etcd shared by every test of the package, started on
// first use. The package's TestMain must call StopShared after m.Run (see
// Main). Tests sharing it keep apart by using keys under their own prefix.
func Shared(tb testing.TB) *Etcd {
	tb.Helper()
	bin := Require(tb)
	sharedOnce.Do(func() { shared, sharedErr = Launch(bin) })
	if sharedErr != nil {
		tb.Fatal(sharedErr)
	}
	return shared
}

// StopShared stops the shared etcd, if one was started.
func StopShared() {
	if shared != nil {
		shared.Stop()
	}
}

// Main is a TestMain body for packages that use Shared.
func Main(m *testing.M) int {
	defer StopShared()
	return m.Run()
}

// TLS makes etcd serve clients over TLS.
type TLS struct {
	// CertFile and KeyFile are etcd's server certificate and key; the
	// certificate must be valid for 127.0.0.1.
	CertFile, KeyFile string
	// ClientCAFile, when set, makes etcd require client certificates
	// signed by it.
	ClientCAFile string
	// Client is what the health check connects with.
	Client *tls.Config
}

// Launch starts etcd and waits until it reports healthy. The caller must
// Stop it.
func Launch(bin string) (*Etcd, error) { return LaunchTLS(bin, nil) }

// LaunchTLS is Launch with clients served over TLS when tc is not nil.
func LaunchTLS(bin string, tc *TLS) (*Etcd, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		e, err := launch(bin, tc)
		if err == nil {
			return e, nil
		}
		// Most likely a port taken between picking and binding it.
		lastErr = err
	}
	return nil, lastErr
}

func launch(bin string, tc *TLS) (*Etcd, error) {
	dir, err := os.MkdirTemp(tmpBase(), "ordinal-etcd-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	scheme := "http"
	if tc != nil {
		scheme = "https"
	}
	client := fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	logFile, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := []string{
		"--name", "test",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test=" + peer,
		"--initial-cluster-state", "new",
		"--logger", "zap",
		"--log-outputs", "stderr",
		"--log-level", "warn",
	}
	if tc != nil {
		args = append(args, "--cert-file", tc.CertFile, "--key-file", tc.KeyFile)
		if tc.ClientCAFile != "" {
			args = append(args, "--client-cert-auth", "--trusted-ca-file", tc.ClientCAFile)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	e := &Etcd{Endpoint: strings.TrimPrefix(client, scheme+"://"), scheme: scheme, dir: dir, log: logFile, cmd: cmd, exited: make(chan struct{})}
	if tc != nil {
		e.healthTLS = tc.Client
	}
	go func() {
		e.err = cmd.Wait()
		close(e.exited)
	}()
	if err := e.waitHealthy(StartTimeout); err != nil {
		logs := e.Logs()
		e.Stop()
		return nil, fmt.Errorf("etcd did not become healthy: %w\n%s", err, logs)
	}
	return e, nil
}

// tmpBase puts etcd's data in memory where possible: etcd syncs every
// write to disk, which is slow and pointless in a test.
func tmpBase() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", "ordinal-probe-"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return "/dev/shm"
		}
	}
	return os.TempDir()
}

func (e *Etcd) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: e.healthTLS}}
	defer hc.CloseIdleConnections()
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-e.exited:
			return fmt.Errorf("etcd exited: %v", e.err)
		default:
		}
		resp, err := hc.Get(e.scheme + "://" + e.Endpoint + "/health")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`)) {
				return nil
			}
			err = fmt.Errorf("health: %s %s", resp.Status, body)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not healthy after %v: %v", timeout, last)
}

// Logs returns the end of etcd's log.
func (e *Etcd) Logs() string {
	b, err := os.ReadFile(e.log.Name())
	if err != nil {
		return err.Error()
	}
	const tail = 8 << 10
	if len(b) > tail {
		b = b[len(b)-tail:]
	}
	return string(b)
}

// Stop kills etcd and deletes its data.
func (e *Etcd) Stop() {
	e.stopOnce.Do(func() {
		_ = e.cmd.Process.Kill()
		select {
		case <-e.exited:
		case <-time.After(10 * time.Second):
		}
		e.log.Close()
		os.RemoveAll(e.dir)
	})
}

// Client returns a client of e that is closed when tb ends.
func (e *Etcd) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ports, err := freePorts(1)
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0])
}

// errTimeout is what Eventually reports when cond never held.
var errTimeout = errors.New("timed out")

// Eventually polls cond every 10ms until it holds or timeout passes.
func Eventually(timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return errTimeout
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
