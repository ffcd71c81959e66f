// Package testpki makes certificate authorities and certificates for
// tests, written to files as a node or a client would load them.
package testpki

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/tlsutil"
)

// validity is how long test certificates are valid: long enough for any
// test run.
const validity = 7 * 24 * time.Hour

// PKI is a set of CAs, and certificates they issued, written to files for
// one test. Its methods are safe for concurrent use. They fail the test
// given to New (t.Fatal) on errors, so call them where that test may stop.
type PKI struct {
	// Dir holds every file.
	Dir string
	// PeerCA issues peer (node-to-node) certificates, ServerCA the
	// client-facing servers' and ClientCA the callers'.
	PeerCA, ServerCA, ClientCA *tlsutil.CA
	// PeerCAFile, ServerCAFile and ClientCAFile hold the CAs' certificates
	// (their keys are beside them, as *-ca-key.pem).
	PeerCAFile, ServerCAFile, ClientCAFile string

	t  testing.TB
	mu sync.Mutex
	// issued maps a kind and name to what was issued for it.
	issued  map[string]issued
	foreign *tlsutil.CA
}

type issued struct {
	certFile, keyFile string
	hosts             []string
}

// New creates a peer CA, a server CA (for the client-facing port) and a
// client CA, writing them under dir, or under t.TempDir() when dir is "".
func New(t testing.TB, dir string) *PKI {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	p := &PKI{Dir: dir, t: t, issued: map[string]issued{}}
	p.PeerCA, p.PeerCAFile = p.newCA("peer")
	p.ServerCA, p.ServerCAFile = p.newCA("server")
	p.ClientCA, p.ClientCAFile = p.newCA("client")
	return p
}

func (p *PKI) newCA(prefix string) (*tlsutil.CA, string) {
	p.t.Helper()
	ca, err := tlsutil.NewCA("ordinal test "+prefix+" CA", validity+time.Hour)
	if err != nil {
		p.t.Fatalf("testpki: %v", err)
	}
	certFile := filepath.Join(p.Dir, prefix+"-ca.pem")
	p.write(certFile, filepath.Join(p.Dir, prefix+"-ca-key.pem"), ca.CertPEM, ca.KeyPEM)
	return ca, certFile
}

// Peer issues a peer certificate for nodeID, with the SANs localhost and
// 127.0.0.1, and returns its files. The same nodeID gets the same files.
func (p *PKI) Peer(nodeID string) (certFile, keyFile string) {
	p.t.Helper()
	return p.issue(p.PeerCA, "peer", tlsutil.CertRequest{Kind: tlsutil.KindPeer, NodeID: nodeID}, []string{"localhost", "127.0.0.1"}, nodeID)
}

// Server issues a client-facing server certificate with CommonName name,
// for hosts (DNS names or IP addresses; localhost and 127.0.0.1 when
// none), and returns its files. The same name gets the same files; asking
// again with other hosts (in any order) is a test bug and fails the test.
func (p *PKI) Server(name string, hosts ...string) (certFile, keyFile string) {
	p.t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1"}
	}
	return p.issue(p.ServerCA, "server", tlsutil.CertRequest{Kind: tlsutil.KindServer, Name: name}, hosts, name)
}

// Client issues a client certificate with CommonName name and returns its
// files. The same name gets the same files.
func (p *PKI) Client(name string) (certFile, keyFile string) {
	p.t.Helper()
	return p.issue(p.ClientCA, "client", tlsutil.CertRequest{Kind: tlsutil.KindClient, Name: name}, nil, name)
}

// ForeignPeer issues a peer certificate for nodeID from a CA other than
// PeerCA (one per PKI, made on first use): what an attacker who can make
// their own certificates presents. The same nodeID gets the same files.
func (p *PKI) ForeignPeer(nodeID string) (certFile, keyFile string) {
	p.t.Helper()
	p.mu.Lock()
	if p.foreign == nil {
		ca, err := tlsutil.NewCA("ordinal test foreign CA", validity+time.Hour)
		if err != nil {
			p.mu.Unlock()
			p.t.Fatalf("testpki: %v", err)
		}
		p.foreign = ca
	}
	ca := p.foreign
	p.mu.Unlock()
	return p.issue(ca, "foreign-peer", tlsutil.CertRequest{Kind: tlsutil.KindPeer, NodeID: nodeID}, []string{"localhost", "127.0.0.1"}, nodeID)
}

// issue issues req from ca, with hosts as SANs, and writes it to files
// named after kind and name, once per kind and name.
func (p *PKI) issue(ca *tlsutil.CA, kind string, req tlsutil.CertRequest, hosts []string, name string) (certFile, keyFile string) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	key := kind + "\x00" + name
	if was, ok := p.issued[key]; ok {
		if !sameHosts(was.hosts, hosts) {
			p.t.Fatalf("testpki: %s certificate %q was issued for %v, now asked for %v: use another name", kind, name, was.hosts, hosts)
		}
		return was.certFile, was.keyFile
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			req.IPs = append(req.IPs, ip)
		} else {
			req.DNSNames = append(req.DNSNames, h)
		}
	}
	req.Validity = validity
	certPEM, keyPEM, err := ca.Issue(req)
	if err != nil {
		p.t.Fatalf("testpki: issue %s certificate %q: %v", kind, name, err)
	}
	// A counter keeps names that differ only in characters a file name
	// cannot hold apart.
	base := fmt.Sprintf("%s-%d-%s", kind, len(p.issued), fileSafe(name))
	certFile = filepath.Join(p.Dir, base+".pem")
	keyFile = filepath.Join(p.Dir, base+"-key.pem")
	p.write(certFile, keyFile, certPEM, keyPEM)
	p.issued[key] = issued{certFile: certFile, keyFile: keyFile, hosts: slices.Clone(hosts)}
	return certFile, keyFile
}

func (p *PKI) write(certFile, keyFile string, certPEM, keyPEM []byte) {
	p.t.Helper()
	if err := tlsutil.WriteFiles(certFile, keyFile, certPEM, keyPEM, false); err != nil {
		p.t.Fatalf("testpki: %v", err)
	}
}

// sameHosts reports whether a and b hold the same hosts, in any order.
func sameHosts(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// fileSafe replaces what may not appear in a file name.
func fileSafe(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, name)
}
