package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

// clearOrdinalEnv unsets every ORDINAL_ variable for the test, so that a
// developer's settings cannot leak into it; they come back when it ends.
func clearOrdinalEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, cli.EnvPrefix) {
			t.Setenv(name, "") // restores the value when the test ends
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// pemFiles are a client certificate, its key, another key, and the
// certificate as a CA file, written for one test.
type pemFiles struct {
	dir                                  string
	cert, key, otherKey, ca, notPEM, tok string
}

func writePEMFiles(t *testing.T) pemFiles {
	t.Helper()
	dir := t.TempDir()
	f := pemFiles{
		dir:      dir,
		cert:     filepath.Join(dir, "client.pem"),
		key:      filepath.Join(dir, "client-key.pem"),
		otherKey: filepath.Join(dir, "other-key.pem"),
		ca:       filepath.Join(dir, "ca.pem"),
		notPEM:   filepath.Join(dir, "not.pem"),
		tok:      filepath.Join(dir, "token"),
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ordinal test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	write(t, f.cert, certPEM)
	write(t, f.ca, certPEM)
	write(t, f.key, keyPEM(t, key))
	write(t, f.otherKey, keyPEM(t, newKey(t)))
	write(t, f.notPEM, []byte("not a certificate\n"))
	write(t, f.tok, []byte("s3cret\n"))
	return f
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func keyPEM(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// parseConnFlags parses args and the environment as the client commands
// do.
func parseConnFlags(args []string) (*connFlags, error) {
	var f connFlags
	fs := cli.NewFlagSet("next", "ordinal next [flags] KEY")
	f.registerAddr(fs, "gRPC address of an ordinal node")
	f.Register(fs)
	_, err := cli.ParseCommandFlags("next", fs, args)
	return &f, err
}

// The connection flags come from the command line, else from their
// ORDINAL_ variables, and turn TLS on as documented.
func TestConnFlagsFromFlagsAndEnvironment(t *testing.T) {
	files := writePEMFiles(t)
	tests := []struct {
		name string
		args []string
		env  []string // NAME=value

		wantAddr       string
		wantTLS        bool
		wantRoots      bool // RootCAs from --tls-ca-file, not the system's
		wantClientCert bool
		wantServerName string
		wantOptions    int
	}{
		{name: "defaults", wantAddr: daemon.DefaultGRPCAddr},
		{name: "--addr", args: []string{"--addr", "10.0.0.5:34904"}, wantAddr: "10.0.0.5:34904"},
		{name: "--addr beats ORDINAL_ADDR", args: []string{"--addr", "a:1"}, env: []string{"ORDINAL_ADDR=b:2"}, wantAddr: "a:1"},
		{name: "--tls", args: []string{"--tls"}, wantAddr: daemon.DefaultGRPCAddr, wantTLS: true, wantOptions: 1},
		{name: "ORDINAL_TLS", env: []string{"ORDINAL_TLS=true"}, wantAddr: daemon.DefaultGRPCAddr, wantTLS: true, wantOptions: 1},
		{name: "--tls-ca-file", args: []string{"--tls-ca-file", files.ca}, wantAddr: daemon.DefaultGRPCAddr,
			wantTLS: true, wantRoots: true, wantOptions: 1},
		{name: "ORDINAL_TLS_CA_FILE", env: []string{"ORDINAL_TLS_CA_FILE=" + files.ca}, wantAddr: daemon.DefaultGRPCAddr,
			wantTLS: true, wantRoots: true, wantOptions: 1},
		{name: "client certificate from the environment",
			env:      []string{"ORDINAL_TLS_CA_FILE=" + files.ca, "ORDINAL_TLS_CERT_FILE=" + files.cert, "ORDINAL_TLS_KEY_FILE=" + files.key},
			wantAddr: daemon.DefaultGRPCAddr, wantTLS: true, wantRoots: true, wantClientCert: true, wantOptions: 1},
		{name: "client certificate alone turns TLS on", args: []string{"--tls-cert-file", files.cert, "--tls-key-file", files.key},
			wantAddr: daemon.DefaultGRPCAddr, wantTLS: true, wantClientCert: true, wantOptions: 1},
		{name: "ORDINAL_TLS_SERVER_NAME", args: []string{"--tls"}, env: []string{"ORDINAL_TLS_SERVER_NAME=ordinal-1.example.com"},
			wantAddr: daemon.DefaultGRPCAddr, wantTLS: true, wantServerName: "ordinal-1.example.com", wantOptions: 1},
		{name: "ORDINAL_TOKEN_FILE", env: []string{"ORDINAL_TOKEN_FILE=" + files.tok}, wantAddr: daemon.DefaultGRPCAddr, wantOptions: 1},
		{name: "TLS and token", args: []string{"--tls-ca-file", files.ca, "--token-file", files.tok},
			wantAddr: daemon.DefaultGRPCAddr, wantTLS: true, wantRoots: true, wantOptions: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOrdinalEnv(t)
			for _, kv := range tt.env {
				name, value, _ := strings.Cut(kv, "=")
				t.Setenv(name, value)
			}
			f, err := parseConnFlags(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if f.addr != tt.wantAddr || f.TLSEnabled() != tt.wantTLS {
				t.Errorf("addr %q, TLS %v; want %q, %v", f.addr, f.TLSEnabled(), tt.wantAddr, tt.wantTLS)
			}
			cfg, err := f.TLSConfig()
			if err != nil {
				t.Fatal(err)
			}
			if (cfg != nil) != tt.wantTLS {
				t.Fatalf("TLS config %v; want one: %v", cfg, tt.wantTLS)
			}
			if cfg != nil {
				if (cfg.RootCAs != nil) != tt.wantRoots || (len(cfg.Certificates) == 1) != tt.wantClientCert ||
					cfg.ServerName != tt.wantServerName || cfg.MinVersion < tls.VersionTLS12 {
					t.Errorf("TLS config: own roots %v, client certificate %v, server name %q, min version %x; want %v, %v, %q, at least TLS 1.2",
						cfg.RootCAs != nil, len(cfg.Certificates) == 1, cfg.ServerName, cfg.MinVersion, tt.wantRoots, tt.wantClientCert, tt.wantServerName)
				}
			}
			opts, err := f.ClientOptions()
			if err != nil || len(opts) != tt.wantOptions {
				t.Errorf("ClientOptions: %d options, %v; want %d", len(opts), err, tt.wantOptions)
			}
			conn, err := f.dial() // connects lazily: no node is needed
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			if err := conn.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A flag that cannot work is a usage error naming the flag, found before
// any connection is made.
func TestConnFlagsErrors(t *testing.T) {
	files := writePEMFiles(t)
	badToken := filepath.Join(files.dir, "bad-token")
	write(t, badToken, []byte("two words\n"))
	emptyToken := filepath.Join(files.dir, "empty-token")
	write(t, emptyToken, []byte("\n"))
	missing := filepath.Join(files.dir, "missing.pem")
	tests := []struct {
		name string
		args []string
		env  []string
		want []string // parts of the message
	}{
		{"CA file missing", []string{"--tls-ca-file", missing}, nil, []string{"next: --tls-ca-file: open " + missing, "no such file"}},
		{"CA file not PEM", []string{"--tls-ca-file", files.notPEM}, nil, []string{"next: --tls-ca-file " + files.notPEM + " holds no PEM certificate"}},
		{"CA file from the environment missing", nil, []string{"ORDINAL_TLS_CA_FILE=" + missing}, []string{"--tls-ca-file: open " + missing}},
		{"certificate without key", []string{"--tls-cert-file", files.cert}, nil, []string{"next: --tls-cert-file needs --tls-key-file"}},
		{"key without certificate", []string{"--tls-key-file", files.key}, nil, []string{"next: --tls-key-file needs --tls-cert-file"}},
		{"certificate file missing", []string{"--tls-cert-file", missing, "--tls-key-file", files.key}, nil, []string{"--tls-cert-file: open " + missing}},
		{"key file missing", []string{"--tls-cert-file", files.cert, "--tls-key-file", missing}, nil, []string{"--tls-key-file: open " + missing}},
		{"key of another certificate", []string{"--tls-cert-file", files.cert, "--tls-key-file", files.otherKey}, nil,
			[]string{"--tls-cert-file " + files.cert + " and --tls-key-file " + files.otherKey, "private key does not match public key"}},
		{"certificate not PEM", []string{"--tls-cert-file", files.notPEM, "--tls-key-file", files.key}, nil, []string{"--tls-cert-file " + files.notPEM}},
		{"token file missing", []string{"--token-file", missing}, nil, []string{"next: --token-file: open " + missing}},
		{"token file empty", []string{"--token-file", emptyToken}, nil, []string{"next: --token-file " + emptyToken + " is empty"}},
		{"token of two words", []string{"--token-file", badToken}, nil, []string{"next: ", badToken, "one word"}},
		{"ORDINAL_TLS not a bool", nil, []string{"ORDINAL_TLS=maybe"}, []string{"next: invalid ORDINAL_TLS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOrdinalEnv(t)
			for _, kv := range tt.env {
				name, value, _ := strings.Cut(kv, "=")
				t.Setenv(name, value)
			}
			f, err := parseConnFlags(tt.args)
			if err == nil {
				_, err = f.dial()
			}
			var u *cli.UsageError
			if !errors.As(err, &u) || cli.ExitCode(err) != 2 {
				t.Fatalf("error %v (%T); want a usage error, exit status 2", err, err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

// Every client command takes the connection flags and checks them before
// it connects to anything.
func TestClientCommandsTakeConnFlags(t *testing.T) {
	clearOrdinalEnv(t)
	files := writePEMFiles(t)
	tests := []struct {
		cmd  string
		args []string
	}{
		{"next", []string{"next", "k"}},
		{"demo", []string{"demo"}},
		{"members", []string{"members"}},
		{"remove", []string{"remove", "n1"}},
		{"leader", []string{"leader"}},
		{"leader transfer", []string{"leader", "transfer"}},
		{"health", []string{"health"}},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			err := run(append(tt.args, "--tls-cert-file", files.cert))
			want := tt.cmd + ": --tls-cert-file needs --tls-key-file"
			if cli.ExitCode(err) != 2 || err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("ordinal %s --tls-cert-file FILE: %v (exit %d); want a usage error %q", strings.Join(tt.args, " "), err, cli.ExitCode(err), want)
			}
		})
	}
}

// A call refused for want of TLS or credentials says what to do, and not
// to check that the node runs.
func TestRPCErrorSaysWhatToDo(t *testing.T) {
	t.Parallel()
	plain := &connFlags{ConnFlags: cli.ConnFlags{Cmd: "next"}, addr: "10.0.0.5:34904"}
	withTLS := &connFlags{ConnFlags: cli.ConnFlags{Cmd: "next", CAFile: "ca.pem"}, addr: "10.0.0.5:34904"}
	withCert := &connFlags{ConnFlags: cli.ConnFlags{Cmd: "members", CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}, addr: "10.0.0.5:34904"}
	withToken := &connFlags{ConnFlags: cli.ConnFlags{Cmd: "members", CAFile: "ca.pem", TokenFile: "token"}, addr: "10.0.0.5:34904"}
	handshake := func(cause string) error {
		return status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: `+cause+`"`)
	}
	tests := []struct {
		name string
		conn *connFlags
		err  error
		want string
	}{
		{"token refused in clear text", plain,
			status.Error(codes.Unauthenticated, "refusing to send the bearer token in clear text to 10.0.0.5:34904: use WithTLS"),
			"pass --tls-ca-file, or --tls"},
		{"no credentials", withTLS, status.Error(codes.Unauthenticated, "missing credentials"),
			"the node requires credentials: pass --token-file, or a client certificate with --tls-cert-file/--tls-key-file"},
		{"token not accepted", withToken, status.Error(codes.Unauthenticated, "unknown token"),
			"did not accept the token of --token-file"},
		{"admin role missing", withCert, status.Error(codes.PermissionDenied, `"app" may not call Members`),
			"permission denied: the node accepted your certificate or token, but it lacks the admin role"},
		{"ids role missing", withTLS, status.Error(codes.PermissionDenied, "no ids role"), "lacks the ids role"},
		{"unknown CA", withTLS, handshake("tls: failed to verify certificate: x509: certificate signed by unknown authority"),
			"pass the CA that signed it with --tls-ca-file"},
		{"wrong name", withTLS, handshake("tls: failed to verify certificate: x509: certificate is valid for localhost, not ordinal-1"),
			"--tls-server-name"},
		{"expired", withTLS, handshake("tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time"),
			"renew it"},
		{"node without TLS", withTLS, handshake("tls: first record does not look like a TLS handshake"), "drop --tls and the --tls-* flags"},
		{"client certificate required", withTLS,
			status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: remote error: tls: certificate required"`),
			"the node requires a client certificate: pass --tls-cert-file/--tls-key-file"},
		{"client certificate required, connection broken first", withTLS,
			status.Error(codes.Unavailable, "write tcp 127.0.0.1:1->10.0.0.5:34904: write: broken pipe"),
			"the node requires a client certificate: pass --tls-cert-file/--tls-key-file"},
		{"client certificate refused", withCert,
			status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: remote error: tls: certificate required"`),
			"the node refused the client certificate of --tls-cert-file"},
		{"client certificate refused, connection broken first", withCert,
			status.Error(codes.Unavailable, "write tcp 127.0.0.1:1->10.0.0.5:34904: write: connection reset by peer"),
			"the node refused the client certificate of --tls-cert-file"},
		{"node serves TLS", plain, status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: EOF"`),
			"if it serves TLS, pass --tls-ca-file, or --tls"},
		{"nothing listening", withTLS,
			status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.5:34904: connect: connection refused"`),
			"(is ordinal running at 10.0.0.5:34904?)"},
	}
	for _, tt := range tests {
		got := tt.conn.rpcError(tt.err).Error()
		if !strings.Contains(got, tt.want) || strings.Count(got, "(") != 1 {
			t.Errorf("%s: %q; want one hint, %q", tt.name, got, tt.want)
		}
		if tt.name != "nothing listening" && strings.Contains(got, "is ordinal running") {
			t.Errorf("%s: %q asks whether ordinal runs; it answered", tt.name, got)
		}
	}
}
