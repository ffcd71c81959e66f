package tlsutil

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func mustURLs(t *testing.T, raw ...string) []*url.URL {
	t.Helper()
	var us []*url.URL
	for _, r := range raw {
		u, err := url.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, u)
	}
	return us
}

func TestPeerID(t *testing.T) {
	tests := []struct {
		name   string
		uris   []string
		wantID string
		wantOK bool
	}{
		{name: "no URI SAN", wantOK: false},
		{name: "one peer URI", uris: []string{"urn:ordinal:peer:n1"}, wantID: "n1", wantOK: true},
		{name: "peer URI among others", uris: []string{"spiffe://example.org/ns/x", "urn:ordinal:peer:node-2.a_b"}, wantID: "node-2.a_b", wantOK: true},
		{name: "two peer URIs", uris: []string{"urn:ordinal:peer:n1", "urn:ordinal:peer:n2"}, wantOK: false},
		{name: "the same peer URI twice", uris: []string{"urn:ordinal:peer:n1", "urn:ordinal:peer:n1"}, wantOK: false},
		{name: "empty node ID", uris: []string{"urn:ordinal:peer:"}, wantOK: false},
		{name: "another URN", uris: []string{"urn:ordinal:client:n1"}, wantOK: false},
		{name: "prefix not at the start", uris: []string{"https://x/urn:ordinal:peer:n1"}, wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &x509.Certificate{URIs: mustURLs(t, tt.uris...)}
			id, ok := PeerID(cert)
			if id != tt.wantID || ok != tt.wantOK {
				t.Errorf("PeerID = %q, %v; want %q, %v", id, ok, tt.wantID, tt.wantOK)
			}
		})
	}
	if id, ok := PeerID(nil); ok || id != "" {
		t.Errorf("PeerID(nil) = %q, %v; want \"\", false", id, ok)
	}
}

func TestPeerIDOfIssuedCertificates(t *testing.T) {
	ca := newTestCA(t, "ca")
	tests := []struct {
		req    CertRequest
		wantID string
		wantOK bool
	}{
		{req: CertRequest{Kind: KindPeer, NodeID: "n1"}, wantID: "n1", wantOK: true},
		{req: CertRequest{Kind: KindPeer, NodeID: "n1", Name: "other-name"}, wantID: "n1", wantOK: true},
		// A server or client certificate must not pass for a node, even
		// when its name looks like one.
		{req: CertRequest{Kind: KindServer, Name: "n1", DNSNames: []string{"n1"}}, wantOK: false},
		{req: CertRequest{Kind: KindClient, Name: "urn:ordinal:peer:n1"}, wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.req.Kind.String(), func(t *testing.T) {
			certPEM, _ := mustIssue(t, ca, tt.req)
			certs, err := parseCertificates(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			id, ok := PeerID(certs[0])
			if id != tt.wantID || ok != tt.wantOK {
				t.Errorf("PeerID = %q, %v; want %q, %v", id, ok, tt.wantID, tt.wantOK)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name string
		cert *x509.Certificate
		want []string
	}{
		{name: "nil", cert: nil, want: nil},
		{name: "nothing", cert: &x509.Certificate{}, want: nil},
		{name: "common name only", cert: &x509.Certificate{Subject: pkix.Name{CommonName: "alice"}}, want: []string{"alice"}},
		{
			name: "every kind, in order",
			cert: &x509.Certificate{
				Subject:        pkix.Name{CommonName: "alice"},
				DNSNames:       []string{"a.example", "b.example"},
				EmailAddresses: []string{"alice@example.org"},
				URIs:           mustURLs(t, "urn:ordinal:peer:n1", "spiffe://example.org/alice"),
			},
			want: []string{"alice", "a.example", "b.example", "alice@example.org", "urn:ordinal:peer:n1", "spiffe://example.org/alice"},
		},
		{
			name: "empty common name is left out",
			cert: &x509.Certificate{DNSNames: []string{"a.example"}, EmailAddresses: []string{"x@example.org"}},
			want: []string{"a.example", "x@example.org"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Names(tt.cert); !slices.Equal(got, tt.want) {
				t.Errorf("Names = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidateNodeID(t *testing.T) {
	tests := []struct {
		id      string
		wantErr string
	}{
		{id: "n1"},
		{id: "node-1.zone_a"},
		{id: strings.Repeat("a", 128)},
		{id: "", wantErr: "required"},
		{id: strings.Repeat("a", 129), wantErr: "limit is 128"},
		{id: "n 1", wantErr: "' '"},
		{id: "n/1", wantErr: "'/'"},
		{id: "n:1", wantErr: "':'"},
		{id: "nœud", wantErr: "'œ'"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			err := validateNodeID(tt.id)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("validateNodeID(%q) = %v, want nil", tt.id, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("validateNodeID(%q) = %v, want an error containing %q", tt.id, err, tt.wantErr)
			}
		})
	}
}
