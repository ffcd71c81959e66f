// Package tlsutil loads, reloads and creates the certificates ordinal uses
// for TLS: the client-facing gRPC server's, the callers', and the ones
// nodes present to each other (peer certificates).
//
// Certificates and CA bundles are read from PEM files and re-read when the
// files change, so that they can be rotated without a restart (see
// KeyPair and CAPool). ServerConfig and ClientConfig build tls.Configs on
// top of them. NewCA, CA.Issue and WriteFiles make certificates, for the
// 'ordinal tls' commands and for tests.
package tlsutil

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// PeerURIPrefix starts the URI SAN by which a peer (node-to-node)
// certificate names its node: "urn:ordinal:peer:<node-id>".
const PeerURIPrefix = "urn:ordinal:peer:"

// maxNodeIDLen is the longest node ID a peer certificate may name.
const maxNodeIDLen = 128

// PeerID returns the node ID a peer certificate names, from its URI SAN
// that starts with PeerURIPrefix. ok is false when the certificate has no
// such SAN, more than one, or one with an empty ID: such a certificate
// identifies no node.
func PeerID(cert *x509.Certificate) (id string, ok bool) {
	if cert == nil {
		return "", false
	}
	found := 0
	for _, u := range cert.URIs {
		if u == nil {
			continue
		}
		if rest, has := strings.CutPrefix(u.String(), PeerURIPrefix); has {
			found++
			id = rest
		}
	}
	if found != 1 || id == "" {
		return "", false
	}
	return id, true
}

// Names returns every name a certificate identifies its holder by, in
// this order: the subject's CommonName (when not empty), the DNS SANs, the
// email SANs and the URI SANs (as strings). Authorization matches them
// against the names an operator lists (--admin-names).
func Names(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	var names []string
	if cn := cert.Subject.CommonName; cn != "" {
		names = append(names, cn)
	}
	names = append(names, cert.DNSNames...)
	names = append(names, cert.EmailAddresses...)
	for _, u := range cert.URIs {
		if u != nil {
			names = append(names, u.String())
		}
	}
	return names
}

// validateNodeID checks that id can be named in a peer certificate: 1-128
// characters, each a letter, a digit, '.', '_' or '-'.
func validateNodeID(id string) error {
	if id == "" {
		return fmt.Errorf("a node ID is required")
	}
	if len(id) > maxNodeIDLen {
		return fmt.Errorf("node ID %.20q... is %d characters long; the limit is %d", id, len(id), maxNodeIDLen)
	}
	for _, r := range id {
		if !isNameChar(r) {
			return fmt.Errorf("node ID %q contains %q: use only letters, digits, '.', '_' and '-'", id, r)
		}
	}
	return nil
}

func isNameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}
