package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/tlsutil"
)

// tlsTestEnv clears every ORDINAL_ variable for the test, so that a
// developer's settings cannot change what the tls commands do.
func tlsTestEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, cli.EnvPrefix) {
			t.Setenv(name, "") // restores the value after the test
			os.Unsetenv(name)
		}
	}
}

// runTLSOK runs `ordinal tls args...` in-process and fails the test if it
// fails.
func runTLSOK(t *testing.T, args ...string) {
	t.Helper()
	if err := run(append([]string{"tls"}, args...)); err != nil {
		t.Fatalf("ordinal tls %s: %v", strings.Join(args, " "), err)
	}
}

func loadTLSLeaf(t *testing.T, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	kp, err := tlsutil.LoadKeyPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kp.Leaf()
}

func fileMode(t *testing.T, file string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// aboutDaysFromNow reports whether tm is within a minute of days from now.
func aboutDaysFromNow(tm time.Time, days int) bool {
	d := time.Until(tm) - time.Duration(days)*24*time.Hour
	return d > -time.Minute && d < time.Minute
}

func TestTLSCACreate(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantFiles [2]string
		wantCN    string
		wantDays  int
	}{
		{name: "defaults", wantFiles: [2]string{"ca.pem", "ca-key.pem"}, wantCN: "ordinal-ca", wantDays: 5 * 365},
		{
			name: "prefix, name and days", args: []string{"--prefix", "peer-", "--name", "cluster-a peers", "--days", "30"},
			wantFiles: [2]string{"peer-ca.pem", "peer-ca-key.pem"}, wantCN: "cluster-a peers", wantDays: 30,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tlsTestEnv(t)
			dir := filepath.Join(t.TempDir(), "certs")
			runTLSOK(t, append([]string{"ca", "create", "--dir", dir}, tt.args...)...)
			certFile, keyFile := filepath.Join(dir, tt.wantFiles[0]), filepath.Join(dir, tt.wantFiles[1])
			ca, err := tlsutil.LoadCA(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if ca.Cert.Subject.CommonName != tt.wantCN || !ca.Cert.IsCA {
				t.Errorf("CA %q (IsCA %v), want CA %q", ca.Cert.Subject.CommonName, ca.Cert.IsCA, tt.wantCN)
			}
			if !aboutDaysFromNow(ca.Cert.NotAfter, tt.wantDays) {
				t.Errorf("CA valid until %v, want %d days from now", ca.Cert.NotAfter, tt.wantDays)
			}
			if m := fileMode(t, keyFile); m != 0o600 {
				t.Errorf("key file mode %v, want 0600", m)
			}
			if m := fileMode(t, certFile); m != 0o644 {
				t.Errorf("certificate file mode %v, want 0644", m)
			}
		})
	}
}

func TestTLSCertCreate(t *testing.T) {
	serverEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	peerEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantBase string
		wantCN   string
		wantEKU  []x509.ExtKeyUsage
		wantDNS  []string
		wantIPs  []string
		wantPeer string
		wantDays int
	}{
		{
			name: "peer", args: []string{"--peer", "--node", "n1"},
			wantBase: "n1-peer", wantCN: "n1", wantEKU: peerEKU, wantPeer: "n1", wantDays: 365,
		},
		{
			name: "peer with addresses", args: []string{"--peer", "--node", "n2", "--dns", "n2.internal", "--ip", "10.0.0.2"},
			wantBase: "n2-peer", wantCN: "n2", wantEKU: peerEKU, wantPeer: "n2", wantDNS: []string{"n2.internal"}, wantIPs: []string{"10.0.0.2"}, wantDays: 365,
		},
		{
			name: "server", args: []string{"--server", "--name", "node1", "--dns", "node1,localhost", "--ip", "127.0.0.1"},
			wantBase: "node1-server", wantCN: "node1", wantEKU: serverEKU, wantDNS: []string{"node1", "localhost"}, wantIPs: []string{"127.0.0.1"}, wantDays: 365,
		},
		{
			name: "server with defaults", args: []string{"--server"},
			wantBase: "localhost-server", wantCN: "localhost", wantEKU: serverEKU, wantDNS: []string{"localhost"}, wantIPs: []string{"127.0.0.1", "::1"}, wantDays: 365,
		},
		{
			name: "server named after its first DNS name", args: []string{"--server", "--dns", " a.example , b.example,", "--days", "7"},
			wantBase: "a.example-server", wantCN: "a.example", wantEKU: serverEKU, wantDNS: []string{"a.example", "b.example"}, wantDays: 7,
		},
		{
			name: "client", args: []string{"--client", "--name", "alice"},
			wantBase: "alice-client", wantCN: "alice", wantEKU: clientEKU, wantDays: 365,
		},
		{
			name: "client name unfit for a file name", args: []string{"--client", "--name", "../Alice Smith"},
			wantBase: "___Alice_Smith-client", wantCN: "../Alice Smith", wantEKU: clientEKU, wantDays: 365,
		},
		{
			name: "flags from the environment", args: []string{"--peer"}, env: map[string]string{"ORDINAL_NODE": "n7", "ORDINAL_DAYS": "10"},
			wantBase: "n7-peer", wantCN: "n7", wantEKU: peerEKU, wantPeer: "n7", wantDays: 10,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tlsTestEnv(t)
			dir := t.TempDir()
			runTLSOK(t, "ca", "create", "--dir", dir)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			runTLSOK(t, append([]string{"cert", "create", "--dir", dir}, tt.args...)...)

			certFile, keyFile := filepath.Join(dir, tt.wantBase+".pem"), filepath.Join(dir, tt.wantBase+"-key.pem")
			leaf := loadTLSLeaf(t, certFile, keyFile)
			if leaf.Subject.CommonName != tt.wantCN {
				t.Errorf("CommonName %q, want %q", leaf.Subject.CommonName, tt.wantCN)
			}
			if !slices.Equal(leaf.ExtKeyUsage, tt.wantEKU) {
				t.Errorf("ExtKeyUsage %v, want %v", leaf.ExtKeyUsage, tt.wantEKU)
			}
			if !slices.Equal(leaf.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames %q, want %q", leaf.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IPs %q, want %q", ips, tt.wantIPs)
			}
			if id, ok := tlsutil.PeerID(leaf); id != tt.wantPeer || ok != (tt.wantPeer != "") {
				t.Errorf("PeerID %q, %v; want %q", id, ok, tt.wantPeer)
			}
			if !aboutDaysFromNow(leaf.NotAfter, tt.wantDays) {
				t.Errorf("valid until %v, want %d days from now", leaf.NotAfter, tt.wantDays)
			}
			if m := fileMode(t, keyFile); m != 0o600 {
				t.Errorf("key file mode %v, want 0600", m)
			}
			pool, err := tlsutil.LoadCAPool(filepath.Join(dir, "ca.pem"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool.Pool(), KeyUsages: tt.wantEKU}); err != nil {
				t.Errorf("does not verify against the CA: %v", err)
			}
		})
	}
}

// TestTLSCertCreateWithCAElsewhere: --ca and --ca-key point at a CA that
// is not in --dir.
func TestTLSCertCreateWithCAElsewhere(t *testing.T) {
	tlsTestEnv(t)
	caDir, outDir := t.TempDir(), filepath.Join(t.TempDir(), "out")
	runTLSOK(t, "ca", "create", "--dir", caDir, "--prefix", "peer-", "--name", "peer CA")
	runTLSOK(t, "cert", "create", "--peer", "--node", "n1", "--dir", outDir,
		"--ca", filepath.Join(caDir, "peer-ca.pem"), "--ca-key", filepath.Join(caDir, "peer-ca-key.pem"))
	leaf := loadTLSLeaf(t, filepath.Join(outDir, "n1-peer.pem"), filepath.Join(outDir, "n1-peer-key.pem"))
	if leaf.Issuer.CommonName != "peer CA" {
		t.Errorf("issued by %q, want peer CA", leaf.Issuer.CommonName)
	}
	if _, err := os.Stat(filepath.Join(outDir, "ca.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a CA was written to --dir: %v", err)
	}
}

func TestTLSCertCreateWithoutCA(t *testing.T) {
	tlsTestEnv(t)
	err := run([]string{"tls", "cert", "create", "--server", "--dir", t.TempDir()})
	if err == nil || cli.ExitCode(err) != 1 || !strings.Contains(err.Error(), "ordinal tls ca create") {
		t.Errorf("without a CA: %v (exit %d), want exit 1 pointing at 'ordinal tls ca create'", err, cli.ExitCode(err))
	}
}

func TestTLSRefusesToOverwrite(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		files []string
	}{
		{name: "CA", args: []string{"ca", "create"}, files: []string{"ca.pem", "ca-key.pem"}},
		{name: "peer", args: []string{"cert", "create", "--peer", "--node", "n1"}, files: []string{"n1-peer.pem", "n1-peer-key.pem"}},
		{name: "client", args: []string{"cert", "create", "--client", "--name", "alice"}, files: []string{"alice-client.pem", "alice-client-key.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tlsTestEnv(t)
			dir := t.TempDir()
			if tt.name != "CA" {
				runTLSOK(t, "ca", "create", "--dir", dir)
			}
			args := append(slices.Clone(tt.args), "--dir", dir)
			runTLSOK(t, args...)
			before := readTLSFiles(t, dir, tt.files)

			err := run(append([]string{"tls"}, args...))
			if err == nil || cli.ExitCode(err) != 1 || !strings.Contains(err.Error(), "--force") || !errors.Is(err, os.ErrExist) {
				t.Fatalf("second run: %v (exit %d), want exit 1 suggesting --force", err, cli.ExitCode(err))
			}
			if after := readTLSFiles(t, dir, tt.files); !slices.Equal(before, after) {
				t.Fatal("the refused run changed the files")
			}

			runTLSOK(t, append(args, "--force")...)
			after := readTLSFiles(t, dir, tt.files)
			for i := range before {
				if before[i] == after[i] {
					t.Errorf("--force left %s as it was", tt.files[i])
				}
			}
			if m := fileMode(t, filepath.Join(dir, tt.files[1])); m != 0o600 {
				t.Errorf("replaced key file mode %v, want 0600", m)
			}
		})
	}
}

func readTLSFiles(t *testing.T, dir string, files []string) []string {
	t.Helper()
	var contents []string
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		contents = append(contents, string(b))
	}
	return contents
}

func TestTLSUsageErrors(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{args: nil, wantErr: "expected 'init', 'ca create' or 'cert create'"},
		{args: []string{"key"}, wantErr: `unknown command "key"`},
		{args: []string{"ca"}, wantErr: "ordinal tls ca create"},
		{args: []string{"cert", "make"}, wantErr: "ordinal tls cert create"},
		{args: []string{"ca", "create", "extra"}, wantErr: `unexpected argument "extra"`},
		{args: []string{"ca", "create", "--days", "0"}, wantErr: "--days 0"},
		{args: []string{"ca", "create", "--days", "many"}, wantErr: "-days"},
		{args: []string{"ca", "create", "--name", ""}, wantErr: "--name"},
		{args: []string{"ca", "create", "--prefix", "x/"}, wantErr: "--dir"},
		{args: []string{"ca", "create", "--bogus"}, wantErr: "bogus"},
		{args: []string{"cert", "create"}, wantErr: "exactly one of --server, --client or --peer"},
		{args: []string{"cert", "create", "--server", "--client", "--name", "x"}, wantErr: "exactly one"},
		{args: []string{"cert", "create", "--peer"}, wantErr: "--peer needs --node"},
		{args: []string{"cert", "create", "--peer", "--node", "n 1"}, wantErr: `node ID "n 1"`},
		{args: []string{"cert", "create", "--peer", "--node", strings.Repeat("n", 129)}, wantErr: "limit is 128"},
		{args: []string{"cert", "create", "--server", "--node", "n1"}, wantErr: "--node is only for --peer"},
		{args: []string{"cert", "create", "--client"}, wantErr: "--client needs --name"},
		{args: []string{"cert", "create", "--server", "--ip", "10.0.0.300"}, wantErr: `"10.0.0.300" is not an IP address`},
		{args: []string{"cert", "create", "--server", "--dns", "a b"}, wantErr: `"a b"`},
		{args: []string{"cert", "create", "--client", "--name", "a", "--days", "-1"}, wantErr: "--days -1"},
		{args: []string{"cert", "create", "--client", "--name", "a", "--days", "36501"}, wantErr: "--days 36501"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			tlsTestEnv(t)
			dir := t.TempDir()
			err := tlsCommand(append(slices.Clone(tt.args), "--dir", dir), io.Discard, io.Discard)
			if len(tt.args) < 2 { // no "create" to take the flag
				err = tlsCommand(tt.args, io.Discard, io.Discard)
			}
			if err == nil || cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v (exit %d), want exit 2 and an error containing %q", err, cli.ExitCode(err), tt.wantErr)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 0 {
				t.Errorf("a usage error wrote %d files", len(entries))
			}
		})
	}
}

func TestTLSHelp(t *testing.T) {
	tlsTestEnv(t)
	for _, args := range [][]string{{"--help"}, {"init", "--help"}, {"ca", "--help"}, {"ca", "create", "--help"}, {"cert", "create", "-h"}} {
		err := tlsCommand(args, io.Discard, io.Discard)
		if cli.ExitCode(err) != 0 {
			t.Errorf("tls %s: %v (exit %d), want help and exit 0", strings.Join(args, " "), err, cli.ExitCode(err))
		}
	}
}

func TestTLSReport(t *testing.T) {
	tlsTestEnv(t)
	dir := t.TempDir()
	var out bytes.Buffer
	if err := tlsCommand([]string{"ca", "create", "--dir", dir, "--prefix", "peer-"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := tlsCommand([]string{"cert", "create", "--peer", "--node", "n1", "--dir", dir,
		"--ca", filepath.Join(dir, "peer-ca.pem"), "--ca-key", filepath.Join(dir, "peer-ca-key.pem")}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		filepath.Join(dir, "n1-peer.pem"), filepath.Join(dir, "n1-peer-key.pem"), "urn:ordinal:peer:n1",
		"--peer-cert-file " + filepath.Join(dir, "n1-peer.pem"), "--peer-ca-file " + filepath.Join(dir, "peer-ca.pem"),
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report does not mention %q:\n%s", want, out.String())
		}
	}
}

// TestTLSPeerCertificatesHandshake: peer certificates made by the
// commands complete a mutual TLS handshake with each other, each end
// learning the other's node ID, and one from another CA is refused.
func TestTLSPeerCertificatesHandshake(t *testing.T) {
	tlsTestEnv(t)
	dir, foreignDir := t.TempDir(), t.TempDir()
	runTLSOK(t, "ca", "create", "--dir", dir)
	runTLSOK(t, "cert", "create", "--peer", "--node", "n1", "--ip", "127.0.0.1", "--dir", dir)
	runTLSOK(t, "cert", "create", "--peer", "--node", "n2", "--ip", "127.0.0.1", "--dir", dir)
	runTLSOK(t, "ca", "create", "--dir", foreignDir)
	runTLSOK(t, "cert", "create", "--peer", "--node", "n2", "--ip", "127.0.0.1", "--dir", foreignDir)

	keyPair := func(dir, node string) *tlsutil.KeyPair {
		kp, err := tlsutil.LoadKeyPair(filepath.Join(dir, node+"-peer.pem"), filepath.Join(dir, node+"-peer-key.pem"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	cas, err := tlsutil.LoadCAPool(filepath.Join(dir, "ca.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := tlsutil.ServerConfig(keyPair(dir, "n1"), cas, true)

	serverSaw, clientSaw, err := tlsPeerHandshake(t, serverCfg, tlsutil.ClientConfig(cas, keyPair(dir, "n2"), "127.0.0.1"))
	if err != nil {
		t.Fatalf("handshake between n1 and n2: %v", err)
	}
	if serverSaw != "n2" || clientSaw != "n1" {
		t.Errorf("n1 saw %q, n2 saw %q; want n2 and n1", serverSaw, clientSaw)
	}
	if _, _, err := tlsPeerHandshake(t, serverCfg, tlsutil.ClientConfig(cas, keyPair(foreignDir, "n2"), "127.0.0.1")); err == nil {
		t.Error("a peer certificate from another CA was accepted")
	}
}

// tlsPeerHandshake connects a client to a server over 127.0.0.1, sends a
// byte each way, and returns the node IDs each end's peer certificate
// names, or the first error either end saw.
func tlsPeerHandshake(t *testing.T, serverCfg, clientCfg *tls.Config) (serverSaw, clientSaw string, err error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		peer string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 1)
		if _, err := io.ReadFull(conn, b); err != nil {
			done <- result{err: err}
			return
		}
		if _, err := conn.Write(b); err != nil {
			done <- result{err: err}
			return
		}
		id, _ := tlsutil.PeerID(conn.(*tls.Conn).ConnectionState().PeerCertificates[0])
		done <- result{peer: id}
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), clientCfg)
	if err == nil {
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err = conn.Write([]byte{1}); err == nil {
			_, err = io.ReadFull(conn, make([]byte, 1))
		}
		if err == nil {
			clientSaw, _ = tlsutil.PeerID(conn.ConnectionState().PeerCertificates[0])
		}
	}
	r := <-done
	if r.err != nil {
		return "", "", r.err
	}
	return r.peer, clientSaw, err
}

// tlsInitFiles is what `tls init --node n1 --node n2` writes with the
// default client.
var tlsInitFiles = []string{
	"peer-ca.pem", "peer-ca-key.pem", "server-ca.pem", "server-ca-key.pem", "client-ca.pem", "client-ca-key.pem",
	"n1-peer.pem", "n1-peer-key.pem", "n1-server.pem", "n1-server-key.pem",
	"n2-peer.pem", "n2-peer-key.pem", "n2-server.pem", "n2-server-key.pem",
	"admin-client.pem", "admin-client-key.pem",
}

// tlsInitOK runs `ordinal tls init args...` in-process and returns its
// report.
func tlsInitOK(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := tlsCommand(append([]string{"init"}, args...), &out, io.Discard); err != nil {
		t.Fatalf("ordinal tls init %s: %v", strings.Join(args, " "), err)
	}
	return out.String()
}

// dirSnapshot returns every file under dir with its content and mode, to
// compare before and after a command.
func dirSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[rel] = fi.Mode().String() + " " + fi.ModTime().String() + "\n" + string(b)
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return files
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func certPool(t *testing.T, file string) *tlsutil.CAPool {
	t.Helper()
	pool, err := tlsutil.LoadCAPool(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

func keyPair(t *testing.T, dir, base string) *tlsutil.KeyPair {
	t.Helper()
	kp, err := tlsutil.LoadKeyPair(filepath.Join(dir, base+".pem"), filepath.Join(dir, base+"-key.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// TestTLSInit: one tls init makes three CAs and, signed by the right one,
// each node's peer and server certificates and the admin client's, with
// the names and uses the quick start relies on; each CA verifies only its
// own kind, and the certificates complete the handshakes they are for.
func TestTLSInit(t *testing.T) {
	tlsTestEnv(t)
	dir := filepath.Join(t.TempDir(), "certs")
	out := tlsInitOK(t, "--dir", dir, "--node", "n1", "--node", "n2", "--host", "lb.example,10.1.2.3", "--days", "30")

	want := slices.Clone(tlsInitFiles)
	slices.Sort(want)
	if got := sortedKeys(dirSnapshot(t, dir)); !slices.Equal(got, want) {
		t.Fatalf("files %q, want %q", got, want)
	}
	for _, f := range tlsInitFiles {
		wantMode := os.FileMode(0o644)
		if strings.HasSuffix(f, "-key.pem") {
			wantMode = 0o600
		}
		if m := fileMode(t, filepath.Join(dir, f)); m != wantMode {
			t.Errorf("%s has mode %v, want %v", f, m, wantMode)
		}
	}

	cas := map[string]*tlsutil.CA{}
	for _, kind := range []string{"peer", "server", "client"} {
		ca, err := tlsutil.LoadCA(filepath.Join(dir, kind+"-ca.pem"), filepath.Join(dir, kind+"-ca-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if !aboutDaysFromNow(ca.Cert.NotAfter, 5*365) {
			t.Errorf("%s CA valid until %v, want 5 years from now", kind, ca.Cert.NotAfter)
		}
		cas[kind] = ca
	}
	for kind, ca := range cas {
		for other, o := range cas {
			if kind != other && ca.Cert.Equal(o.Cert) {
				t.Errorf("the %s and %s CAs are one CA", kind, other)
			}
		}
	}

	serverEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	certs := []struct {
		base    string
		ca      string
		usage   []x509.ExtKeyUsage
		cn      string
		peer    string
		dnsWant []string
		ipsWant []string
	}{
		{base: "n1-peer", ca: "peer", usage: clientEKU, cn: "n1", peer: "n1"},
		{base: "n2-peer", ca: "peer", usage: serverEKU, cn: "n2", peer: "n2"},
		{base: "n1-server", ca: "server", usage: serverEKU, cn: "n1", dnsWant: []string{"n1", "localhost", "lb.example"}, ipsWant: []string{"127.0.0.1", "::1", "10.1.2.3"}},
		{base: "n2-server", ca: "server", usage: serverEKU, cn: "n2", dnsWant: []string{"n2", "localhost", "lb.example"}, ipsWant: []string{"127.0.0.1", "::1", "10.1.2.3"}},
		{base: "admin-client", ca: "client", usage: clientEKU, cn: "admin"},
	}
	for _, c := range certs {
		leaf := keyPair(t, dir, c.base).Leaf()
		if leaf.Subject.CommonName != c.cn {
			t.Errorf("%s: CommonName %q, want %q", c.base, leaf.Subject.CommonName, c.cn)
		}
		if id, _ := tlsutil.PeerID(leaf); id != c.peer {
			t.Errorf("%s: names peer %q, want %q", c.base, id, c.peer)
		}
		if c.dnsWant != nil && !slices.Equal(leaf.DNSNames, c.dnsWant) {
			t.Errorf("%s: DNS names %q, want %q", c.base, leaf.DNSNames, c.dnsWant)
		}
		if c.ipsWant != nil && !slices.Equal(hostIPs(leaf.IPAddresses), c.ipsWant) {
			t.Errorf("%s: IPs %q, want %q", c.base, hostIPs(leaf.IPAddresses), c.ipsWant)
		}
		if !aboutDaysFromNow(leaf.NotAfter, 30) {
			t.Errorf("%s: valid until %v, want 30 days from now", c.base, leaf.NotAfter)
		}
		for kind, ca := range cas {
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: c.usage})
			if kind == c.ca && err != nil {
				t.Errorf("%s does not verify against the %s CA: %v", c.base, kind, err)
			}
			if kind != c.ca && err == nil {
				t.Errorf("%s verifies against the %s CA; only the %s CA may vouch for it", c.base, kind, c.ca)
			}
		}
	}

	// What the nodes do with them: mutual TLS between peers, and a client
	// port that takes the admin's certificate but not a node's.
	peerCAs := certPool(t, filepath.Join(dir, "peer-ca.pem"))
	serverSaw, clientSaw, err := tlsPeerHandshake(t, tlsutil.ServerConfig(keyPair(t, dir, "n1-peer"), peerCAs, true),
		tlsutil.ClientConfig(peerCAs, keyPair(t, dir, "n2-peer"), ""))
	if err != nil || serverSaw != "n2" || clientSaw != "n1" {
		t.Errorf("peer handshake n2 -> n1: saw %q and %q, %v; want n2 and n1", serverSaw, clientSaw, err)
	}
	clientPort := tlsutil.ServerConfig(keyPair(t, dir, "n1-server"), certPool(t, filepath.Join(dir, "client-ca.pem")), true)
	serverCAs := certPool(t, filepath.Join(dir, "server-ca.pem"))
	for _, name := range []string{"n1", "localhost", "127.0.0.1", "lb.example", "10.1.2.3"} {
		if _, _, err := tlsPeerHandshake(t, clientPort, tlsutil.ClientConfig(serverCAs, keyPair(t, dir, "admin-client"), name)); err != nil {
			t.Errorf("admin calling n1's client port as %s: %v", name, err)
		}
	}
	if _, _, err := tlsPeerHandshake(t, clientPort, tlsutil.ClientConfig(serverCAs, keyPair(t, dir, "n2-peer"), "n1")); err == nil {
		t.Error("n1's client port accepted n2's peer certificate as a client certificate")
	}

	for _, want := range []string{
		filepath.Join(dir, "peer-ca.pem"), filepath.Join(dir, "n1-server.pem"), "admin-client-key.pem",
		"--peer-cert-file " + filepath.Join(dir, "n1-peer.pem"), "--peer-ca-file " + filepath.Join(dir, "peer-ca.pem"),
		"--tls-cert-file " + filepath.Join(dir, "n1-server.pem"), "--tls-client-ca-file " + filepath.Join(dir, "client-ca.pem"),
		"--admin-names admin", "--tls-ca-file " + filepath.Join(dir, "server-ca.pem"), "urn:ordinal:peer:n2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report does not mention %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "kept") && !strings.Contains(out, "created") {
		t.Errorf("the first run reports kept files:\n%s", out)
	}
}

// TestTLSInitIsIdempotent: running tls init again changes nothing, and
// running it with more nodes and clients adds theirs, issued by the same
// CAs, leaving every existing file as it was.
func TestTLSInitIsIdempotent(t *testing.T) {
	tlsTestEnv(t)
	dir := t.TempDir()
	tlsInitOK(t, "--dir", dir, "--node", "n1,n2")
	before := dirSnapshot(t, dir)

	out := tlsInitOK(t, "--dir", dir, "--node", "n1", "--node", "n2")
	if after := dirSnapshot(t, dir); !maps.Equal(before, after) {
		t.Fatalf("the second run changed the files: %q, then %q", sortedKeys(before), sortedKeys(after))
	}
	if !strings.Contains(out, "Nothing to do") || strings.Contains(out, "created") {
		t.Errorf("the second run's report does not say it had nothing to do:\n%s", out)
	}

	t.Setenv("ORDINAL_NODE", "n2,n3") // flags from the environment, as in a container
	tlsInitOK(t, "--dir", dir, "--client", "app")
	after := dirSnapshot(t, dir)
	for f, content := range before {
		if after[f] != content {
			t.Errorf("adding a node and a client changed %s", f)
		}
	}
	for _, f := range []string{"n3-peer.pem", "n3-peer-key.pem", "n3-server.pem", "n3-server-key.pem", "app-client.pem", "app-client-key.pem"} {
		if _, ok := after[f]; !ok {
			t.Errorf("%s was not made", f)
		}
	}
	if len(after) != len(before)+6 {
		t.Errorf("files %q, want those of the first run and n3's and app's", sortedKeys(after))
	}
	peerCAs := certPool(t, filepath.Join(dir, "peer-ca.pem"))
	if _, clientSaw, err := tlsPeerHandshake(t, tlsutil.ServerConfig(keyPair(t, dir, "n1-peer"), peerCAs, true),
		tlsutil.ClientConfig(peerCAs, keyPair(t, dir, "n3-peer"), "")); err != nil || clientSaw != "n1" {
		t.Errorf("n3, added later, and n1 do not trust each other: %q, %v", clientSaw, err)
	}
}

// TestTLSInitCAKeyDir: with --ca-key-dir the CAs' keys stay out of --dir,
// which is all the nodes need; without the keys, tls init still checks
// what exists but refuses to issue more.
func TestTLSInitCAKeyDir(t *testing.T) {
	tlsTestEnv(t)
	dir, keyDir := t.TempDir(), filepath.Join(t.TempDir(), "ca")
	tlsInitOK(t, "--dir", dir, "--ca-key-dir", keyDir, "--node", "n1")
	for _, kind := range []string{"peer", "server", "client"} {
		if _, err := os.Stat(filepath.Join(dir, kind+"-ca-key.pem")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the %s CA's key is in --dir: %v", kind, err)
		}
		if _, err := tlsutil.LoadCA(filepath.Join(dir, kind+"-ca.pem"), filepath.Join(keyDir, kind+"-ca-key.pem")); err != nil {
			t.Errorf("the %s CA: %v", kind, err)
		}
	}

	before := dirSnapshot(t, dir)
	tlsInitOK(t, "--dir", dir, "--ca-key-dir", t.TempDir(), "--node", "n1") // nothing to issue: the keys are not needed
	err := tlsCommand([]string{"init", "--dir", dir, "--node", "n1,n2"}, io.Discard, io.Discard)
	if err == nil || cli.ExitCode(err) != 1 || !strings.Contains(err.Error(), "--ca-key-dir") || !strings.Contains(err.Error(), "peer-ca-key.pem") {
		t.Errorf("issuing n2's certificates without the CA keys: %v (exit %d), want exit 1 pointing at --ca-key-dir", err, cli.ExitCode(err))
	}
	if after := dirSnapshot(t, dir); !maps.Equal(before, after) {
		t.Errorf("the runs without the CA keys changed --dir: %q, then %q", sortedKeys(before), sortedKeys(after))
	}
}

// TestTLSInitRefusesToReplace: files tls init did not make, or that no
// longer fit, are reported with what to do, and nothing is written.
func TestTLSInitRefusesToReplace(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(t *testing.T, dir string)
		args    []string
		wantErr []string
	}{
		{
			name:    "CA key without its certificate",
			breakIt: func(t *testing.T, dir string) { removeFiles(t, dir, "server-ca.pem") },
			wantErr: []string{"server-ca-key.pem exists without its certificate", "never replaces a CA"},
		},
		{
			name: "CA certificate without its key, something to issue",
			breakIt: func(t *testing.T, dir string) {
				removeFiles(t, dir, "client-ca-key.pem", "admin-client.pem", "admin-client-key.pem")
			},
			wantErr: []string{"client-ca-key.pem, is missing", "--ca-key-dir"},
		},
		{
			name:    "CA missing, certificates it issued left",
			breakIt: func(t *testing.T, dir string) { removeFiles(t, dir, "peer-ca.pem", "peer-ca-key.pem") },
			wantErr: []string{"n1-peer.pem exists but the CA that issued it", "peer-ca.pem"},
		},
		{
			name:    "certificate without its key",
			breakIt: func(t *testing.T, dir string) { removeFiles(t, dir, "n1-server-key.pem") },
			wantErr: []string{"n1-server.pem exists but", "n1-server-key.pem does not", "delete"},
		},
		{
			name:    "key of another certificate",
			breakIt: func(t *testing.T, dir string) { copyFile(t, dir, "n2-peer-key.pem", "n1-peer-key.pem") },
			wantErr: []string{"does not belong to the certificate"},
		},
		{
			name: "certificate of another CA",
			breakIt: func(t *testing.T, dir string) {
				other := t.TempDir()
				tlsInitOK(t, "--dir", other, "--node", "n1")
				copyFile(t, other, "n1-peer.pem", filepath.Join(dir, "n1-peer.pem"))
				copyFile(t, other, "n1-peer-key.pem", filepath.Join(dir, "n1-peer-key.pem"))
			},
			wantErr: []string{"n1-peer.pem is not a valid certificate of the peer CA", "delete"},
		},
		{
			name: "certificate of another node",
			breakIt: func(t *testing.T, dir string) {
				copyFile(t, dir, "n2-peer.pem", "n1-peer.pem")
				copyFile(t, dir, "n2-peer-key.pem", "n1-peer-key.pem")
			},
			wantErr: []string{`n1-peer.pem names node "n2", not "n1"`},
		},
		{
			name:    "server certificate without a new --host",
			args:    []string{"--host", "lb.example"},
			wantErr: []string{"n1-server.pem is not valid for lb.example", "to add names, delete"},
		},
		{
			name: "expired certificate",
			breakIt: func(t *testing.T, dir string) {
				writeExpiredPeerCert(t, dir, "n2")
			},
			wantErr: []string{"n2-peer.pem expired on", "to renew it, delete"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tlsTestEnv(t)
			dir := t.TempDir()
			tlsInitOK(t, "--dir", dir, "--node", "n1,n2")
			if tt.breakIt != nil {
				tt.breakIt(t, dir)
			}
			before := dirSnapshot(t, dir)
			err := tlsCommand(append([]string{"init", "--dir", dir, "--node", "n1,n2"}, tt.args...), io.Discard, io.Discard)
			if err == nil || cli.ExitCode(err) != 1 {
				t.Fatalf("tls init: %v (exit %d), want exit 1", err, cli.ExitCode(err))
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if after := dirSnapshot(t, dir); !maps.Equal(before, after) {
				t.Errorf("the refused run changed the files: %q, then %q", sortedKeys(before), sortedKeys(after))
			}
		})
	}
}

func removeFiles(t *testing.T, dir string, files ...string) {
	t.Helper()
	for _, f := range files {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
}

// copyFile copies dir/from to to, relative to dir unless absolute.
func copyFile(t *testing.T, dir, from, to string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, from))
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(to) {
		to = filepath.Join(dir, to)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeExpiredPeerCert replaces node's peer certificate in dir by one of
// the same CA and key that expired a day ago.
func writeExpiredPeerCert(t *testing.T, dir, node string) {
	t.Helper()
	ca, err := tlsutil.LoadCA(filepath.Join(dir, "peer-ca.pem"), filepath.Join(dir, "peer-ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	kp := keyPair(t, dir, node+"-peer")
	tmpl := *kp.Leaf()
	tmpl.NotBefore = time.Now().Add(-48 * time.Hour)
	tmpl.NotAfter = time.Now().Add(-24 * time.Hour)
	cert, _ := kp.Certificate()
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Cert, cert.Leaf.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, node+"-peer.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTLSInitUsageErrors(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
		{args: []string{"--node", "n 1"}, wantErr: `node ID "n 1"`},
		{args: []string{"--node", "n1", "--host", "lb.example:34904"}, wantErr: "without a port"},
		{args: []string{"--node", "n1", "--host", "a b"}, wantErr: `"a b"`},
		{args: []string{"--client", "a b", "--client", "a_b"}, wantErr: "would both be written to a_b-client.pem"},
		{args: []string{"--days", "0"}, wantErr: "--days 0"},
		{args: []string{"--bogus"}, wantErr: "bogus"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			tlsTestEnv(t)
			dir := t.TempDir()
			err := tlsCommand(append([]string{"init", "--dir", dir}, tt.args...), io.Discard, io.Discard)
			if err == nil || cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v (exit %d), want exit 2 and an error containing %q", err, cli.ExitCode(err), tt.wantErr)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 0 {
				t.Errorf("a usage error wrote %d files", len(entries))
			}
		})
	}
}

// TestTLSInitDaysBeyondCA: a new certificate may not outlive the existing
// CA that would issue it; nothing is written.
func TestTLSInitDaysBeyondCA(t *testing.T) {
	tlsTestEnv(t)
	dir := t.TempDir()
	tlsInitOK(t, "--dir", dir, "--node", "n1")
	before := dirSnapshot(t, dir)
	err := tlsCommand([]string{"init", "--dir", dir, "--node", "n1,n2", "--days", "2000"}, io.Discard, io.Discard)
	if err == nil || cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "node n2's certificate would be valid until") || !strings.Contains(err.Error(), "smaller --days") {
		t.Fatalf("--days beyond the CA: %v (exit %d), want exit 2 asking for a smaller --days", err, cli.ExitCode(err))
	}
	if after := dirSnapshot(t, dir); !maps.Equal(before, after) {
		t.Errorf("the refused run changed the files: %q, then %q", sortedKeys(before), sortedKeys(after))
	}
	// A new set gets CAs that outlive the certificates.
	other := t.TempDir()
	tlsInitOK(t, "--dir", other, "--node", "n1", "--days", "2000")
	if leaf := keyPair(t, other, "n1-peer").Leaf(); !aboutDaysFromNow(leaf.NotAfter, 2000) {
		t.Errorf("n1-peer.pem valid until %v, want 2000 days from now", leaf.NotAfter)
	}
}
