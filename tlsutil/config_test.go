package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testPKI is the CAs and files of one handshake test.
type testPKI struct {
	dir                 string
	serverCA, clientCA  *CA
	foreignCA           *CA
	serverCAFile        string
	clientCAFile        string
	foreignCAFile       string
	server, client      [2]string // cert and key files
	expiredServer       [2]string
	expiredClient       [2]string
	clientAsServer      [2]string // a client certificate, presented by a server
	serverAsClient      [2]string // a server certificate, presented by a client
	foreignServer       [2]string
	foreignClient       [2]string
	peerA, peerB        [2]string
	foreignPeer         [2]string
	peerCA              *CA
	peerCAFile          string
	otherNameServer     [2]string // for other.example only
	serverWithoutIPSANs [2]string // for localhost only
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{dir: dir}
	p.serverCA, p.clientCA, p.foreignCA, p.peerCA = newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "foreign CA"), newTestCA(t, "peer CA")
	p.serverCAFile = writeCA(t, dir, "server-ca", p.serverCA.CertPEM)
	p.clientCAFile = writeCA(t, dir, "client-ca", p.clientCA.CertPEM)
	p.foreignCAFile = writeCA(t, dir, "foreign-ca", p.foreignCA.CertPEM)
	p.peerCAFile = writeCA(t, dir, "peer-ca", p.peerCA.CertPEM)
	files := func(name string, ca *CA, req CertRequest) [2]string {
		certPEM, keyPEM := mustIssueWith(t, ca, req, false)
		c, k := writePair(t, dir, name, certPEM, keyPEM)
		return [2]string{c, k}
	}
	expired := func(name string, ca *CA, req CertRequest) [2]string {
		certPEM, keyPEM := mustIssueWith(t, ca, req, true)
		c, k := writePair(t, dir, name, certPEM, keyPEM)
		return [2]string{c, k}
	}
	server := CertRequest{Kind: KindServer}
	client := CertRequest{Kind: KindClient, Name: "alice"}
	p.server = files("server", p.serverCA, server)
	p.client = files("client", p.clientCA, client)
	p.expiredServer = expired("expired-server", p.serverCA, server)
	p.expiredClient = expired("expired-client", p.clientCA, client)
	p.clientAsServer = files("client-as-server", p.serverCA, CertRequest{Kind: KindClient, Name: "localhost", DNSNames: []string{"localhost"}})
	p.serverAsClient = files("server-as-client", p.clientCA, server)
	p.foreignServer = files("foreign-server", p.foreignCA, server)
	p.foreignClient = files("foreign-client", p.foreignCA, client)
	p.peerA = files("peer-a", p.peerCA, CertRequest{Kind: KindPeer, NodeID: "a"})
	p.peerB = files("peer-b", p.peerCA, CertRequest{Kind: KindPeer, NodeID: "b"})
	p.foreignPeer = files("foreign-peer", p.foreignCA, CertRequest{Kind: KindPeer, NodeID: "a"})
	p.otherNameServer = files("other-name-server", p.serverCA, CertRequest{Kind: KindServer, DNSNames: []string{"other.example"}})
	p.serverWithoutIPSANs = files("no-ip-server", p.serverCA, CertRequest{Kind: KindServer, DNSNames: []string{"localhost"}})
	return p
}

func TestHandshake(t *testing.T) {
	p := newTestPKI(t)
	none := [2]string{}
	tests := []struct {
		name string
		// The server's certificate, the CA it checks clients against ("":
		// none) and whether it requires a client certificate.
		serverCert     [2]string
		clientCAFile   string
		requireClient  bool
		rootCAFile     string    // the client's roots
		clientCert     [2]string // none: no client certificate
		serverName     string
		wantClientErr  error // errors.As target the client's error must match
		wantServerErr  error // errors.As target the server's error must match
		wantServerName string
	}{
		{name: "TLS without client certificates", serverCert: p.server, rootCAFile: p.serverCAFile},
		{name: "mTLS", serverCert: p.server, clientCAFile: p.clientCAFile, requireClient: true, rootCAFile: p.serverCAFile, clientCert: p.client},
		{name: "optional client certificate given", serverCert: p.server, clientCAFile: p.clientCAFile, rootCAFile: p.serverCAFile, clientCert: p.client},
		{name: "optional client certificate not given", serverCert: p.server, clientCAFile: p.clientCAFile, rootCAFile: p.serverCAFile},
		{name: "peers", serverCert: p.peerA, clientCAFile: p.peerCAFile, requireClient: true, rootCAFile: p.peerCAFile, clientCert: p.peerB},
		{name: "server name checked", serverCert: p.server, rootCAFile: p.serverCAFile, serverName: "localhost"},
		{name: "IP server name checked", serverCert: p.server, rootCAFile: p.serverCAFile, serverName: "127.0.0.1"},

		{
			name: "server certificate from a foreign CA", serverCert: p.foreignServer, rootCAFile: p.serverCAFile,
			wantClientErr: &x509.UnknownAuthorityError{},
		},
		{
			name: "peer certificate from a foreign CA", serverCert: p.foreignPeer, clientCAFile: p.peerCAFile, requireClient: true,
			rootCAFile: p.peerCAFile, clientCert: p.peerB, wantClientErr: &x509.UnknownAuthorityError{},
		},
		{
			name: "client certificate from a foreign CA", serverCert: p.server, clientCAFile: p.clientCAFile, requireClient: true,
			rootCAFile: p.serverCAFile, clientCert: p.foreignClient, wantServerErr: &x509.UnknownAuthorityError{},
		},
		{
			name: "optional client certificate from a foreign CA", serverCert: p.server, clientCAFile: p.clientCAFile,
			rootCAFile: p.serverCAFile, clientCert: p.foreignClient, wantServerErr: &x509.UnknownAuthorityError{},
		},
		{
			name: "foreign peer certificate as a client", serverCert: p.peerA, clientCAFile: p.peerCAFile, requireClient: true,
			rootCAFile: p.peerCAFile, clientCert: p.foreignPeer, wantServerErr: &x509.UnknownAuthorityError{},
		},
		{
			name: "expired server certificate", serverCert: p.expiredServer, rootCAFile: p.serverCAFile,
			wantClientErr: &x509.CertificateInvalidError{Reason: x509.Expired},
		},
		{
			name: "expired client certificate", serverCert: p.server, clientCAFile: p.clientCAFile, requireClient: true,
			rootCAFile: p.serverCAFile, clientCert: p.expiredClient, wantServerErr: &x509.CertificateInvalidError{Reason: x509.Expired},
		},
		{
			name: "client certificate used as a server's", serverCert: p.clientAsServer, rootCAFile: p.serverCAFile,
			wantClientErr: &x509.CertificateInvalidError{Reason: x509.IncompatibleUsage},
		},
		{
			name: "server certificate used as a client's", serverCert: p.server, clientCAFile: p.clientCAFile, requireClient: true,
			rootCAFile: p.serverCAFile, clientCert: p.serverAsClient, wantServerErr: &x509.CertificateInvalidError{Reason: x509.IncompatibleUsage},
		},
		{
			name: "required client certificate missing", serverCert: p.server, clientCAFile: p.clientCAFile, requireClient: true,
			rootCAFile: p.serverCAFile, wantServerErr: errClientCertMissing,
		},
		{
			name: "wrong server name", serverCert: p.otherNameServer, rootCAFile: p.serverCAFile, serverName: "localhost",
			wantClientErr: &x509.HostnameError{},
		},
		{
			name: "IP server name not in the certificate", serverCert: p.serverWithoutIPSANs, rootCAFile: p.serverCAFile, serverName: "127.0.0.1",
			wantClientErr: &x509.HostnameError{},
		},
		{
			// Documented limit: a connection dialed by IP without a server
			// name checks the chain only.
			name: "IP dialed without server name", serverCert: p.serverWithoutIPSANs, rootCAFile: p.serverCAFile,
		},
		{
			name: "system roots do not trust a private CA", serverCert: p.server, serverName: "localhost",
			wantClientErr: &x509.UnknownAuthorityError{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kp := mustLoadKeyPair(t, tt.serverCert[0], tt.serverCert[1], nil)
			var clientCAs *CAPool
			if tt.clientCAFile != "" {
				clientCAs = mustLoadCAPool(t, tt.clientCAFile)
			}
			srv := startEchoServer(t, ServerConfig(kp, clientCAs, tt.requireClient))

			var roots *CAPool
			if tt.rootCAFile != "" {
				roots = mustLoadCAPool(t, tt.rootCAFile)
			}
			var clientKP *KeyPair
			if tt.clientCert != none {
				clientKP = mustLoadKeyPair(t, tt.clientCert[0], tt.clientCert[1], nil)
			}
			conn, err := dial(t, srv.addr, ClientConfig(roots, clientKP, tt.serverName))

			switch {
			case tt.wantClientErr != nil:
				if !errorsAs(err, tt.wantClientErr) {
					t.Fatalf("client: %v, want %T %v", err, tt.wantClientErr, tt.wantClientErr)
				}
			case tt.wantServerErr != nil:
				if err == nil {
					t.Fatal("the connection works, want it refused by the server")
				}
				if serr := srv.handshakeError(t); !errorsAs(serr, tt.wantServerErr) {
					t.Fatalf("server: %v, want %T %v", serr, tt.wantServerErr, tt.wantServerErr)
				}
			case err != nil:
				t.Fatalf("handshake failed: %v", err)
			default:
				cs := conn.ConnectionState()
				if cs.Version < tls.VersionTLS12 {
					t.Errorf("version %x, want TLS 1.2 or later", cs.Version)
				}
				if got, want := cs.PeerCertificates[0].SerialNumber, kp.Leaf().SerialNumber; got.Cmp(want) != 0 {
					t.Errorf("the server presented serial %v, want %v", got, want)
				}
			}
		})
	}
}

// errClientCertMissing stands for the error a server reports when a
// required client certificate is missing; crypto/tls has no type for it.
var errClientCertMissing = errors.New("client didn't provide a certificate")

// errorsAs reports whether err matches target: an error of target's type
// (and, for CertificateInvalidError, the same reason), or for
// errClientCertMissing an error that says so.
func errorsAs(err, target error) bool {
	if err == nil {
		return false
	}
	switch want := target.(type) {
	case *x509.UnknownAuthorityError:
		var got x509.UnknownAuthorityError
		return errors.As(err, &got)
	case *x509.HostnameError:
		var got x509.HostnameError
		return errors.As(err, &got)
	case *x509.CertificateInvalidError:
		var got x509.CertificateInvalidError
		return errors.As(err, &got) && got.Reason == want.Reason
	}
	return strings.Contains(err.Error(), target.Error())
}

func TestServerConfigSettings(t *testing.T) {
	p := newTestPKI(t)
	kp := mustLoadKeyPair(t, p.server[0], p.server[1], nil)
	pool := mustLoadCAPool(t, p.clientCAFile)
	tests := []struct {
		name      string
		clientCAs *CAPool
		require   bool
		want      tls.ClientAuthType
	}{
		{name: "no client CA", want: tls.NoClientCert},
		{name: "no client CA, require ignored", require: true, want: tls.NoClientCert},
		{name: "optional", clientCAs: pool, want: tls.VerifyClientCertIfGiven},
		{name: "required", clientCAs: pool, require: true, want: tls.RequireAndVerifyClientCert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ServerConfig(kp, tt.clientCAs, tt.require)
			if cfg.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion %x, want TLS 1.2", cfg.MinVersion)
			}
			if cfg.ClientAuth != tt.want {
				t.Errorf("ClientAuth %v, want %v", cfg.ClientAuth, tt.want)
			}
			if (cfg.GetConfigForClient != nil) != (tt.clientCAs != nil) {
				t.Errorf("GetConfigForClient set: %v, want %v", cfg.GetConfigForClient != nil, tt.clientCAs != nil)
			}
			if cfg.GetConfigForClient == nil {
				return
			}
			per, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
			if err != nil {
				t.Fatal(err)
			}
			if per.ClientAuth != tt.want || per.ClientCAs != pool.Pool() || per.MinVersion != tls.VersionTLS12 || per.GetCertificate == nil {
				t.Errorf("the per-handshake config differs: ClientAuth %v, MinVersion %x", per.ClientAuth, per.MinVersion)
			}
		})
	}
}

// TestServerCertificateRotation: a server serves certificate A; its files
// are replaced with B (write beside, rename over); new handshakes get B,
// and a connection made before keeps working.
func TestServerCertificateRotation(t *testing.T) {
	ca := newTestCA(t, "ca")
	dir := t.TempDir()
	caFile := writeCA(t, dir, "ca", ca.CertPEM)
	a := newPair(t, ca, CertRequest{Kind: KindServer})
	b := newPair(t, ca, CertRequest{Kind: KindServer})
	certFile, keyFile := writePair(t, dir, "server", a.certPEM, a.keyPEM)
	logger, logs := newTestLogger()
	kp := mustLoadKeyPair(t, certFile, keyFile, logger)
	kp.SetReloadInterval(5 * time.Millisecond)
	srv := startEchoServer(t, ServerConfig(kp, nil, false))
	clientCfg := ClientConfig(mustLoadCAPool(t, caFile), nil, "localhost")

	before, err := dial(t, srv.addr, clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := before.ConnectionState().PeerCertificates[0].SerialNumber.String(); got != a.serial {
		t.Fatalf("the server presented %s, want A %s", got, a.serial)
	}

	writePair(t, dir, "server", b.certPEM, b.keyPEM)
	eventually(t, "a new connection gets B", func() error {
		conn, err := dial(t, srv.addr, clientCfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		if got := conn.ConnectionState().PeerCertificates[0].SerialNumber.String(); got != b.serial {
			return fmt.Errorf("got serial %s: %w", got, errNotYet)
		}
		return nil
	})
	if err := echo(before); err != nil {
		t.Errorf("the connection made before the rotation broke: %v", err)
	}
	if !strings.Contains(logs.String(), "reloaded the certificate") {
		t.Errorf("the reload was not logged:\n%s", logs)
	}
}

// TestServerConfigClientCARotation: replacing the client CA file applies
// to new handshakes, and a VerifyConnection set on the returned config
// still runs after the rotation.
func TestServerConfigClientCARotation(t *testing.T) {
	p := newTestPKI(t)
	caFile := writeCA(t, p.dir, "rotating-ca", p.clientCA.CertPEM)
	clientCAs := mustLoadCAPool(t, caFile)
	clientCAs.SetReloadInterval(5 * time.Millisecond)
	cfg := ServerConfig(mustLoadKeyPair(t, p.server[0], p.server[1], nil), clientCAs, true)
	var verified atomic.Int64
	cfg.VerifyConnection = func(tls.ConnectionState) error { verified.Add(1); return nil }
	srv := startEchoServer(t, cfg)
	roots := mustLoadCAPool(t, p.serverCAFile)
	oldClient := ClientConfig(roots, mustLoadKeyPair(t, p.client[0], p.client[1], nil), "localhost")
	newClient := ClientConfig(roots, mustLoadKeyPair(t, p.foreignClient[0], p.foreignClient[1], nil), "localhost")

	if _, err := dial(t, srv.addr, oldClient); err != nil {
		t.Fatalf("a client of the old CA: %v", err)
	}
	if _, err := dial(t, srv.addr, newClient); err == nil {
		t.Fatal("a client of the new CA connected before the rotation")
	}
	if err := srv.handshakeError(t); !errorsAs(err, &x509.UnknownAuthorityError{}) {
		t.Fatalf("server: %v, want an unknown authority", err)
	}

	writeCA(t, p.dir, "rotating-ca", p.foreignCA.CertPEM)
	eventually(t, "a client of the new CA connects", func() error {
		conn, err := dial(t, srv.addr, newClient)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if _, err := dial(t, srv.addr, oldClient); err == nil {
		t.Error("a client of the old CA still connects after the rotation")
	}
	n := verified.Load()
	if _, err := dial(t, srv.addr, newClient); err != nil {
		t.Fatal(err)
	}
	if verified.Load() == n {
		t.Error("the VerifyConnection set on the returned config did not run after the rotation")
	}
}

// TestClientConfigRootCARotation: replacing the client's CA file applies
// to new handshakes.
func TestClientConfigRootCARotation(t *testing.T) {
	p := newTestPKI(t)
	srv := startEchoServer(t, ServerConfig(mustLoadKeyPair(t, p.foreignServer[0], p.foreignServer[1], nil), nil, false))
	caFile := writeCA(t, p.dir, "rotating-ca", p.serverCA.CertPEM)
	roots := mustLoadCAPool(t, caFile)
	roots.SetReloadInterval(5 * time.Millisecond)
	cfg := ClientConfig(roots, nil, "localhost")
	if _, err := dial(t, srv.addr, cfg); !errorsAs(err, &x509.UnknownAuthorityError{}) {
		t.Fatalf("before the rotation: %v, want an unknown authority", err)
	}
	if _, err := dial(t, srv.addr, cfg); err == nil || !strings.Contains(err.Error(), filepath.Base(caFile)) {
		t.Errorf("the error %q does not name the CA file", err)
	}
	writeCA(t, p.dir, "rotating-ca", p.foreignCA.CertPEM)
	eventually(t, "the server of the new CA is trusted", func() error {
		conn, err := dial(t, srv.addr, cfg)
		if err == nil {
			conn.Close()
		}
		return err
	})
}

// TestClientConfigClonedForDial: dialers clone the config and fill in
// ServerName per connection (crypto/tls's Dial, grpc, the transport);
// the clone's name is what is checked.
func TestClientConfigClonedForDial(t *testing.T) {
	p := newTestPKI(t)
	srv := startEchoServer(t, ServerConfig(mustLoadKeyPair(t, p.otherNameServer[0], p.otherNameServer[1], nil), nil, false))
	base := ClientConfig(mustLoadCAPool(t, p.serverCAFile), nil, "")
	for _, tt := range []struct {
		name    string
		wantErr bool
	}{{"other.example", false}, {"localhost", true}} {
		cfg := base.Clone()
		cfg.ServerName = tt.name
		_, err := dial(t, srv.addr, cfg)
		if (err != nil) != tt.wantErr {
			t.Errorf("ServerName %q on a clone: %v, want error %v", tt.name, err, tt.wantErr)
		}
	}
}
