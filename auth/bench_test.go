package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/ordinal-dev/ordinal/auth"
)

// BenchmarkAuthorize measures the per-call cost of Authorize on each path,
// with the contexts grpc-go builds for a call: a peer carrying the TLS
// state, and incoming metadata with the usual headers.
func BenchmarkAuthorize(b *testing.B) {
	f := newFixture(b)
	withCert := func(cert *tls.Certificate) context.Context {
		state := tls.ConnectionState{
			HandshakeComplete: true,
			VerifiedChains:    [][]*x509.Certificate{{cert.Leaf, f.clientCA.cert}},
		}
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}})
	}
	withMD := func(ctx context.Context, kv ...string) context.Context {
		md := metadata.Pairs(append([]string{":authority", "127.0.0.1:34904", "content-type", "application/grpc", "user-agent", "grpc-go/1.85.0"}, kv...)...)
		return metadata.NewIncomingContext(ctx, md)
	}
	noCert := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}})
	web := f.clientCA.clientCert(b, &x509.Certificate{Subject: pkix.Name{CommonName: "web-1"}, DNSNames: []string{"web-1.example.com"}})

	secured := mustNew(b, auth.Config{AnonymousIDs: true, AdminNames: f.adminNames, TokensFile: f.tokensPath})
	cases := []struct {
		name   string
		a      *auth.Authorizer
		ctx    context.Context
		method string
	}{
		{"open", mustNew(b, auth.Config{Open: true}), withMD(noCert), getNextID},
		{"anonymous", secured, withMD(noCert), getNextID},
		{"anonymous/layotto", secured, withMD(noCert), layotto},
		{"certificate", secured, withMD(withCert(web)), getNextID},
		{"certificate/admin-by-uri", secured, withMD(withCert(f.opsURI)), setFloor},
		{"token", secured, withMD(noCert, "authorization", "Bearer "+f.bob), getNextID},
		{"certificate+token", secured, withMD(withCert(web), "authorization", "Bearer "+f.alice), setFloor},
	}
	for _, tc := range cases {
		if _, err := tc.a.Authorize(tc.ctx, tc.method); err != nil {
			b.Fatalf("%s: %v", tc.name, err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.a.Authorize(tc.ctx, tc.method); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
