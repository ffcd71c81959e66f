package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	before := time.Now()
	ca, err := NewCA("test-ca", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if c.Subject.CommonName != "test-ca" {
		t.Errorf("CommonName = %q, want test-ca", c.Subject.CommonName)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("IsCA %v, BasicConstraintsValid %v, MaxPathLen %d, MaxPathLenZero %v; want a CA with path length 0",
			c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", c.KeyUsage, want)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v: want positive, at most 128 bits", c.SerialNumber)
	}
	if d := before.Add(-time.Hour).Sub(c.NotBefore); d < -time.Minute || d > time.Minute {
		t.Errorf("NotBefore %v, want about an hour before %v", c.NotBefore, before)
	}
	if d := before.Add(48 * time.Hour).Sub(c.NotAfter); d < -time.Minute || d > time.Minute {
		t.Errorf("NotAfter %v, want about 48h after %v", c.NotAfter, before)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("the CA is not self-signed: %v", err)
	}
	if err := checkKeyMatches(c, ca.Key); err != nil {
		t.Error(err)
	}
	other := newTestCA(t, "test-ca")
	if other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two CAs got the same serial number")
	}

	for _, bad := range []struct {
		name     string
		validity time.Duration
	}{{"", time.Hour}, {"x", 0}, {"x", -time.Hour}} {
		if _, err := NewCA(bad.name, bad.validity); err == nil {
			t.Errorf("NewCA(%q, %v) succeeded, want an error", bad.name, bad.validity)
		}
	}
}

func TestIssue(t *testing.T) {
	ca := newTestCA(t, "ca")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	loopbacks := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	tests := []struct {
		name     string
		req      CertRequest
		wantCN   string
		wantEKU  []x509.ExtKeyUsage
		wantDNS  []string
		wantIPs  []net.IP
		wantPeer string
	}{
		{
			name:    "server with defaults",
			req:     CertRequest{Kind: KindServer},
			wantCN:  "localhost",
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			wantDNS: []string{"localhost"},
			wantIPs: loopbacks,
		},
		{
			name:    "server with names",
			req:     CertRequest{Kind: KindServer, Name: "node1", DNSNames: []string{"node1", "*.ordinal.example"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}},
			wantCN:  "node1",
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			wantDNS: []string{"node1", "*.ordinal.example"},
			wantIPs: []net.IP{net.ParseIP("10.0.0.1")},
		},
		{
			name:    "server named after its IP",
			req:     CertRequest{Kind: KindServer, IPs: []net.IP{net.ParseIP("10.0.0.2")}},
			wantCN:  "10.0.0.2",
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			wantIPs: []net.IP{net.ParseIP("10.0.0.2")},
		},
		{
			name:    "client",
			req:     CertRequest{Kind: KindClient, Name: "alice"},
			wantCN:  "alice",
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
		{
			name:     "peer",
			req:      CertRequest{Kind: KindPeer, NodeID: "n1", DNSNames: []string{"n1.internal"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}},
			wantCN:   "n1",
			wantEKU:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			wantDNS:  []string{"n1.internal"},
			wantIPs:  []net.IP{net.ParseIP("127.0.0.1")},
			wantPeer: "n1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Validity = 12 * time.Hour
			before := time.Now()
			certPEM, keyPEM := mustIssue(t, ca, tt.req)
			certs, err := parseCertificates(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			c := certs[0]
			key, err := parsePrivateKey(keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkKeyMatches(c, key); err != nil {
				t.Error(err)
			}
			if _, ok := key.(*ecdsa.PrivateKey); !ok {
				t.Errorf("key %T, want ECDSA", key)
			}
			if c.Subject.CommonName != tt.wantCN {
				t.Errorf("CommonName = %q, want %q", c.Subject.CommonName, tt.wantCN)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.wantEKU) {
				t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, tt.wantEKU)
			}
			if !slices.Equal(c.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames = %q, want %q", c.DNSNames, tt.wantDNS)
			}
			if !slices.EqualFunc(c.IPAddresses, tt.wantIPs, net.IP.Equal) {
				t.Errorf("IPAddresses = %v, want %v", c.IPAddresses, tt.wantIPs)
			}
			if id, ok := PeerID(c); id != tt.wantPeer || ok != (tt.wantPeer != "") {
				t.Errorf("PeerID = %q, %v; want %q", id, ok, tt.wantPeer)
			}
			if c.IsCA {
				t.Error("an issued certificate is a CA")
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %v, want DigitalSignature", c.KeyUsage)
			}
			if d := before.Add(12 * time.Hour).Sub(c.NotAfter); d < -time.Minute || d > time.Minute {
				t.Errorf("NotAfter %v, want about 12h after %v", c.NotAfter, before)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: tt.wantEKU}); err != nil {
				t.Errorf("the certificate does not verify against its CA: %v", err)
			}
		})
	}
}

func TestIssueRefusesInvalidRequests(t *testing.T) {
	ca := newTestCA(t, "ca")
	tests := []struct {
		name    string
		req     CertRequest
		wantErr string
	}{
		{name: "peer without node ID", req: CertRequest{Kind: KindPeer}, wantErr: "node ID is required"},
		{name: "peer with bad node ID", req: CertRequest{Kind: KindPeer, NodeID: "n/1"}, wantErr: "'/'"},
		{name: "peer with too long node ID", req: CertRequest{Kind: KindPeer, NodeID: strings.Repeat("n", 129)}, wantErr: "limit is 128"},
		{name: "client without name", req: CertRequest{Kind: KindClient}, wantErr: "needs a name"},
		{name: "server with node ID", req: CertRequest{Kind: KindServer, NodeID: "n1"}, wantErr: "only for peer"},
		{name: "unknown kind", req: CertRequest{Kind: Kind(7)}, wantErr: "Kind(7)"},
		{name: "no validity", req: CertRequest{Kind: KindServer, Validity: -1}, wantErr: "not positive"},
		{name: "bad DNS name", req: CertRequest{Kind: KindServer, DNSNames: []string{"a b"}}, wantErr: `"a b"`},
		{name: "empty DNS label", req: CertRequest{Kind: KindServer, DNSNames: []string{"a..b"}}, wantErr: `"a..b"`},
		{name: "bad IP", req: CertRequest{Kind: KindServer, IPs: []net.IP{{1, 2, 3}}}, wantErr: "invalid IP"},
		{name: "outlives its CA", req: CertRequest{Kind: KindServer, Validity: 365 * 24 * time.Hour}, wantErr: "after its CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.Validity == 0 {
				tt.req.Validity = time.Hour
			}
			certPEM, keyPEM, err := ca.Issue(tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Issue(%+v) = %v, want an error containing %q", tt.req, err, tt.wantErr)
			}
			if certPEM != nil || keyPEM != nil {
				t.Error("Issue returned PEM with an error")
			}
		})
	}
	if _, _, err := (&CA{}).Issue(CertRequest{Kind: KindServer, Validity: time.Hour}); err == nil {
		t.Error("Issue with an empty CA succeeded")
	}
}

func TestLoadCARoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "round-trip")
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := WriteFiles(certFile, keyFile, ca.CertPEM, ca.KeyPEM, false); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("LoadCA returned another certificate")
	}
	if !ca.Key.Public().(*ecdsa.PublicKey).Equal(loaded.Key.Public()) {
		t.Error("LoadCA returned another key")
	}
	if string(loaded.CertPEM) != string(ca.CertPEM) || string(loaded.KeyPEM) != string(ca.KeyPEM) {
		t.Error("LoadCA's PEM differs from what was written")
	}
	// What the loaded CA issues verifies against the original.
	certPEM, _ := mustIssue(t, loaded, CertRequest{Kind: KindClient, Name: "alice"})
	certs, err := parseCertificates(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a certificate from the loaded CA does not verify against the original: %v", err)
	}
}

// selfSignedCA makes a CA certificate for key as openssl would, and
// returns it PEM-encoded.
func selfSignedCA(t *testing.T, key crypto.Signer, isCA bool) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "openssl-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return encodeCert(der)
}

func TestLoadCAKeyFormats(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	otherCA := newTestCA(t, "other")
	tests := []struct {
		name    string
		certPEM []byte
		keyPEM  []byte
		wantErr string
	}{
		{name: "PKCS#8", certPEM: selfSignedCA(t, ecKey, true), keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})},
		{
			name:    "SEC 1 after EC PARAMETERS (openssl ecparam -genkey)",
			certPEM: selfSignedCA(t, ecKey, true),
			keyPEM:  append(ecParams, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})...),
		},
		{
			name:    "PKCS#1 RSA",
			certPEM: selfSignedCA(t, rsaKey, true),
			keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}),
		},
		{
			name:    "not a CA",
			certPEM: selfSignedCA(t, ecKey, false),
			keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
			wantErr: "not a CA certificate",
		},
		{name: "key of another CA", certPEM: selfSignedCA(t, ecKey, true), keyPEM: otherCA.KeyPEM, wantErr: "does not belong"},
		{
			name:    "encrypted key",
			certPEM: selfSignedCA(t, ecKey, true),
			keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}),
			wantErr: "encrypted",
		},
		{name: "no key", certPEM: selfSignedCA(t, ecKey, true), keyPEM: otherCA.CertPEM, wantErr: "no PEM private key"},
		{name: "no certificate", certPEM: []byte("garbage"), keyPEM: otherCA.KeyPEM, wantErr: "no PEM CERTIFICATE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := writePair(t, dir, "ca", tt.certPEM, tt.keyPEM)
			ca, err := LoadCA(certFile, keyFile)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadCA = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadCA: %v", err)
			}
			certPEM, _ := mustIssue(t, ca, CertRequest{Kind: KindPeer, NodeID: "n1"})
			certs, err := parseCertificates(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			if err := certs[0].CheckSignatureFrom(ca.Cert); err != nil {
				t.Errorf("the issued certificate is not signed by the loaded CA: %v", err)
			}
		})
	}
	if _, err := LoadCA(filepath.Join(t.TempDir(), "missing.pem"), "x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadCA of a missing file = %v, want fs.ErrNotExist", err)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "certs")
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c-key.pem")
	if err := WriteFiles(certFile, keyFile, []byte("cert1"), []byte("key1"), false); err != nil {
		t.Fatal(err)
	}
	modes := map[string]fs.FileMode{dir: 0o700 | fs.ModeDir, certFile: 0o644, keyFile: 0o600}
	for f, want := range modes {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", f, fi.Mode(), want)
		}
	}

	// Without overwrite nothing is written if either file exists.
	otherKey := filepath.Join(dir, "other-key.pem")
	err := WriteFiles(certFile, otherKey, []byte("cert2"), []byte("key2"), false)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), certFile) {
		t.Errorf("WriteFiles over an existing certificate = %v, want fs.ErrExist naming %s", err, certFile)
	}
	if _, err := os.Stat(otherKey); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the key was written although the certificate exists: %v", err)
	}
	otherCert := filepath.Join(dir, "other.pem")
	if err := WriteFiles(otherCert, keyFile, []byte("cert2"), []byte("key2"), false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteFiles over an existing key = %v, want fs.ErrExist", err)
	}
	if _, err := os.Stat(otherCert); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the certificate was written although the key exists: %v", err)
	}
	assertContent(t, certFile, "cert1")
	assertContent(t, keyFile, "key1")

	// With overwrite both are replaced, modes kept exact.
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFiles(certFile, keyFile, []byte("cert2"), []byte("key2"), true); err != nil {
		t.Fatal(err)
	}
	assertContent(t, certFile, "cert2")
	assertContent(t, keyFile, "key2")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode() != 0o600 {
		t.Errorf("overwritten key: %v, %v; want mode 0600", fi.Mode(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("directory holds %d files, want 2 (no temporary file left)", len(entries))
	}

	if err := WriteFiles(certFile, certFile, nil, nil, true); err == nil {
		t.Error("WriteFiles with the same file for certificate and key succeeded")
	}
}

func assertContent(t *testing.T, file, want string) {
	t.Helper()
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s holds %q, want %q", file, got, want)
	}
}
