package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

// connFlags are the flags with which a client command reaches a node: its
// address (--addr) and how the connection is secured (cli.ConnFlags, the
// flags ordinal-bench takes too). Every client command (next, demo,
// members, remove, leader, health, backup, keys, import) registers them,
// so that they all take the same flags and environment variables.
type connFlags struct {
	cli.ConnFlags
	addr string // --addr
}

// registerAddr registers --addr, the node to connect to, with the
// command's own description of it.
func (f *connFlags) registerAddr(fs *flag.FlagSet, usage string) {
	fs.StringVar(&f.addr, "addr", daemon.DefaultGRPCAddr, usage+"; several nodes: a:1,b:2,c:3, or a DNS name with an address per node (the client fails over)")
}

// dial returns a connection to the node at --addr, secured as
// ClientOptions says, for the commands that call gRPC services the client
// package has no methods for.
func (f *connFlags) dial() (*grpc.ClientConn, error) {
	opts, err := f.ClientOptions()
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
		return &cli.UsageError{Err: fmt.Errorf("%s: %w", f.Cmd, err)}
	}
	return fmt.Errorf("%s: %w", f.Cmd, err)
}

// rpcError wraps the error of a call to the node at --addr.
func (f *connFlags) rpcError(err error) error {
	return &rpcError{cmd: f.Cmd, addr: f.addr, err: err, conn: f}
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
	tlsOn, clientCert := f.TLSEnabled(), f.CertFile != ""
	switch code {
	case codes.Unauthenticated:
		switch {
		case has("refusing to send the bearer token in clear text"):
			return "the token travels only over TLS to a node on another host: pass --tls-ca-file, or --tls"
		case f.TokenFile == "" && !clientCert:
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
	switch f.Cmd {
	case "members", "remove", "leader", "leader transfer", "backup", "keys list":
		return "admin"
	}
	return "ids"
}
