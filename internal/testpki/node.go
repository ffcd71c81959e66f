package testpki

import (
	"crypto/tls"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ordinal-dev/ordinal/tlsutil"
)

// AdminName is the client certificate name the secured test clusters
// grant the admin role (testcluster.Secure, ServeArgs).
const AdminName = "admin"

// ServeArgs are the serve flags that secure node nodeID as production
// should run: mutual TLS between nodes with its peer certificate, TLS on
// the client port with client certificates of ClientCA required, and the
// client certificate AdminName holding the admin role.
func (p *PKI) ServeArgs(nodeID string) []string {
	peerCert, peerKey := p.Peer(nodeID)
	cert, key := p.Server("node", "127.0.0.1", "localhost")
	return []string{
		"--peer-cert-file", peerCert, "--peer-key-file", peerKey, "--peer-ca-file", p.PeerCAFile,
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-client-ca-file", p.ClientCAFile,
		"--admin-names", AdminName,
	}
}

// ClientTLS returns the TLS configuration of a client of the nodes'
// client ports with the client certificate name, or none when name is
// empty.
func (p *PKI) ClientTLS(name string) *tls.Config {
	p.t.Helper()
	roots, err := tlsutil.LoadCAPool(p.ServerCAFile, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	var kp *tlsutil.KeyPair
	if name != "" {
		certFile, keyFile := p.Client(name)
		if kp, err = tlsutil.LoadKeyPair(certFile, keyFile, nil); err != nil {
			p.t.Fatal(err)
		}
	}
	return tlsutil.ClientConfig(roots, kp, "")
}

// DialOption returns the transport credentials of such a client.
func (p *PKI) DialOption(name string) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(p.ClientTLS(name)))
}
