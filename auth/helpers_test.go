package auth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ordinal-dev/ordinal/auth"
)

// ca is a certificate authority made for one test.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var serial atomic.Int64

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating an ECDSA P-256 key: %v", err)
	}
	return key
}

// newCA returns a self-signed ECDSA P-256 CA named name.
func newCA(t testing.TB, name string) *ca {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing CA certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &ca{cert: cert, key: key, pool: pool}
}

// issue signs a leaf certificate shaped by tmpl (names, usages).
func (c *ca) issue(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatalf("issuing certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing issued certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, c.cert.Raw}, PrivateKey: key, Leaf: leaf}
}

// serverCert is a server certificate for 127.0.0.1.
func (c *ca) serverCert(t testing.TB) tls.Certificate {
	return c.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "ordinal server"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// clientCert is a client certificate shaped by tmpl (its names).
func (c *ca) clientCert(t testing.TB, tmpl *x509.Certificate) *tls.Certificate {
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	cert := c.issue(t, tmpl)
	return &cert
}

// serverTLS is the client port's TLS: client certificates are verified
// against clientCA when given, as `serve --tls-client-ca-file` does.
func serverTLS(t testing.TB, serverCA, clientCA *ca, auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{serverCA.serverCert(t)},
		ClientCAs:    clientCA.pool,
		ClientAuth:   auth,
		MinVersion:   tls.VersionTLS12,
	}
}

// testServices is what every test server registers, so that the tests
// reach real methods of the API's names and one the policy does not know.
var testServices = []struct {
	service string
	unary   []string
	streams []string
}{
	{"ordinal.v1.SequencerService", []string{"GetNextId", "GetNextIds", "GetHighWater", "SetFloor"}, []string{"NextIdStream"}},
	{"ordinal.v1.ClusterService", []string{"Join", "Remove", "Members", "Leader", "TransferLeadership", "Reserve", "ConfirmTerm"}, nil},
	{"spec.proto.runtime.v1.Runtime", []string{"GetNextId", "SaveState"}, nil},
	{"example.v1.Backdoor", []string{"Open"}, nil},
}

// optingOut is the service implementation of every test service. It
// defines AuthFuncOverride allowing everything, as a careless service
// might: the Authorizer must ignore it.
type optingOut struct{}

func (optingOut) AuthFuncOverride(ctx context.Context, _ string) (context.Context, error) {
	return ctx, nil
}

// whoAmI answers what the handler saw: "<via>|<name>|<roles>", or
// "no identity".
func whoAmI(ctx context.Context) *wrapperspb.StringValue {
	id, ok := auth.IdentityFromContext(ctx)
	if !ok {
		return wrapperspb.String("no identity")
	}
	return wrapperspb.String(fmt.Sprintf("%s|%s|%s", id.Via, id.Name, id.Roles))
}

// testServer is a real grpc-go server on 127.0.0.1 with the Authorizer's
// interceptors, the test services and the real health service.
type testServer struct {
	addr    string
	handled atomic.Int64 // calls that reached a handler
}

func startServer(t testing.TB, a *auth.Authorizer, cfg *tls.Config) *testServer {
	t.Helper()
	ts := &testServer{}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(a.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamInterceptor()),
	}
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	srv := grpc.NewServer(opts...)
	for _, svc := range testServices {
		desc := &grpc.ServiceDesc{ServiceName: svc.service, HandlerType: (*any)(nil)}
		for _, m := range svc.unary {
			full := "/" + svc.service + "/" + m
			desc.Methods = append(desc.Methods, grpc.MethodDesc{
				MethodName: m,
				Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
					in := new(emptypb.Empty)
					if err := dec(in); err != nil {
						return nil, err
					}
					h := func(ctx context.Context, _ any) (any, error) {
						ts.handled.Add(1)
						return whoAmI(ctx), nil
					}
					if ic == nil {
						return h(ctx, in)
					}
					return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, h)
				},
			})
		}
		for _, s := range svc.streams {
			desc.Streams = append(desc.Streams, grpc.StreamDesc{
				StreamName:    s,
				ServerStreams: true,
				ClientStreams: true,
				Handler: func(srv any, stream grpc.ServerStream) error {
					if _, ok := srv.(optingOut); !ok {
						return fmt.Errorf("the handler got %T, not the registered service", srv)
					}
					ts.handled.Add(1)
					return stream.SendMsg(whoAmI(stream.Context()))
				},
			})
		}
		srv.RegisterService(desc, optingOut{})
	}
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	ts.addr = lis.Addr().String()
	return ts
}

// dial connects to addr over TLS trusting serverCA, presenting cert when
// it is not nil.
func dial(t testing.TB, addr string, serverCA *ca, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: serverCA.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		// Always present cert, as an attacker would: with Certificates,
		// crypto/tls sends one only if the server names its issuer.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// withAuthz adds one authorization header per value to ctx.
func withAuthz(ctx context.Context, values ...string) context.Context {
	for _, v := range values {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
	}
	return ctx
}

// call invokes method (unary, or the one bidirectional stream) with the
// authorization values and returns what the handler saw.
func call(t testing.TB, conn *grpc.ClientConn, method string, authz ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = withAuthz(ctx, authz...)
	out := new(wrapperspb.StringValue)
	if strings.HasSuffix(method, "Stream") {
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
		if err != nil {
			return "", err
		}
		if err := stream.CloseSend(); err != nil {
			return "", err
		}
		if err := stream.RecvMsg(out); err != nil {
			return "", err
		}
		return out.GetValue(), nil
	}
	if err := conn.Invoke(ctx, method, &emptypb.Empty{}, out); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

// tokensFile writes content to a new tokens file and returns its path.
func tokensFile(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// replaceFile replaces path's content atomically, as an operator's
// tooling should.
func replaceFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// mustToken returns a new token.
func mustToken(t testing.TB) string {
	t.Helper()
	tok, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// incomingContext is the context of a server call carrying one
// authorization header per value, and no peer.
func incomingContext(authz ...string) context.Context {
	md := metadata.MD{}
	for _, v := range authz {
		md.Append("authorization", v)
	}
	return metadata.NewIncomingContext(context.Background(), md)
}
