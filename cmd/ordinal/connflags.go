package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/daemon"
)

// connFlags are the flags with which a client command reaches a node: its
// address and how the connection is secured. Every client command (next,
// demo, members, remove, leader, health, bench) registers them, so that
// they all take the same flags and environment variables.
type connFlags struct {
	cmd  string // the command, as errors name it
	addr string // --addr; bench has --targets instead

	tls                                              bool
	caFile, certFile, keyFile, serverName, tokenFile string
}

// registerAddr registers --addr, the node to connect to, with the
// command's own description of it.
func (f *connFlags) registerAddr(fs *flag.FlagSet, usage string) {
	fs.StringVar(&f.addr, "addr", daemon.DefaultGRPCAddr, usage)
}

// register registers the TLS and token flags.
func (f *connFlags) register(fs *flag.FlagSet) {
	f.cmd = fs.Name()
	fs.BoolVar(&f.tls, "tls", false, "connect with TLS, trusting the system's CAs unless --tls-ca-file is given; any --tls-* flag turns TLS on")
	fs.StringVar(&f.caFile, "tls-ca-file", "", "CA certificate (PEM) that signed the nodes' certificates; turns TLS on")
	fs.StringVar(&f.certFile, "tls-cert-file", "", "client certificate (PEM), for nodes that require one (mTLS); needs --tls-key-file")
	fs.StringVar(&f.keyFile, "tls-key-file", "", "private key (PEM) of --tls-cert-file")
	fs.StringVar(&f.serverName, "tls-server-name", "", "name to verify in the node's certificate; default the host of the node's address")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token to send with every call; without TLS it goes only to a loopback address")
}

// tlsEnabled reports whether the flags ask for TLS.
func (f *connFlags) tlsEnabled() bool {
	return f.tls || f.caFile != "" || f.certFile != "" || f.keyFile != "" || f.serverName != ""
}

// clientOptions returns the client options for the flags: TLS and the
// bearer token. A flag whose file is missing or unusable is a usage error
// naming the flag.
func (f *connFlags) clientOptions() ([]client.Option, error) {
	var opts []client.Option
	cfg, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		opts = append(opts, client.WithTLS(cfg))
	}
	if f.tokenFile != "" {
		// client.WithTokenFile reads the file too, and again when it
		// changes; reading it here first names the flag in the error.
		data, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, f.usageErrorf("--token-file: %w", err)
		}
		if strings.TrimSpace(string(data)) == "" {
			return nil, f.usageErrorf("--token-file %s is empty: it must hold the bearer token", f.tokenFile)
		}
		opts = append(opts, client.WithTokenFile(f.tokenFile))
	}
	return opts, nil
}

// tlsConfig returns the TLS configuration the flags ask for, or nil for
// plain TCP.
func (f *connFlags) tlsConfig() (*tls.Config, error) {
	if !f.tlsEnabled() {
		return nil, nil
	}
	// ServerName empty: grpc-go verifies the host of the address dialled.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, f.usageErrorf("--tls-ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, f.usageErrorf("--tls-ca-file %s holds no PEM certificate", f.caFile)
		}
	}
	switch {
	case f.certFile != "" && f.keyFile == "":
		return nil, f.usageErrorf("--tls-cert-file needs --tls-key-file, the certificate's private key")
	case f.keyFile != "" && f.certFile == "":
		return nil, f.usageErrorf("--tls-key-file needs --tls-cert-file, the certificate of the key")
	case f.certFile != "":
		certPEM, err := os.ReadFile(f.certFile)
		if err != nil {
			return nil, f.usageErrorf("--tls-cert-file: %w", err)
		}
		keyPEM, err := os.ReadFile(f.keyFile)
		if err != nil {
			return nil, f.usageErrorf("--tls-key-file: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, f.usageErrorf("--tls-cert-file %s and --tls-key-file %s: %w", f.certFile, f.keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// dial returns a connection to the node at --addr, secured as
// clientOptions says, for the commands that call gRPC services the client
// package has no methods for.
func (f *connFlags) dial() (*grpc.ClientConn, error) {
	opts, err := f.clientOptions()
	if err != nil {
		return nil, err
	}
	conn, err := client.NewConn(f.addr, opts...)
	if err != nil {
		return nil, f.clientError(err)
	}
	return conn, nil
}

// clientError reports an error of client.New or client.NewConn: an
// invalid option can only come from a flag's value, so it is a usage
// error.
func (f *connFlags) clientError(err error) error {
	if errors.Is(err, client.ErrInvalidOption) {
		return &usageError{err: fmt.Errorf("%s: %w", f.cmd, err)}
	}
	return fmt.Errorf("%s: %w", f.cmd, err)
}

func (f *connFlags) usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf("%s: "+format, append([]any{f.cmd}, args...)...)}
}

// rpcError wraps the error of a call to the node at --addr.
func (f *connFlags) rpcError(err error) error {
	return &rpcError{cmd: f.cmd, addr: f.addr, err: err, conn: f}
}

// securityHint says what to do about a call that failed with code and msg
// for want of the right credentials or TLS settings, or returns "".
func (f *connFlags) securityHint(code codes.Code, msg string) string {
	has := func(parts ...string) bool {
		for _, p := range parts {
			if strings.Contains(msg, p) {
				return true
			}
		}
		return false
	}
	tlsOn, clientCert := f.tlsEnabled(), f.certFile != ""
	switch code {
	case codes.Unauthenticated:
		switch {
		case has("refusing to send the bearer token in clear text"):
			return "the token travels only over TLS to a node on another host: pass --tls-ca-file, or --tls"
		case f.tokenFile == "" && !clientCert:
			return "the node requires credentials: pass --token-file, or a client certificate with --tls-cert-file/--tls-key-file"
		}
		return "the node did not accept the token of --token-file or the client certificate: check that they are current and meant for this cluster"
	case codes.PermissionDenied:
		return "permission denied: the node accepted your certificate or token, but it lacks the " + f.role() + " role this command needs"
	case codes.Unavailable:
		switch {
		case has("certificate signed by unknown authority"):
			return "the node's certificate is not signed by a CA this command trusts: pass the CA that signed it with --tls-ca-file"
		case has("x509: certificate is valid for"):
			return "the node's certificate is not for the host dialled: pass a name it holds with --tls-server-name"
		case has("x509: certificate has expired or is not yet valid"):
			return "the node's certificate has expired or is not valid yet: renew it, or check the clocks"
		case has("first record does not look like a TLS handshake"):
			return "the node does not serve TLS: drop --tls and the --tls-* flags"
		// Under TLS 1.3 the node checks the client's certificate last, so
		// its refusal may arrive as a broken connection instead of its
		// alert; and crypto/tls sends no certificate at all, hence
		// "certificate required", when the one it has is not from a CA
		// the node asks for.
		case tlsOn && !clientCert && has("certificate required", "bad certificate", "broken pipe", "connection reset by peer"):
			return "the node requires a client certificate: pass --tls-cert-file/--tls-key-file"
		case tlsOn && clientCert && has("certificate required", "bad certificate", "unknown certificate authority",
			"expired certificate", "certificate revoked", "broken pipe", "connection reset by peer"):
			return "the node refused the client certificate of --tls-cert-file: it must be current and signed by a CA the node trusts for clients"
		case !tlsOn && has("error reading server preface: EOF"):
			return "the node closed the connection before answering: if it serves TLS, pass --tls-ca-file, or --tls"
		}
	}
	return ""
}

// role names the role the command's calls need, as the node's
// authorization knows it.
func (f *connFlags) role() string {
	switch f.cmd {
	case "members", "remove", "leader", "leader transfer", "backup", "keys list":
		return "admin"
	}
	return "ids"
}
