package client

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// tokenFileCheckInterval is how often, at most, WithTokenFile's file is
// read again to pick up a rotated token.
const tokenFileCheckInterval = time.Second

// maxTokenFileSize bounds what is read of a token file: a token is a line,
// and a path given by mistake (a log, a binary) must not be read whole.
const maxTokenFileSize = 64 << 10

// dialOptions returns the gRPC dial options o asks for, for the node at
// target (an entry of the address list given to New), where a token may
// travel in clear text if local: the transport credentials (TLS, or plain
// TCP), the bearer token, then the caller's own dial options, which may
// override both, then the metadata.
func (o *options) dialOptions(target string, local bool) []grpc.DialOption {
	creds := insecure.NewCredentials()
	if o.tls != nil {
		creds = credentials.NewTLS(o.tls)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if o.token != nil {
		endpoint, _ := targetEndpoint(target)
		dial = append(dial, grpc.WithPerRPCCredentials(&bearerCredentials{token: o.token, endpoint: endpoint, local: local}))
	}
	dial = append(dial, o.dial...)
	if len(o.metadata) > 0 {
		dial = append(dial, withMetadata(o.metadata)...)
	}
	return dial
}

// bearerCredentials sends the token as "authorization: Bearer <token>"
// with every call and stream, and only over a private connection (TLS)
// unless the node is on this host.
type bearerCredentials struct {
	token tokenSource
	// endpoint is the host:port the Client was created for, as the error
	// names it; local says whether it is on this host (loopback or Unix
	// socket), where clear text does not cross a network.
	endpoint string
	local    bool
}

// GetRequestMetadata returns the authorization header for a call, or an
// Unauthenticated error, which fails the call before anything is sent,
// when the connection would carry the token in clear text across a
// network. grpc-go passes the connection's AuthInfo in ctx.
func (c *bearerCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if !c.local {
		ri, _ := credentials.RequestInfoFromContext(ctx)
		if !private(ri.AuthInfo) {
			return nil, status.Errorf(codes.Unauthenticated,
				"refusing to send the bearer token in clear text to %s: use WithTLS", c.endpoint)
		}
	}
	return map[string]string{"authorization": c.token.authorization()}, nil
}

// RequireTransportSecurity reports false: GetRequestMetadata allows clear
// text to a node on this host, and decides that itself for each call.
func (c *bearerCredentials) RequireTransportSecurity() bool { return false }

// private reports whether a connection with AuthInfo ai keeps what it
// carries secret. A transport that does not say so counts as not private.
func private(ai credentials.AuthInfo) bool {
	ci, ok := ai.(interface {
		GetCommonAuthInfo() credentials.CommonAuthInfo
	})
	return ok && ci.GetCommonAuthInfo().SecurityLevel == credentials.PrivacyAndIntegrity
}

// targetEndpoint returns the host:port a gRPC target names ("host:port",
// "dns:///host:port", "passthrough:///host:port") and whether it is on
// this host: a loopback address (127.0.0.0/8, ::1), "localhost", or a Unix
// socket. A target it cannot read counts as remote.
func targetEndpoint(target string) (endpoint string, local bool) {
	if scheme, _, ok := strings.Cut(target, ":"); ok {
		switch strings.ToLower(scheme) {
		case "unix", "unix-abstract":
			return target, true
		}
	}
	endpoint = target
	if strings.Contains(target, "://") {
		if u, err := url.Parse(target); err == nil {
			endpoint = strings.TrimPrefix(u.Path, "/")
		}
	}
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	}
	return endpoint, loopbackHost(host)
}

// loopbackHost reports whether host is "localhost" or a loopback IP
// address. Other names count as remote even if they resolve to loopback:
// what a name resolves to can change.
func loopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// tokenSource gives the authorization header's value, "Bearer <token>".
type tokenSource interface {
	authorization() string
}

// staticToken is the header value of WithToken.
type staticToken string

func (t staticToken) authorization() string { return string(t) }

func bearer(token string) string { return "Bearer " + token }

// fileToken is the token of WithTokenFile. The first call after
// tokenFileCheckInterval has passed reads the file again; calls meanwhile,
// and calls that find another one reading it, use the last token without
// waiting.
type fileToken struct {
	path string
	now  func() time.Time // time.Now; tests move time along

	auth    atomic.Pointer[string] // "Bearer <token>"
	checkAt atomic.Int64           // when, in UnixNano, to read the file again
	reading sync.Mutex             // held by the call reading the file
}

func newFileToken(path string) (*fileToken, error) {
	token, err := readTokenFile(path)
	if err != nil {
		return nil, err
	}
	f := &fileToken{path: path, now: time.Now}
	auth := bearer(token)
	f.auth.Store(&auth)
	f.checkAt.Store(f.now().Add(tokenFileCheckInterval).UnixNano())
	return f, nil
}

func (f *fileToken) authorization() string {
	if now := f.now(); now.UnixNano() >= f.checkAt.Load() && f.reading.TryLock() {
		f.reread(now)
		f.reading.Unlock()
	}
	return *f.auth.Load()
}

// reread reads the file again, unless another call just did, and keeps
// the last token if the file holds none now: a token being rewritten, or
// a secret volume being updated, must not fail calls. The caller holds
// f.reading.
func (f *fileToken) reread(now time.Time) {
	if now.UnixNano() < f.checkAt.Load() {
		return
	}
	f.checkAt.Store(now.Add(tokenFileCheckInterval).UnixNano())
	token, err := readTokenFile(f.path)
	if err != nil {
		return
	}
	if auth := bearer(token); auth != *f.auth.Load() {
		f.auth.Store(&auth)
	}
}

// readTokenFile returns the token in the file at path, without surrounding
// white space.
func readTokenFile(path string) (string, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read the token: %w", err)
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, maxTokenFileSize+1))
	if err != nil {
		return "", fmt.Errorf("read the token from %s: %w", path, err)
	}
	if len(data) > maxTokenFileSize {
		return "", fmt.Errorf("token file %s is larger than %d KiB: it should hold the token alone", path, maxTokenFileSize>>10)
	}
	token := strings.TrimSpace(string(data))
	if err := checkToken(token); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return token, nil
}
