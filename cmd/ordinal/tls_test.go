package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/tlsutil"
)

// tlsTestEnv clears every ORDINAL_ variable for the test, so that a
// developer's settings cannot change what the tls commands do.
func tlsTestEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) {
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
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "ordinal tls ca create") {
		t.Errorf("without a CA: %v (exit %d), want exit 1 pointing at 'ordinal tls ca create'", err, exitCode(err))
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
			if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "--force") || !errors.Is(err, os.ErrExist) {
				t.Fatalf("second run: %v (exit %d), want exit 1 suggesting --force", err, exitCode(err))
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
		{args: nil, wantErr: "expected 'ca create' or 'cert create'"},
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
			if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v (exit %d), want exit 2 and an error containing %q", err, exitCode(err), tt.wantErr)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 0 {
				t.Errorf("a usage error wrote %d files", len(entries))
			}
		})
	}
}

func TestTLSHelp(t *testing.T) {
	tlsTestEnv(t)
	for _, args := range [][]string{{"--help"}, {"ca", "--help"}, {"ca", "create", "--help"}, {"cert", "create", "-h"}} {
		err := tlsCommand(args, io.Discard, io.Discard)
		if exitCode(err) != 0 {
			t.Errorf("tls %s: %v (exit %d), want help and exit 0", strings.Join(args, " "), err, exitCode(err))
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
