package tlsutil

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
)

// KeyPair is a certificate and its private key, loaded from PEM files and
// re-read when either file changes, so that a certificate can be rotated
// without a restart: replace both files (ideally each by renaming a
// complete file over it) and new handshakes use the new pair.
//
// A KeyPair is safe for concurrent use.
type KeyPair struct {
	r *reloader[*tls.Certificate]
}

// LoadKeyPair loads a certificate and key from PEM files. The certificate
// file holds the leaf certificate first, then any intermediates; the key
// file holds a PKCS#8, EC or PKCS#1 private key. It fails when a file
// cannot be read or parsed, or when the key does not belong to the
// certificate, and the error says which file and why. Later the files are
// re-read when they change (see Certificate). logger receives reloads and
// failed reloads; nil means none.
func LoadKeyPair(certFile, keyFile string, logger hclog.Logger) (*KeyPair, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	load := func() (*tls.Certificate, error) {
		c, err := readKeyPair(certFile, keyFile)
		if err == nil {
			warnValidity(logger, "certificate", certFile, c.Leaf)
		}
		return c, err
	}
	r, err := newReloader("certificate", []string{certFile, keyFile}, load, certFields, logger)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	return &KeyPair{r: r}, nil
}

// SetReloadInterval changes how often, at most, the files are checked for
// changes; DefaultReloadInterval until then. Zero or less checks them on
// every call to Certificate.
func (k *KeyPair) SetReloadInterval(d time.Duration) { k.r.setInterval(d) }

// Certificate returns the current certificate and key.
//
// At most once per reload interval it stats both files, and re-reads them
// when the size, modification time or inode of either changed. If the new
// files are not a valid pair (one is half-written, or the certificate was
// replaced and its key not yet) it keeps returning the pair it has, logs
// the error once for that version of the files, and tries again at the
// next interval. There is no background goroutine: the check happens in
// the call, and between checks a call costs one atomic load.
//
// The error is always nil; it is there to match tls.Config's callbacks.
func (k *KeyPair) Certificate() (*tls.Certificate, error) {
	return k.r.get(), nil
}

// GetCertificate returns the current pair, for tls.Config.GetCertificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.Certificate()
}

// GetClientCertificate returns the current pair, for
// tls.Config.GetClientCertificate. It is sent whatever CAs the server
// says it accepts: a server that does not trust it says so.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.Certificate()
}

// Leaf returns the parsed leaf certificate of the current pair. It must
// not be modified.
func (k *KeyPair) Leaf() *x509.Certificate {
	c, _ := k.Certificate()
	return c.Leaf
}

// readKeyPair reads and checks a certificate and key from their files.
func readKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	certs, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s: %w", certFile, err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", keyFile, err)
	}
	if err := checkKeyMatches(certs[0], key); err != nil {
		return nil, fmt.Errorf("key file %s does not belong to the certificate in %s: %w", keyFile, certFile, err)
	}
	der := make([][]byte, len(certs))
	for i, c := range certs {
		der[i] = c.Raw
	}
	return &tls.Certificate{Certificate: der, PrivateKey: key, Leaf: certs[0]}, nil
}

func certFields(c *tls.Certificate) []any {
	return []any{"subject", c.Leaf.Subject.String(), "serial", c.Leaf.SerialNumber.Text(16),
		"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339)}
}

// warnValidity logs a warning when cert is not valid now: it is used all
// the same (it may be what the operator wants to test), but handshakes
// with it will fail.
func warnValidity(logger hclog.Logger, what, file string, cert *x509.Certificate) {
	now := time.Now()
	switch {
	case now.After(cert.NotAfter):
		logger.Warn("the "+what+" has expired: handshakes with it will fail", "file", file,
			"subject", cert.Subject.String(), "not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(cert.NotBefore):
		logger.Warn("the "+what+" is not valid yet (is the clock right?): handshakes with it will fail", "file", file,
			"subject", cert.Subject.String(), "not_before", cert.NotBefore.UTC().Format(time.RFC3339))
	}
}

// CAPool is a bundle of CA certificates read from a PEM file and re-read
// when the file changes, under the same rules as KeyPair. A CAPool is safe
// for concurrent use.
type CAPool struct {
	file string
	r    *reloader[*x509.CertPool]
}

// LoadCAPool loads the CA certificates in a PEM file. It fails when the
// file cannot be read, holds no certificate, or holds one that does not
// parse. logger receives reloads and failed reloads; nil means none.
func LoadCAPool(file string, logger hclog.Logger) (*CAPool, error) {
	load := func() (*x509.CertPool, error) {
		certs, err := readCertificates(file)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
		return pool, nil
	}
	fields := func(*x509.CertPool) []any { return nil }
	r, err := newReloader("CA bundle", []string{file}, load, fields, logger)
	if err != nil {
		return nil, fmt.Errorf("load CA bundle: %w", err)
	}
	return &CAPool{file: file, r: r}, nil
}

// SetReloadInterval changes how often, at most, the file is checked for
// changes; DefaultReloadInterval until then. Zero or less checks it on
// every call to Pool.
func (p *CAPool) SetReloadInterval(d time.Duration) { p.r.setInterval(d) }

// Pool returns the current CA certificates. The pool must not be
// modified. It is the same pointer until the file changes, so callers may
// cache what they derive from it by pointer.
func (p *CAPool) Pool() *x509.CertPool { return p.r.get() }

func readCertificates(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	certs, err := parseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", file, err)
	}
	return certs, nil
}

// parseCertificates parses every CERTIFICATE block in data, in order,
// ignoring blocks of other types. An incomplete block at the end (a file
// still being written) is an error, so that a bundle is never taken with
// some of its certificates missing.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, errors.New("the last PEM block is incomplete (is the file still being written?)")
	}
	if len(certs) == 0 {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, errors.New("the file is empty")
		}
		return nil, errors.New("no PEM CERTIFICATE block found (a DER file needs converting: openssl x509 -inform der -in FILE -out FILE.pem)")
	}
	return certs, nil
}

// parsePrivateKey parses the first private key in data: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
// Other blocks, such as the "EC PARAMETERS" openssl writes first, are
// skipped.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var (
			key any
			err error
		)
		switch {
		case block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "":
			return nil, errors.New("the private key is encrypted; ordinal needs it unencrypted (openssl pkey -in KEY -out KEY.pem), protected by file permissions")
		case block.Type == "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case block.Type == "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case block.Type == "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, errors.New("the PEM block is incomplete (is the file still being written?)")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("the file is empty")
	}
	return nil, errors.New(`no PEM private key found (expected a "PRIVATE KEY", "EC PRIVATE KEY" or "RSA PRIVATE KEY" block)`)
}

// checkKeyMatches reports whether key is the private key of cert.
func checkKeyMatches(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return fmt.Errorf("unsupported public key type %T", key.Public())
	}
	if !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("the certificate's public key (%s, subject %q) is not the key's (%T): were they made by different runs?",
			cert.PublicKeyAlgorithm, cert.Subject.String(), key.Public())
	}
	return nil
}
