package cli

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/ordinal-dev/ordinal/client"
)

// ConnFlags are the flags that say how a client secures its connections to
// ordinal nodes: TLS and a bearer token. Every client command of ordinal
// (next, demo, members, remove, leader, health, backup, keys, import) and
// of ordinal-bench (run, failover, compare) registers them, so that they
// all take the same flags and environment variables.
//
// The options they make (ClientOptions) apply to every node of the
// address a command is given: ordinal's --addr takes one node, several
// separated by commas (a:1,b:2,c:3), or a DNS name with an address per
// node, as client.New and client.NewConn do, and TLS verifies each node
// under the name it was given by.
type ConnFlags struct {
	// Cmd is the command, as errors name it; Register sets it to the flag
	// set's name.
	Cmd string
	// TLS is --tls: connect with TLS even if no other flag asks for it.
	TLS bool
	// CAFile, CertFile, KeyFile and ServerName are --tls-ca-file,
	// --tls-cert-file, --tls-key-file and --tls-server-name.
	CAFile, CertFile, KeyFile, ServerName string
	// TokenFile is --token-file, the file holding the bearer token.
	TokenFile string
}

// Register registers the TLS and token flags on fs and takes the flag
// set's name as Cmd.
func (f *ConnFlags) Register(fs *flag.FlagSet) {
	f.Cmd = fs.Name()
	fs.BoolVar(&f.TLS, "tls", false, "connect with TLS, trusting the system's CAs unless --tls-ca-file is given; any --tls-* flag turns TLS on")
	fs.StringVar(&f.CAFile, "tls-ca-file", "", "CA certificate (PEM) that signed the nodes' certificates; turns TLS on")
	fs.StringVar(&f.CertFile, "tls-cert-file", "", "client certificate (PEM), for nodes that require one (mTLS); needs --tls-key-file")
	fs.StringVar(&f.KeyFile, "tls-key-file", "", "private key (PEM) of --tls-cert-file")
	fs.StringVar(&f.ServerName, "tls-server-name", "", "name to verify in the node's certificate; default the host of the node's address")
	fs.StringVar(&f.TokenFile, "token-file", "", "file holding the bearer token to send with every call; without TLS it goes only to a loopback address")
}

// TLSEnabled reports whether the flags ask for TLS.
func (f *ConnFlags) TLSEnabled() bool {
	return f.TLS || f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" || f.ServerName != ""
}

// ClientOptions returns the client options for the flags: TLS and the
// bearer token. A flag whose file is missing or unusable is a usage error
// naming the command and the flag.
func (f *ConnFlags) ClientOptions() ([]client.Option, error) {
	var opts []client.Option
	cfg, err := f.TLSConfig()
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		opts = append(opts, client.WithTLS(cfg))
	}
	if f.TokenFile != "" {
		// client.WithTokenFile reads the file too, and again when it
		// changes; reading it here first names the flag in the error.
		data, err := os.ReadFile(f.TokenFile)
		if err != nil {
			return nil, f.usageErrorf("--token-file: %w", err)
		}
		if strings.TrimSpace(string(data)) == "" {
			return nil, f.usageErrorf("--token-file %s is empty: it must hold the bearer token", f.TokenFile)
		}
		opts = append(opts, client.WithTokenFile(f.TokenFile))
	}
	return opts, nil
}

// TLSConfig returns the TLS configuration the flags ask for, or nil for
// plain TCP. Its errors are usage errors, as ClientOptions' are.
func (f *ConnFlags) TLSConfig() (*tls.Config, error) {
	if !f.TLSEnabled() {
		return nil, nil
	}
	// ServerName empty: grpc-go verifies the host of the address dialled.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, f.usageErrorf("--tls-ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, f.usageErrorf("--tls-ca-file %s holds no PEM certificate", f.CAFile)
		}
	}
	switch {
	case f.CertFile != "" && f.KeyFile == "":
		return nil, f.usageErrorf("--tls-cert-file needs --tls-key-file, the certificate's private key")
	case f.KeyFile != "" && f.CertFile == "":
		return nil, f.usageErrorf("--tls-key-file needs --tls-cert-file, the certificate of the key")
	case f.CertFile != "":
		certPEM, err := os.ReadFile(f.CertFile)
		if err != nil {
			return nil, f.usageErrorf("--tls-cert-file: %w", err)
		}
		keyPEM, err := os.ReadFile(f.KeyFile)
		if err != nil {
			return nil, f.usageErrorf("--tls-key-file: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, f.usageErrorf("--tls-cert-file %s and --tls-key-file %s: %w", f.CertFile, f.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// usageErrorf returns a UsageError prefixed with the command's name.
func (f *ConnFlags) usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf("%s: "+format, append([]any{f.Cmd}, args...)...)}
}
