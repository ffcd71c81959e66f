package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/tlsutil"
)

func leafOf(t *testing.T, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	kp, err := tlsutil.LoadKeyPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kp.Leaf()
}

func verifies(t *testing.T, leaf *x509.Certificate, caFile string, usage x509.ExtKeyUsage) error {
	t.Helper()
	pool, err := tlsutil.LoadCAPool(caFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func TestPKI(t *testing.T) {
	p := New(t, "")
	for _, f := range []string{p.PeerCAFile, p.ServerCAFile, p.ClientCAFile} {
		if filepath.Dir(f) != p.Dir {
			t.Errorf("%s is not in %s", f, p.Dir)
		}
	}
	tests := []struct {
		name     string
		files    func() (string, string)
		caFile   string
		usage    x509.ExtKeyUsage
		wantCN   string
		wantPeer string
		wantDNS  []string
		wantIPs  []string
	}{
		{name: "peer", files: func() (string, string) { return p.Peer("n1") }, caFile: p.PeerCAFile, usage: x509.ExtKeyUsageClientAuth,
			wantCN: "n1", wantPeer: "n1", wantDNS: []string{"localhost"}, wantIPs: []string{"127.0.0.1"}},
		{name: "server default hosts", files: func() (string, string) { return p.Server("node1") }, caFile: p.ServerCAFile, usage: x509.ExtKeyUsageServerAuth,
			wantCN: "node1", wantDNS: []string{"localhost"}, wantIPs: []string{"127.0.0.1"}},
		{name: "server hosts", files: func() (string, string) { return p.Server("node2", "node2.example", "10.1.2.3") }, caFile: p.ServerCAFile,
			usage: x509.ExtKeyUsageServerAuth, wantCN: "node2", wantDNS: []string{"node2.example"}, wantIPs: []string{"10.1.2.3"}},
		{name: "client", files: func() (string, string) { return p.Client("alice smith") }, caFile: p.ClientCAFile, usage: x509.ExtKeyUsageClientAuth,
			wantCN: "alice smith"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile := tt.files()
			leaf := leafOf(t, certFile, keyFile)
			if leaf.Subject.CommonName != tt.wantCN {
				t.Errorf("CommonName %q, want %q", leaf.Subject.CommonName, tt.wantCN)
			}
			if id, _ := tlsutil.PeerID(leaf); id != tt.wantPeer {
				t.Errorf("PeerID %q, want %q", id, tt.wantPeer)
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
			if err := verifies(t, leaf, tt.caFile, tt.usage); err != nil {
				t.Errorf("does not verify against its CA: %v", err)
			}
			for _, other := range []string{p.PeerCAFile, p.ServerCAFile, p.ClientCAFile} {
				if other != tt.caFile && verifies(t, leaf, other, tt.usage) == nil {
					t.Errorf("verifies against %s too: the CAs must be distinct", other)
				}
			}
			if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("key file mode %v (%v), want 0600", fi.Mode(), err)
			}
		})
	}
}

func TestPKICachesByName(t *testing.T) {
	p := New(t, t.TempDir())
	c1, k1 := p.Peer("n1")
	c2, k2 := p.Peer("n1")
	if c1 != c2 || k1 != k2 {
		t.Errorf("Peer(n1) twice gave %s and %s", c1, c2)
	}
	c3, _ := p.Peer("n2")
	if c3 == c1 {
		t.Error("Peer(n2) gave n1's files")
	}
	s1, _ := p.Server("s", "a.example", "127.0.0.1")
	s2, _ := p.Server("s", "127.0.0.1", "a.example")
	if s1 != s2 {
		t.Errorf("Server twice gave %s and %s", s1, s2)
	}
	// A client and a server of the same name are different certificates.
	if cl, _ := p.Client("s"); cl == s1 {
		t.Error("Client(s) gave Server(s)'s files")
	}
	// Names that map to the same file name still get their own files.
	a, _ := p.Client("a/b")
	b, _ := p.Client("a_b")
	if a == b {
		t.Errorf("Client(a/b) and Client(a_b) share %s", a)
	}
	if leafOf(t, a, a[:len(a)-4]+"-key.pem").Subject.CommonName != "a/b" {
		t.Error("Client(a/b) has another name")
	}
}

func TestForeignPeerIsRefused(t *testing.T) {
	p := New(t, "")
	tests := []struct {
		name      string
		client    func() (string, string)
		wantError bool
	}{
		{name: "peer of the same CA", client: func() (string, string) { return p.Peer("n2") }},
		{name: "foreign peer", client: func() (string, string) { return p.ForeignPeer("n2") }, wantError: true},
	}
	keyPair := func(certFile, keyFile string) *tlsutil.KeyPair { return mustKeyPair(t, certFile, keyFile) }
	leaf := func(certFile, keyFile string) *x509.Certificate { return leafOf(t, certFile, keyFile) }
	server := keyPair(p.Peer("n1"))
	peerCAs, err := tlsutil.LoadCAPool(p.PeerCAFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, _ := tt.client(); filepath.Dir(c) != p.Dir {
				t.Errorf("%s is not in %s", c, p.Dir)
			}
			err := handshake(t, tlsutil.ServerConfig(server, peerCAs, true), tlsutil.ClientConfig(peerCAs, keyPair(tt.client()), "localhost"))
			if (err != nil) != tt.wantError {
				t.Errorf("handshake: %v, want error %v", err, tt.wantError)
			}
		})
	}
	if id, ok := tlsutil.PeerID(leaf(p.ForeignPeer("n2"))); !ok || id != "n2" {
		t.Errorf("the foreign peer names %q, %v; want n2", id, ok)
	}
}

func mustKeyPair(t *testing.T, certFile, keyFile string) *tlsutil.KeyPair {
	t.Helper()
	kp, err := tlsutil.LoadKeyPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// handshake connects a client to a server over 127.0.0.1 and exchanges a
// byte both ways, returning the first error either end saw.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErr := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 1)
		if _, err := io.ReadFull(conn, b); err != nil {
			serverErr <- err
			return
		}
		_, err = conn.Write(b)
		serverErr <- err
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), clientCfg)
	if err == nil {
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err = conn.Write([]byte{1}); err == nil {
			_, err = io.ReadFull(conn, make([]byte, 1))
		}
	}
	if sErr := <-serverErr; sErr != nil {
		return sErr
	}
	return err
}

// fatalRecorder is a testing.TB whose Fatalf records the message and
// ends the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestServerWithOtherHostsFails(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	p := New(rec, "")
	p.Server("s", "a.example")
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Server("s", "b.example")
	}()
	<-done
	if !strings.Contains(rec.msg, "a.example") || !strings.Contains(rec.msg, "b.example") {
		t.Errorf("asking for the same server name with other hosts: Fatalf(%q), want a message naming both", rec.msg)
	}
}
