package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/ordinal-dev/ordinal/admin"
	"github.com/ordinal-dev/ordinal/auth"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/tlsutil"
	"github.com/ordinal-dev/ordinal/transport"
)

// securityFlags configure who may reach a node and how: TLS on the client
// port, mutual TLS or a cluster token on the peer port, and the roles of
// callers. README.md, "Security", explains them for operators.
type securityFlags struct {
	tlsCert, tlsKey, tlsClientCA string
	adminNames                   string
	tokensFile                   string
	anonymousIDs                 bool

	peerCert, peerKey, peerCA string
	clusterTokenFile          string

	maxStreams uint
}

// minClusterTokenLen is the shortest cluster token serve accepts: the
// token is the cluster's identity and, without peer TLS, its only
// credential, so it must not be guessable.
const minClusterTokenLen = 16

func addSecurityFlags(fs *flag.FlagSet, f *securityFlags) {
	fs.StringVar(&f.tlsCert, "tls-cert-file", "", "certificate (PEM) of the client gRPC port: serves it over TLS; re-read when the file changes")
	fs.StringVar(&f.tlsKey, "tls-key-file", "", "key (PEM) of --tls-cert-file")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca-file", "", "CA (PEM) of client certificates: clients must present one it signed (mutual TLS); any such certificate may take IDs")
	cli.ListVar(fs, &f.adminNames, "admin-names", "", "comma-separated client certificate names (common name or SAN) allowed admin calls (SetFloor, membership, leadership)")
	fs.StringVar(&f.tokensFile, "auth-tokens-file", "", "file of bearer tokens with their roles, one per line: 'ROLE NAME sha256:HASH' (make one with 'ordinal token create'); re-read when it changes")
	fs.BoolVar(&f.anonymousIDs, "anonymous-ids", false, "with security on, let callers without credentials take IDs (ids calls), for Layotto SDKs, which cannot send any; admin calls still need credentials")
	fs.StringVar(&f.peerCert, "peer-cert-file", "", "this node's peer certificate (PEM), naming its node ID ('ordinal tls cert create --peer'): Raft and every call between nodes use mutual TLS")
	fs.StringVar(&f.peerKey, "peer-key-file", "", "key (PEM) of --peer-cert-file")
	fs.StringVar(&f.peerCA, "peer-ca-file", "", "CA (PEM) that signed every node's peer certificate: only its certificates may join, vote or replicate")
	fs.StringVar(&f.clusterTokenFile, "cluster-token-file", "", "file holding a secret every node of the cluster shares: nodes prove to each other that they hold it, so a node joins and talks only to its own cluster")
	fs.UintVar(&f.maxStreams, "max-concurrent-streams", daemon.DefaultMaxConcurrentStreams, "most concurrent calls one client connection may have open on this node")
}

// configured reports whether any security flag is set: from then on admin
// and peer calls always need credentials.
func (f securityFlags) configured() bool {
	return f.tlsCert != "" || f.tlsClientCA != "" || f.tokensFile != "" || f.adminNames != "" ||
		f.peerCert != "" || f.peerCA != "" || f.clusterTokenFile != ""
}

// check rejects combinations that cannot work, before anything is loaded.
func (f securityFlags) check() error {
	switch {
	case (f.tlsCert == "") != (f.tlsKey == ""):
		return cli.UsageErrorf("serve: --tls-cert-file and --tls-key-file go together")
	case f.tlsClientCA != "" && f.tlsCert == "":
		return cli.UsageErrorf("serve: --tls-client-ca-file needs --tls-cert-file and --tls-key-file: client certificates are checked during a TLS handshake")
	case f.adminNames != "" && f.tlsClientCA == "":
		return cli.UsageErrorf("serve: --admin-names needs --tls-client-ca-file: they name client certificates")
	case !(f.peerCert == "" && f.peerKey == "" && f.peerCA == "") && (f.peerCert == "" || f.peerKey == "" || f.peerCA == ""):
		return cli.UsageErrorf("serve: --peer-cert-file, --peer-key-file and --peer-ca-file go together")
	case f.maxStreams == 0 || f.maxStreams > 1<<31:
		return cli.UsageErrorf("serve: --max-concurrent-streams must be between 1 and %d", 1<<31)
	}
	return nil
}

// load reads the certificates and secrets the flags name and returns the
// client port's security and the peer port's TLS and token.
func (f securityFlags) load(logger hclog.Logger) (daemon.Security, *transport.PeerTLS, []byte, error) {
	var sec daemon.Security
	sec.Auth = auth.Config{
		Open:         !f.configured(),
		AnonymousIDs: f.anonymousIDs,
		AdminNames:   cli.SplitList(f.adminNames),
		TokensFile:   f.tokensFile,
	}
	var err error
	if f.tlsCert != "" {
		if sec.TLSCert, err = tlsutil.LoadKeyPair(f.tlsCert, f.tlsKey, logger.Named("tls")); err != nil {
			return sec, nil, nil, fmt.Errorf("serve: --tls-cert-file: %w", err)
		}
	}
	if f.tlsClientCA != "" {
		if sec.ClientCAs, err = tlsutil.LoadCAPool(f.tlsClientCA, logger.Named("tls")); err != nil {
			return sec, nil, nil, fmt.Errorf("serve: --tls-client-ca-file: %w", err)
		}
	}
	var peerTLS *transport.PeerTLS
	if f.peerCert != "" {
		if peerTLS, err = transport.LoadPeerTLS(f.peerCert, f.peerKey, f.peerCA, logger.Named("peer-tls")); err != nil {
			return sec, nil, nil, fmt.Errorf("serve: --peer-cert-file: %w", err)
		}
	}
	var token []byte
	if f.clusterTokenFile != "" {
		if token, err = readSecretFile(f.clusterTokenFile); err != nil {
			return sec, nil, nil, fmt.Errorf("serve: --cluster-token-file: %w", err)
		}
		if len(token) < minClusterTokenLen {
			return sec, nil, nil, cli.UsageErrorf("serve: --cluster-token-file: the token is %d bytes; it must be at least %d (make one with 'ordinal token create')", len(token), minClusterTokenLen)
		}
	}
	return sec, peerTLS, token, nil
}

// warn tells the operator, loudly, where the node is exposed.
func (f securityFlags) warn(logger hclog.Logger, grpcAddr, peerAddr string) {
	if !f.configured() {
		if !admin.IsLoopback(grpcAddr) || !admin.IsLoopback(peerAddr) {
			logger.Warn("SECURITY IS OFF on a non-loopback address: anyone who reaches this node can take IDs, change floors and membership, and join or vote as a node. "+
				"Set --tls-cert-file/--tls-client-ca-file or --auth-tokens-file for clients and --peer-cert-file or --cluster-token-file for nodes (README, Security)",
				"grpc_addr", grpcAddr, "peer_addr", peerAddr)
		}
		return
	}
	if f.tlsCert == "" && !admin.IsLoopback(grpcAddr) {
		logger.Warn("the client port is not encrypted: calls, and bearer tokens, cross the network in clear text; set --tls-cert-file and --tls-key-file", "grpc_addr", grpcAddr)
	}
	if f.peerCert == "" && !admin.IsLoopback(peerAddr) {
		if f.clusterTokenFile == "" {
			logger.Warn("the peer port has no credentials: anyone who reaches it can join, vote and append to the Raft log; set --peer-cert-file/--peer-key-file/--peer-ca-file or --cluster-token-file", "peer_addr", peerAddr)
		} else {
			logger.Warn("the peer port is not encrypted: the cluster token authenticates nodes, but Raft traffic and forwarded calls cross the network in clear text; set --peer-cert-file/--peer-key-file/--peer-ca-file", "peer_addr", peerAddr)
		}
	}
	if f.tlsClientCA == "" && f.tokensFile == "" {
		logger.Warn("admin calls (SetFloor, members, remove, leader) are refused: no credential can carry the admin role; set --tls-client-ca-file with --admin-names, or --auth-tokens-file")
	} else if f.adminNames == "" && f.tokensFile == "" {
		logger.Warn("admin calls are refused: no --admin-names and no --auth-tokens-file")
	}
	if f.anonymousIDs {
		logger.Info("callers without credentials may take IDs (--anonymous-ids)")
	}
}

// readSecretFile reads a secret from path, without surrounding white space.
func readSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return []byte(strings.TrimSpace(string(b))), nil
}
