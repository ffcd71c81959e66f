package etcdcompat_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/etcdtest"
	"github.com/ordinal-dev/ordinal/internal/history"
)

// TestTLSAndAuth runs ordinal against an etcd that requires TLS with
// client certificates and password authentication: the --etcd-ca-file,
// --etcd-cert-file, --etcd-key-file, --etcd-username and --etcd-password
// settings.
func TestTLSAndAuth(t *testing.T) {
	bin := etcdtest.Require(t)
	pki := newPKI(t)
	e, err := etcdtest.LaunchTLS(bin, &etcdtest.TLS{
		CertFile: pki.serverCert, KeyFile: pki.serverKey, ClientCAFile: pki.caFile,
		Client: pki.clientTLS(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)

	const password = "s3cret"
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, TLS: pki.clientTLS(t), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", password); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable etcd auth: %v", err)
		}
	}

	cfg := etcdcompat.Config{
		CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey,
		Username: "root", Password: password,
	}
	c := etcdtest.NewCluster(t, e, etcdtest.Options{Nodes: 2, Store: cfg})
	rec := history.NewRecorder()
	for i, nd := range c.Nodes() {
		mustCall(t, rec, i, nd, "tls", true)
		mustCall(t, rec, i, nd, "tls", false)
	}
	checkHistory(t, rec.Ops())

	// A wrong password keeps the node waiting, and says why.
	bad := cfg
	bad.Endpoints, bad.Password, bad.NodeID, bad.PeerAdvertise = []string{e.Endpoint}, "wrong", "n9", "127.0.0.1:1"
	st, err := etcdcompat.Open(bad)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sctx, scancel := context.WithTimeout(context.Background(), time.Second)
	defer scancel()
	if err := st.Start(sctx); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("start with a wrong password: %v, want an authentication failure", err)
	}
}

// pki is a throw-away CA with a server certificate for 127.0.0.1 and a
// client certificate.
type pki struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ordinal test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{caFile: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", kder)
		return certFile, keyFile
	}
	p.serverCert, p.serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issue("root", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func (p *pki) clientTLS(t *testing.T) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
