package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/testutil"
)

// credsTestTimeout bounds every call of these tests.
const credsTestTimeout = 10 * time.Second

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var serialMu sync.Mutex
var serial int64

func nextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serial++
	return big.NewInt(serial)
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// server issues a certificate for "localhost" and 127.0.0.1.
func (ca *testCA) server(t *testing.T) tls.Certificate {
	t.Helper()
	return ca.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// client issues a client certificate named name.
func (ca *testCA) client(t *testing.T, name string) tls.Certificate {
	t.Helper()
	return ca.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = nextSerial()
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// call is what the test server saw of one call.
type seenCall struct {
	method, authorization, userAgent string
}

// credsServer is a Sequencer whose GetNextId answers 1 and whose
// NextIdStream answers every request with first ID 1, recording the
// credentials of every call.
type credsServer struct {
	ordinalv1.UnimplementedSequencerServiceServer
	addr string

	mu    sync.Mutex
	calls []seenCall
}

// startCredsServer serves on a loopback port with creds until the test
// ends.
func startCredsServer(t *testing.T, creds credentials.TransportCredentials) *credsServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &credsServer{addr: l.Addr().String()}
	srv := grpc.NewServer(grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			s.record(ctx, info.FullMethod)
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			s.record(ss.Context(), info.FullMethod)
			return handler(srv, ss)
		}))
	ordinalv1.RegisterSequencerServiceServer(srv, s)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return s
}

func (s *credsServer) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(key string) string {
		if v := md.Get(key); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, seenCall{method: method, authorization: first("authorization"), userAgent: first("user-agent")})
}

// last returns the last call the server saw, or false if none.
func (s *credsServer) last() (seenCall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) == 0 {
		return seenCall{}, false
	}
	return s.calls[len(s.calls)-1], true
}

func (s *credsServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *credsServer) GetNextId(context.Context, *ordinalv1.GetNextIdRequest) (*ordinalv1.GetNextIdResponse, error) {
	return &ordinalv1.GetNextIdResponse{NextId: 1}, nil
}

func (s *credsServer) NextIdStream(stream grpc.BidiStreamingServer[ordinalv1.NextIdStreamRequest, ordinalv1.NextIdStreamResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&ordinalv1.NextIdStreamResponse{Seq: req.GetSeq(), FirstId: 1, Count: req.GetCount()}); err != nil {
			return err
		}
	}
}

// serverTLS returns server credentials with cert; with clientCAs, the
// server requires client certificates signed by it.
func serverTLS(cert tls.Certificate, clientCAs *x509.CertPool) credentials.TransportCredentials {
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(cfg)
}

func credsContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), credsTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// dialTo makes a connection to target actually reach addr, so that tests
// can name a non-loopback host while listening on loopback.
func dialTo(addr string) Option {
	return WithDialOptions(grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}))
}

// takeID takes one ID through a new Client for target, unary or over the
// stream, with no retries.
func takeID(t *testing.T, target string, streaming bool, opts ...Option) (int64, error) {
	t.Helper()
	opts = append([]Option{WithRetry(1, 0)}, opts...)
	if streaming {
		opts = append(opts, WithStreaming())
	}
	c, err := New(target, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", target, err)
	}
	defer c.Close()
	return c.NextID(credsContext(t), "k", Strong)
}

const (
	unaryMethod  = "/ordinal.v1.SequencerService/GetNextId"
	streamMethod = "/ordinal.v1.SequencerService/NextIdStream"
)

// The token arrives with unary calls and on streams, over TLS, mTLS and
// plain TCP to loopback, through New and through NewConn.
func TestTokenIsSentWithEveryCall(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "test CA")
	tlsSrv := startCredsServer(t, serverTLS(ca.server(t), nil))
	mtlsSrv := startCredsServer(t, serverTLS(ca.server(t), ca.pool))
	plainSrv := startCredsServer(t, insecure.NewCredentials())
	clientTLS := &tls.Config{RootCAs: ca.pool}
	clientMTLS := &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{ca.client(t, "app")}}
	_, port, err := net.SplitHostPort(plainSrv.addr)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		srv       *credsServer
		target    string
		streaming bool
		opts      []Option
	}{
		{"TLS unary", tlsSrv, tlsSrv.addr, false, []Option{WithTLS(clientTLS)}},
		{"TLS stream", tlsSrv, tlsSrv.addr, true, []Option{WithTLS(clientTLS)}},
		{"mTLS unary", mtlsSrv, mtlsSrv.addr, false, []Option{WithTLS(clientMTLS)}},
		{"mTLS stream", mtlsSrv, mtlsSrv.addr, true, []Option{WithTLS(clientMTLS)}},
		{"TLS to a remote name", tlsSrv, "passthrough:///ordinal.example.com:34904", true,
			[]Option{WithTLS(&tls.Config{RootCAs: ca.pool, ServerName: "localhost"}), dialTo(tlsSrv.addr)}},
		{"plain TCP to 127.0.0.1 unary", plainSrv, plainSrv.addr, false, nil},
		{"plain TCP to 127.0.0.1 stream", plainSrv, plainSrv.addr, true, nil},
		{"plain TCP to localhost stream", plainSrv, "localhost:" + port, true, nil},
		{"plain TCP to dns:///localhost", plainSrv, "dns:///localhost:" + port, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := takeID(t, tt.target, tt.streaming, append(tt.opts, WithToken("s3cret"))...)
			if err != nil || id != 1 {
				t.Fatalf("NextID: %d, %v; want 1", id, err)
			}
			wantMethod := unaryMethod
			if tt.streaming {
				wantMethod = streamMethod
			}
			if got, _ := tt.srv.last(); got.method != wantMethod || got.authorization != "Bearer s3cret" {
				t.Fatalf("server saw %s with authorization %q; want %s with %q", got.method, got.authorization, wantMethod, "Bearer s3cret")
			}
		})
	}

	t.Run("NewConn", func(t *testing.T) {
		conn, err := NewConn(mtlsSrv.addr, WithTLS(clientMTLS), WithToken("s3cret"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := ordinalv1.NewSequencerServiceClient(conn).GetNextId(credsContext(t), &ordinalv1.GetNextIdRequest{Key: "k"}); err != nil {
			t.Fatal(err)
		}
		if got, _ := mtlsSrv.last(); got.authorization != "Bearer s3cret" {
			t.Fatalf("server saw authorization %q through NewConn; want %q", got.authorization, "Bearer s3cret")
		}
	})
}

// Over plain TCP, the token goes only to a loopback target: the target's
// host decides, not the socket, which here always reaches 127.0.0.1.
func TestTokenIsNotSentInClearTextToARemoteHost(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "test CA")
	plainSrv := startCredsServer(t, insecure.NewCredentials())
	tlsSrv := startCredsServer(t, serverTLS(ca.server(t), nil))
	const remote = "passthrough:///example.invalid:1"
	const refused = "refusing to send the bearer token in clear text to example.invalid:1: use WithTLS"
	tests := []struct {
		name      string
		srv       *credsServer
		streaming bool
		opts      []Option
		wantErr   string // empty: the call succeeds
	}{
		{"token unary", plainSrv, false, []Option{WithToken("s3cret")}, refused},
		{"token stream", plainSrv, true, []Option{WithToken("s3cret")}, refused},
		{"token file", plainSrv, false, []Option{WithTokenFile(writeTokenFile(t, "s3cret"))}, refused},
		{"caller's own plain-TCP credentials", plainSrv, false,
			[]Option{WithToken("s3cret"), WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()))}, refused},
		{"no token", plainSrv, false, nil, ""},
		{"token over TLS", tlsSrv, true, []Option{WithToken("s3cret"), WithTLS(&tls.Config{RootCAs: ca.pool, ServerName: "localhost"})}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.srv.count()
			_, err := takeID(t, remote, tt.streaming, append(tt.opts, dialTo(tt.srv.addr))...)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NextID: %v; want success", err)
				}
				return
			}
			if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != tt.wantErr {
				t.Fatalf("NextID: %v; want Unauthenticated: %s", err, tt.wantErr)
			}
			if n := tt.srv.count() - before; n != 0 {
				t.Fatalf("the server saw %d calls; the token must be refused before anything is sent", n)
			}
		})
	}
}

func writeTokenFile(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// replaceFile writes data to path as secret managers do: to a new file,
// then renamed over the old one.
func replaceFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A token rotated in its file is sent from the next check on by a Client
// that stays up.
func TestTokenFileRotation(t *testing.T) {
	t.Parallel()
	srv := startCredsServer(t, insecure.NewCredentials())
	path := writeTokenFile(t, "first")
	c, err := New(srv.addr, WithTokenFile(path), WithRetry(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := credsContext(t)
	authorization := func() string {
		if _, err := c.NextID(ctx, "k", Weak); err != nil {
			t.Fatalf("NextID: %v", err)
		}
		got, _ := srv.last()
		return got.authorization
	}
	if got := authorization(); got != "Bearer first" {
		t.Fatalf("authorization %q; want %q", got, "Bearer first")
	}
	replaceFile(t, path, "second\n")
	testutil.WaitFor(t, credsTestTimeout, "the rotated token to be sent", func() bool {
		return authorization() == "Bearer second"
	})
}

// The file is read again at most once per tokenFileCheckInterval, and a
// file that holds no token leaves the last one in use.
func TestFileTokenKeepsTheLastGoodToken(t *testing.T) {
	t.Parallel()
	path := writeTokenFile(t, "a")
	f, err := newFileToken(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f.now = func() time.Time { return now }
	// Pretend the file was read at now.
	f.checkAt.Store(now.Add(tokenFileCheckInterval).UnixNano())
	steps := []struct {
		do      string // what happens to the file
		content string // written unless do is "remove"
		advance time.Duration
		want    string
	}{
		{"nothing", "", 0, "Bearer a"},
		{"write", "b", tokenFileCheckInterval / 2, "Bearer a"},
		{"nothing", "", tokenFileCheckInterval / 2, "Bearer b"},
		{"write", "", tokenFileCheckInterval, "Bearer b"},
		{"write", "  \n", tokenFileCheckInterval, "Bearer b"},
		{"write", "two words", tokenFileCheckInterval, "Bearer b"},
		{"remove", "", tokenFileCheckInterval, "Bearer b"},
		{"write", "c\n", tokenFileCheckInterval - 1, "Bearer b"},
		{"nothing", "", 1, "Bearer c"},
	}
	for i, s := range steps {
		switch s.do {
		case "write":
			replaceFile(t, path, s.content)
		case "remove":
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(s.advance)
		if got := f.authorization(); got != s.want {
			t.Fatalf("step %d (%s %q, %v later): authorization %q; want %q", i, s.do, s.content, s.advance, got, s.want)
		}
	}
}

// A failed TLS handshake fails the call with a message that says why.
func TestTLSHandshakeErrors(t *testing.T) {
	t.Parallel()
	ca, otherCA := newTestCA(t, "test CA"), newTestCA(t, "other CA")
	tlsSrv := startCredsServer(t, serverTLS(ca.server(t), nil))
	mtlsSrv := startCredsServer(t, serverTLS(ca.server(t), ca.pool))
	plainSrv := startCredsServer(t, insecure.NewCredentials())
	// With TLS 1.3 the server checks the client's certificate after the
	// client's side of the handshake is done: the client learns of the
	// refusal from the server's alert, or, when the server's reset
	// overtakes it, only from a broken connection.
	refusedClientCert := []string{"certificate required", "bad certificate", "broken pipe", "connection reset by peer"}
	tests := []struct {
		name string
		srv  *credsServer
		cfg  *tls.Config
		want []string // the error's message has one of them
	}{
		{"server certificate from an unknown CA", tlsSrv, &tls.Config{RootCAs: otherCA.pool},
			[]string{"x509: certificate signed by unknown authority"}},
		{"server certificate for another name", tlsSrv, &tls.Config{RootCAs: ca.pool, ServerName: "ordinal.example.com"},
			[]string{"x509: certificate is valid for localhost, not ordinal.example.com"}},
		{"node without TLS", plainSrv, &tls.Config{RootCAs: ca.pool},
			[]string{"tls: first record does not look like a TLS handshake"}},
		{"client certificate missing", mtlsSrv, &tls.Config{RootCAs: ca.pool}, refusedClientCert},
		{"client certificate from an unknown CA", mtlsSrv,
			&tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{otherCA.client(t, "app")}}, refusedClientCert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, streaming := range []bool{false, true} {
				_, err := takeID(t, tt.srv.addr, streaming, WithTLS(tt.cfg))
				if status.Code(err) != codes.Unavailable || !containsAny(err.Error(), tt.want) {
					t.Fatalf("streaming %v: NextID: %v; want Unavailable mentioning one of %q", streaming, err, tt.want)
				}
			}
		})
	}
}

func containsAny(s string, parts []string) bool {
	for _, p := range parts {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// The caller's own transport credentials win over the default plain TCP
// and over WithTLS; other dial options compose with WithTLS.
func TestDialOptionsComposeWithTLS(t *testing.T) {
	t.Parallel()
	ca, otherCA := newTestCA(t, "test CA"), newTestCA(t, "other CA")
	srv := startCredsServer(t, serverTLS(ca.server(t), nil))
	good := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.pool}))
	tests := []struct {
		name string
		opts []Option
	}{
		{"caller's TLS credentials", []Option{WithDialOptions(good)}},
		{"caller's TLS credentials over WithTLS", []Option{WithTLS(&tls.Config{RootCAs: otherCA.pool}), WithDialOptions(good)}},
		{"WithTLS with a user agent", []Option{WithTLS(&tls.Config{RootCAs: ca.pool}), WithDialOptions(grpc.WithUserAgent("credstest/1"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := takeID(t, srv.addr, false, tt.opts...); err != nil {
				t.Fatalf("NextID: %v", err)
			}
		})
	}
	if got, _ := srv.last(); !strings.HasPrefix(got.userAgent, "credstest/1") {
		t.Fatalf("server saw user agent %q; want the one given with WithDialOptions", got.userAgent)
	}
}

func TestCredentialOptionErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := writeTokenFile(t, "s3cret")
	tests := []struct {
		name   string
		opts   []Option
		is     error  // besides ErrInvalidOption
		detail string // in the message
	}{
		{"WithTLS(nil)", []Option{WithTLS(nil)}, nil, "WithTLS(nil)"},
		{"empty token", []Option{WithToken("")}, nil, "the token is empty"},
		{"token with a newline", []Option{WithToken("s3cret\n")}, nil, "one word"},
		{"missing token file", []Option{WithTokenFile(filepath.Join(dir, "missing"))}, fs.ErrNotExist, "missing"},
		{"empty token file", []Option{WithTokenFile(empty)}, nil, "the token is empty"},
		{"token twice", []Option{WithToken("a"), WithTokenFile(good)}, nil, "pass one of WithToken and WithTokenFile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New("127.0.0.1:1", tt.opts...)
			_, connErr := NewConn("127.0.0.1:1", tt.opts...)
			for _, err := range []error{err, connErr} {
				if !errors.Is(err, ErrInvalidOption) || tt.is != nil && !errors.Is(err, tt.is) || !strings.Contains(fmtErr(err), tt.detail) {
					t.Fatalf("error %v; want one wrapping ErrInvalidOption (and %v) mentioning %q", err, tt.is, tt.detail)
				}
			}
		})
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestTargetEndpoint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		target, endpoint string
		local            bool
	}{
		{"127.0.0.1:34904", "127.0.0.1:34904", true},
		{"127.8.9.10:1", "127.8.9.10:1", true},
		{"[::1]:34904", "[::1]:34904", true},
		{"[::ffff:127.0.0.1]:1", "[::ffff:127.0.0.1]:1", true},
		{"localhost:34904", "localhost:34904", true},
		{"LocalHost:1", "LocalHost:1", true},
		{"localhost", "localhost", true},
		{"dns:///localhost:1", "localhost:1", true},
		{"dns://8.8.8.8/127.0.0.1:1", "127.0.0.1:1", true},
		{"unix:///run/ordinal.sock", "unix:///run/ordinal.sock", true},
		{"unix:ordinal.sock", "unix:ordinal.sock", true},
		{"10.0.0.5:34904", "10.0.0.5:34904", false},
		{"0.0.0.0:34904", "0.0.0.0:34904", false},
		{"[2001:db8::1]:1", "[2001:db8::1]:1", false},
		{"ordinal.example.com:34904", "ordinal.example.com:34904", false},
		{"localhost.example.com:1", "localhost.example.com:1", false},
		{"passthrough:///example.invalid:1", "example.invalid:1", false},
		{"dns:///ordinal:34904", "ordinal:34904", false},
		{"xds:///ordinal", "ordinal", false},
	}
	for _, tt := range tests {
		endpoint, local := targetEndpoint(tt.target)
		if endpoint != tt.endpoint || local != tt.local {
			t.Errorf("targetEndpoint(%q) = %q, %v; want %q, %v", tt.target, endpoint, local, tt.endpoint, tt.local)
		}
	}
}
