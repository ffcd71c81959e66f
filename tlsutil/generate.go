package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// backdate is how far before now certificates start to be valid, so that
// a peer whose clock is a little behind accepts them at once.
const backdate = time.Hour

// CA is a certificate authority: its certificate and the key it signs
// certificates with.
type CA struct {
	// Cert is the CA's certificate.
	Cert *x509.Certificate
	// Key is the CA's private key.
	Key crypto.Signer
	// CertPEM and KeyPEM are Cert and Key PEM-encoded, as WriteFiles
	// writes them.
	CertPEM, KeyPEM []byte
}

// NewCA creates a self-signed CA: an ECDSA P-256 key and a certificate
// with CommonName name, valid from an hour ago until validity from now,
// that may sign certificates and CRLs but not other CAs (MaxPathLen 0).
func NewCA(name string, validity time.Duration) (*CA, error) {
	if name == "" {
		return nil, errors.New("tlsutil: a CA needs a name")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("tlsutil: CA validity %v is not positive", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: parse the new CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// LoadCA reads a CA's certificate and key from PEM files, as WriteFiles
// writes them for NewCA, or as openssl does: the key may be PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"),
// unencrypted. The certificate must be a CA's and the key its key.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read CA key: %w", err)
	}
	certs, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: CA certificate file %s: %w", certFile, err)
	}
	cert := certs[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("tlsutil: %s holds %q, which is not a CA certificate", certFile, cert.Subject.String())
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("tlsutil: the CA certificate in %s may not sign certificates (no certSign key usage)", certFile)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: CA key file %s: %w", keyFile, err)
	}
	if err := checkKeyMatches(cert, key); err != nil {
		return nil, fmt.Errorf("tlsutil: CA key file %s does not belong to the CA certificate in %s: %w", keyFile, certFile, err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(cert.Raw), KeyPEM: keyPEM}, nil
}

// Kind says what a certificate is for.
type Kind int

const (
	// KindServer is the certificate of a client-facing gRPC server
	// (extended key usage serverAuth).
	KindServer Kind = iota
	// KindClient is the certificate of a caller (clientAuth).
	KindClient
	// KindPeer is a node's certificate for node-to-node traffic: it is both
	// server and client (serverAuth and clientAuth) and names its node in a
	// URI SAN PeerURIPrefix + NodeID.
	KindPeer
)

// String returns "server", "client" or "peer".
func (k Kind) String() string {
	switch k {
	case KindServer:
		return "server"
	case KindClient:
		return "client"
	case KindPeer:
		return "peer"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// CertRequest describes a certificate to issue.
type CertRequest struct {
	// Kind says what the certificate is for.
	Kind Kind
	// Name is the subject's CommonName. For KindPeer it defaults to NodeID;
	// for KindServer to the first DNS name, else the first IP address. A
	// KindClient certificate needs one: it is the caller's identity.
	Name string
	// NodeID is the node a KindPeer certificate names, required for it and
	// refused for the others: 1-128 letters, digits, '.', '_' or '-'.
	NodeID string
	// DNSNames and IPs are the certificate's DNS and IP SANs. A KindServer
	// certificate without any gets "localhost", 127.0.0.1 and ::1.
	DNSNames []string
	IPs      []net.IP
	// Validity is how long from now the certificate is valid. Required.
	Validity time.Duration
}

// Validate reports what is wrong with the request, if anything, before a
// CA is needed: Issue would refuse it for that reason.
func (r CertRequest) Validate() error {
	switch r.Kind {
	case KindServer, KindClient:
		if r.NodeID != "" {
			return fmt.Errorf("a node ID is only for peer certificates, not %s ones", r.Kind)
		}
		if r.Kind == KindClient && r.Name == "" {
			return errors.New("a client certificate needs a name: it is the caller's identity")
		}
	case KindPeer:
		if err := validateNodeID(r.NodeID); err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
	default:
		return fmt.Errorf("unknown certificate kind %v", r.Kind)
	}
	if r.Validity <= 0 {
		return fmt.Errorf("validity %v is not positive", r.Validity)
	}
	for _, d := range r.DNSNames {
		if err := validateDNSName(d); err != nil {
			return err
		}
	}
	for _, ip := range r.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("invalid IP address %v", ip)
		}
	}
	return nil
}

// validateDNSName accepts host names (letters, digits, '-', '_', dots
// between non-empty labels) with an optional leading "*." wildcard.
func validateDNSName(name string) error {
	host := strings.TrimPrefix(name, "*.")
	if host == "" || len(name) > 253 {
		return fmt.Errorf("invalid DNS name %q", name)
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("invalid DNS name %q: empty or too long label", name)
		}
		for _, r := range label {
			if !isNameChar(r) || r == '.' {
				return fmt.Errorf("invalid DNS name %q: %q is not allowed", name, r)
			}
		}
	}
	return nil
}

// Issue creates an ECDSA P-256 key and a certificate for it signed by ca,
// as req describes, and returns both PEM-encoded (the key as PKCS#8). The
// certificate is valid from an hour ago (clock skew) until req.Validity
// from now, which must not be after the CA expires.
func (ca *CA) Issue(req CertRequest) (certPEM, keyPEM []byte, err error) {
	return ca.issue(req, time.Now())
}

// issue is Issue as of now: tests make expired certificates with it.
func (ca *CA) issue(req CertRequest, now time.Time) (certPEM, keyPEM []byte, err error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, nil, errors.New("tlsutil: Issue needs a CA with a certificate and a key")
	}
	if err := req.Validate(); err != nil {
		return nil, nil, fmt.Errorf("tlsutil: %w", err)
	}
	notAfter := now.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("tlsutil: the certificate would be valid until %s, after its CA %q expires (%s): ask for a shorter validity, or make a new CA",
			notAfter.UTC().Format(time.DateOnly), ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	tmpl := &x509.Certificate{
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPs,
	}
	name := req.Name
	switch req.Kind {
	case KindServer:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if len(req.DNSNames) == 0 && len(req.IPs) == 0 {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		if name == "" && len(tmpl.DNSNames) > 0 {
			name = tmpl.DNSNames[0]
		} else if name == "" {
			name = tmpl.IPAddresses[0].String()
		}
	case KindClient:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case KindPeer:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		u, err := url.Parse(PeerURIPrefix + req.NodeID)
		if err != nil {
			return nil, nil, fmt.Errorf("tlsutil: peer URI for node %q: %w", req.NodeID, err)
		}
		tmpl.URIs = []*url.URL{u}
		if name == "" {
			name = req.NodeID
		}
	}
	tmpl.Subject = pkix.Name{CommonName: name}
	if tmpl.SerialNumber, err = randomSerial(); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: generate key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: sign the %s certificate with CA %q: %w", req.Kind, ca.Cert.Subject.CommonName, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("tlsutil: generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteFiles writes certPEM to certFile (mode 0644) and keyPEM to keyFile
// (mode 0600), creating missing parent directories (mode 0700). Unless
// overwrite is true it refuses, before writing anything, when either file
// exists; the error then wraps fs.ErrExist. With overwrite each file is
// replaced atomically (written beside it, then renamed over it), so a
// process watching the files never reads half of one; it may still see
// the new key with the old certificate for a moment, which KeyPair
// tolerates.
func WriteFiles(certFile, keyFile string, certPEM, keyPEM []byte, overwrite bool) error {
	if filepath.Clean(certFile) == filepath.Clean(keyFile) {
		return fmt.Errorf("tlsutil: the certificate and the key must go to different files, not both to %s", certFile)
	}
	if !overwrite {
		for _, f := range []string{certFile, keyFile} {
			if _, err := os.Lstat(f); err == nil {
				return fmt.Errorf("tlsutil: refusing to overwrite %s: %w", f, fs.ErrExist)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("tlsutil: %w", err)
			}
		}
	}
	// The key first: if writing the certificate fails, no certificate is
	// left without its key.
	if err := writeFile(keyFile, keyPEM, 0o600, overwrite); err != nil {
		return err
	}
	if err := writeFile(certFile, certPEM, 0o644, overwrite); err != nil {
		if !overwrite {
			_ = os.Remove(keyFile)
		}
		return err
	}
	return nil
}

// writeFile writes data to path with mode perm (exactly: not reduced by
// the umask). Without overwrite it creates the file exclusively.
func writeFile(path string, data []byte, perm fs.FileMode, overwrite bool) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tlsutil: create directory for %s: %w", path, err)
	}
	var f *os.File
	if overwrite {
		f, err = os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	} else {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	}
	if err != nil {
		return fmt.Errorf("tlsutil: %w", err)
	}
	name := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(name)
			err = fmt.Errorf("tlsutil: write %s: %w", path, err)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if overwrite {
		return os.Rename(name, path)
	}
	return nil
}
