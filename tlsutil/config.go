package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
)

// ServerConfig returns the tls.Config of a server: TLS 1.2 or later, the
// certificate from kp (through GetCertificate, so a rotated certificate is
// served to new handshakes). kp must not be nil.
//
// When clientCAs is not nil, client certificates are verified against it:
// required when requireClientCert (tls.RequireAndVerifyClientCert), else
// checked only when a client sends one (tls.VerifyClientCertIfGiven). So
// that a rotated CA file applies to new handshakes, GetConfigForClient
// hands each handshake a copy of the returned config with the current
// pool. Set any other field (VerifyConnection, NextProtos...) on the
// returned config itself, before its first use: the copies are made from
// it, so a field set only on a Clone of it is lost. (grpc's
// credentials.NewTLS is fine: it re-applies its settings to what
// GetConfigForClient returns.) With clientCAs nil no certificate is asked
// for and requireClientCert is ignored.
func ServerConfig(kp *KeyPair, clientCAs *CAPool, requireClientCert bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: kp.GetCertificate,
	}
	if clientCAs == nil {
		return cfg
	}
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	// Also set here, so that the config verifies clients against the pool
	// it started with even if a caller drops GetConfigForClient.
	cfg.ClientCAs = clientCAs.Pool()

	type forPool struct {
		pool *x509.CertPool
		cfg  *tls.Config
	}
	var cached atomic.Pointer[forPool] // the copy for the current pool
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool := clientCAs.Pool()
		if c := cached.Load(); c != nil && c.pool == pool {
			return c.cfg, nil
		}
		c := cfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = pool
		cached.Store(&forPool{pool: pool, cfg: c})
		return c, nil
	}
	return cfg
}

// ClientConfig returns the tls.Config of a client: TLS 1.2 or later, the
// client certificate from kp when kp is not nil (through
// GetClientCertificate, so a rotated certificate is used by new
// handshakes), and ServerName serverName. An empty serverName lets the
// dialer fill it in from the address it dials, as crypto/tls and grpc do.
//
// When rootCAs is nil the server is verified as crypto/tls does by
// default, against the system's roots. Otherwise it is verified against
// the current rootCAs pool, so that a rotated CA file applies to new
// handshakes. crypto/tls can only verify against a pool fixed in the
// config, so the config sets InsecureSkipVerify and does the same checks
// in two callbacks:
//
//   - VerifyPeerCertificate verifies the server's chain against rootCAs,
//     for server authentication (extended key usage serverAuth), now.
//   - VerifyConnection verifies that the certificate is valid for the
//     server name the handshake asked for (ConnectionState.ServerName),
//     or, when that is empty, for serverName.
//
// There is no name to check when the connection was dialed by IP address
// and serverName is empty: crypto/tls does not send IP addresses as
// server names and does not tell the callbacks what it dialed. The server's chain
// is then verified but not its address, so any server certificate from
// rootCAs is accepted. Pass the name or IP the server's certificate lists
// as serverName to have it checked. (Between nodes the peer handshake
// checks the node ID the certificate names instead.)
//
// To add checks, wrap the callbacks rather than replace them: replacing
// VerifyPeerCertificate would accept any certificate.
func ClientConfig(rootCAs *CAPool, kp *KeyPair, serverName string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
	}
	if kp != nil {
		cfg.GetClientCertificate = kp.GetClientCertificate
	}
	if rootCAs == nil {
		return cfg
	}
	cfg.InsecureSkipVerify = true // replaced by the two callbacks below
	cfg.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		return verifyServerChain(rawCerts, rootCAs)
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		name := cs.ServerName
		if name == "" {
			name = serverName
		}
		if name == "" {
			return nil
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: the server sent no certificate")
		}
		if err := cs.PeerCertificates[0].VerifyHostname(name); err != nil {
			return fmt.Errorf("tls: the server's certificate does not name the server: %w", err)
		}
		return nil
	}
	return cfg
}

// verifyServerChain verifies a server's certificate chain against the
// current roots.
func verifyServerChain(rawCerts [][]byte, roots *CAPool) error {
	if len(rawCerts) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return fmt.Errorf("tls: parse the server's certificate: %w", err)
		}
		certs[i] = c
	}
	opts := x509.VerifyOptions{
		Roots:         roots.Pool(),
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return fmt.Errorf("tls: the server's certificate is not trusted by the CA bundle %s: %w", roots.file, err)
	}
	return nil
}
