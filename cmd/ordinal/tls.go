package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ordinal-dev/ordinal/tlsutil"
)

const (
	// defaultCADays and defaultCertDays are how long the certificates the
	// tls commands make are valid unless --days says otherwise: a CA
	// outlives the certificates it issues, which are renewed more often.
	defaultCADays   = 5 * 365
	defaultCertDays = 365
	// maxDays bounds --days, well within what time.Duration can hold.
	maxDays = 100 * 365
	day     = 24 * time.Hour
)

const tlsUsage = `Usage:
  ordinal tls ca create [flags]     make a certificate authority (CA)
  ordinal tls cert create [flags]   make a certificate signed by a CA:
                                    --server, --client or --peer

Everything ordinal needs for TLS, without openssl. A secured cluster uses
a peer CA, whose certificates name the nodes to each other, and a CA for
the client-facing port (it may be the same one for server and client
certificates). For example, for node n1:

  ordinal tls ca create --prefix peer-
  ordinal tls ca create
  ordinal tls cert create --peer --node n1 --ca peer-ca.pem --ca-key peer-ca-key.pem
  ordinal tls cert create --server --name n1 --dns n1,localhost --ip 127.0.0.1
  ordinal tls cert create --client --name admin

Run 'ordinal tls ca create --help' or 'ordinal tls cert create --help' for
the flags.
`

// runTLS runs `ordinal tls ...`.
func runTLS(args []string) error {
	return tlsCommand(args, os.Stdout, os.Stderr)
}

// tlsCommand is runTLS writing its report to stdout and help to stderr.
func tlsCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, tlsUsage)
		return usageErrorf("tls: expected 'ca create' or 'cert create'")
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stderr, tlsUsage)
		return errHelp
	case "ca", "cert":
	default:
		return usageErrorf("tls: unknown command %q: expected 'ca create' or 'cert create'", args[0])
	}
	what, rest := args[0], args[1:]
	if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "--help") {
		rest = []string{"create", "--help"}
	}
	if len(rest) == 0 || rest[0] != "create" {
		return usageErrorf("tls %s: expected 'ordinal tls %s create'", what, what)
	}
	if what == "ca" {
		return tlsCACreate(rest[1:], stdout)
	}
	return tlsCertCreate(rest[1:], stdout)
}

// tlsCACreate runs `ordinal tls ca create`.
func tlsCACreate(args []string, stdout io.Writer) error {
	set := newFlagSet("tls ca create", `ordinal tls ca create [--dir DIR] [--prefix PREFIX] [--name NAME] [--days N] [--force]

Makes a certificate authority: DIR/PREFIXca.pem, the CA certificate, which
nodes and clients trust, and DIR/PREFIXca-key.pem, its private key, which
'ordinal tls cert create' signs certificates with.`)
	dir := set.String("dir", ".", "directory to write the files to (created if missing)")
	prefix := set.String("prefix", "", "prefix of the file names, to keep several CAs in one directory: --prefix peer- writes peer-ca.pem and peer-ca-key.pem")
	name := set.String("name", "ordinal-ca", "the CA's name (its certificate's CommonName)")
	days := set.Int("days", defaultCADays, "how many days the CA is valid; the certificates it issues cannot outlive it")
	force := set.Bool("force", false, "overwrite existing files")
	if err := tlsParse("tls ca create", set, args); err != nil {
		return err
	}
	if err := checkDays("tls ca create", *days); err != nil {
		return err
	}
	if *name == "" {
		return usageErrorf("tls ca create: --name must not be empty")
	}
	if strings.ContainsAny(*prefix, `/\`) {
		return usageErrorf("tls ca create: --prefix %q contains a path separator; use --dir for the directory", *prefix)
	}
	ca, err := tlsutil.NewCA(*name, time.Duration(*days)*day)
	if err != nil {
		return fmt.Errorf("tls ca create: %w", err)
	}
	certFile := filepath.Join(*dir, *prefix+"ca.pem")
	keyFile := filepath.Join(*dir, *prefix+"ca-key.pem")
	if err := writeTLSFiles("tls ca create", certFile, keyFile, ca.CertPEM, ca.KeyPEM, *force,
		"pass --force to replace the CA: certificates the old one issued will no longer be trusted where the new one replaces it"); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Created CA %q, valid until %s.\n", *name, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	fmt.Fprintf(stdout, "  %s\n      the CA certificate: give it to whatever must trust the certificates\n"+
		"      this CA issues (serve --peer-ca-file or --tls-client-ca-file,\n"+
		"      clients' --tls-ca-file)\n", certFile)
	fmt.Fprintf(stdout, "  %s\n      the CA's private key (mode 0600): keep it secret, and off the nodes;\n"+
		"      only 'ordinal tls cert create' needs it\n", keyFile)
	caFlags := ""
	if *dir != "." || *prefix != "" {
		caFlags = fmt.Sprintf(" --ca %s --ca-key %s", certFile, keyFile)
	}
	fmt.Fprintf(stdout, "Next: ordinal tls cert create --server|--client|--peer%s ...\n", caFlags)
	return nil
}

// certCreateFlags are the flags of `ordinal tls cert create`.
type certCreateFlags struct {
	server, client, peer bool
	caFile, caKeyFile    string
	node, name           string
	dns, ip              string
	days                 int
	dir                  string
	force                bool
}

// tlsCertCreate runs `ordinal tls cert create`.
func tlsCertCreate(args []string, stdout io.Writer) error {
	var f certCreateFlags
	set := newFlagSet("tls cert create", `ordinal tls cert create (--server | --client | --peer) [flags]

Makes a key and a certificate signed by a CA (see 'ordinal tls ca create'):
  --server --name NAME [--dns a,b] [--ip 1.2.3.4]
      for a node's client-facing port: NAME-server.pem, NAME-server-key.pem;
      the names clients dial must be among --dns and --ip (default
      localhost, 127.0.0.1 and ::1)
  --client --name NAME
      for a caller, identified by NAME (what serve --admin-names lists):
      NAME-client.pem, NAME-client-key.pem
  --peer --node ID
      for node ID to authenticate to the other nodes:
      ID-peer.pem, ID-peer-key.pem`)
	set.BoolVar(&f.server, "server", false, "make a certificate for a node's client-facing gRPC port")
	set.BoolVar(&f.client, "client", false, "make a certificate for a caller (needs --name)")
	set.BoolVar(&f.peer, "peer", false, "make a certificate for node-to-node traffic (needs --node)")
	set.StringVar(&f.caFile, "ca", "", "the CA's certificate (default ca.pem in --dir)")
	set.StringVar(&f.caKeyFile, "ca-key", "", "the CA's private key (default ca-key.pem in --dir)")
	set.StringVar(&f.node, "node", "", "with --peer: the node's ID (its --node-id), which the certificate names")
	set.StringVar(&f.name, "name", "", "the certificate's CommonName; with --client the caller's identity (default: the node ID for --peer, the first DNS name or IP for --server)")
	set.StringVar(&f.dns, "dns", "", "comma-separated DNS names the certificate is valid for")
	set.StringVar(&f.ip, "ip", "", "comma-separated IP addresses the certificate is valid for")
	set.IntVar(&f.days, "days", defaultCertDays, "how many days the certificate is valid")
	set.StringVar(&f.dir, "dir", ".", "directory to write the files to (created if missing)")
	set.BoolVar(&f.force, "force", false, "overwrite existing files")
	if err := tlsParse("tls cert create", set, args); err != nil {
		return err
	}
	req, base, err := f.request()
	if err != nil {
		return err
	}
	caFile, caKeyFile := f.caFile, f.caKeyFile
	if caFile == "" {
		caFile = filepath.Join(f.dir, "ca.pem")
	}
	if caKeyFile == "" {
		caKeyFile = filepath.Join(f.dir, "ca-key.pem")
	}
	ca, err := tlsutil.LoadCA(caFile, caKeyFile)
	if err != nil {
		return fmt.Errorf("tls cert create: %w (make a CA with 'ordinal tls ca create', or point --ca and --ca-key at yours)", err)
	}
	certPEM, keyPEM, err := ca.Issue(req)
	if err != nil {
		return fmt.Errorf("tls cert create: %w", err)
	}
	certFile := filepath.Join(f.dir, base+".pem")
	keyFile := filepath.Join(f.dir, base+"-key.pem")
	if err := writeTLSFiles("tls cert create", certFile, keyFile, certPEM, keyPEM, f.force,
		"pass --force to replace it"); err != nil {
		return err
	}
	leaf, err := parseLeaf(certPEM)
	if err != nil {
		return fmt.Errorf("tls cert create: read back the new certificate: %w", err)
	}
	printCertCreated(stdout, req, ca, leaf, certFile, keyFile, caFile)
	return nil
}

// request checks the flags and returns the certificate request they
// describe and the base of the files' names.
func (f *certCreateFlags) request() (tlsutil.CertRequest, string, error) {
	var req tlsutil.CertRequest
	kinds := 0
	for _, set := range []bool{f.server, f.client, f.peer} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return req, "", usageErrorf("tls cert create: give exactly one of --server, --client or --peer")
	}
	if err := checkDays("tls cert create", f.days); err != nil {
		return req, "", err
	}
	req.Validity = time.Duration(f.days) * day
	req.Name = f.name
	req.DNSNames = splitCommas(f.dns)
	for _, s := range splitCommas(f.ip) {
		ip := net.ParseIP(s)
		if ip == nil {
			return req, "", usageErrorf("tls cert create: --ip: %q is not an IP address", s)
		}
		req.IPs = append(req.IPs, ip)
	}
	switch {
	case f.peer:
		req.Kind, req.NodeID = tlsutil.KindPeer, f.node
		if f.node == "" {
			return req, "", usageErrorf("tls cert create: --peer needs --node, the ID of the node the certificate is for")
		}
	case f.node != "":
		return req, "", usageErrorf("tls cert create: --node is only for --peer certificates; name a server or client certificate with --name")
	case f.client:
		req.Kind = tlsutil.KindClient
		if f.name == "" {
			return req, "", usageErrorf("tls cert create: --client needs --name, the caller's identity (what serve --admin-names lists)")
		}
	default:
		req.Kind = tlsutil.KindServer
	}
	if err := req.Validate(); err != nil {
		return req, "", usageErrorf("tls cert create: %w", err)
	}
	name := req.Name
	switch {
	case req.Kind == tlsutil.KindPeer:
		name = req.NodeID
	case name == "" && len(req.DNSNames) > 0:
		name = req.DNSNames[0]
	case name == "" && len(req.IPs) > 0:
		name = req.IPs[0].String()
	case name == "":
		name = "localhost" // what tlsutil names a server certificate with no SANs
	}
	return req, fileNamePart(name) + "-" + req.Kind.String(), nil
}

// printCertCreated says what tlsCertCreate wrote and how to use it.
func printCertCreated(w io.Writer, req tlsutil.CertRequest, ca *tlsutil.CA, leaf *x509.Certificate, certFile, keyFile, caFile string) {
	var sans []string
	sans = append(sans, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		sans = append(sans, ip.String())
	}
	for _, u := range leaf.URIs {
		sans = append(sans, u.String())
	}
	fmt.Fprintf(w, "Created %s certificate %q", req.Kind, leaf.Subject.CommonName)
	if len(sans) > 0 {
		fmt.Fprintf(w, " for %s", strings.Join(sans, ", "))
	}
	fmt.Fprintf(w, ",\nsigned by CA %q, valid until %s.\n", ca.Cert.Subject.CommonName, leaf.NotAfter.UTC().Format(time.DateOnly))
	fmt.Fprintf(w, "  %s\n      the certificate\n", certFile)
	fmt.Fprintf(w, "  %s\n      its private key (mode 0600): keep it secret\n", keyFile)
	switch req.Kind {
	case tlsutil.KindPeer:
		fmt.Fprintf(w, "Use it on node %s, with the CA that issued the other nodes' peer certificates:\n"+
			"  ordinal serve --node-id %s --peer-cert-file %s --peer-key-file %s --peer-ca-file %s ...\n",
			req.NodeID, req.NodeID, certFile, keyFile, caFile)
	case tlsutil.KindServer:
		fmt.Fprintf(w, "Use it on a node:\n  ordinal serve --tls-cert-file %s --tls-key-file %s ...\n"+
			"Clients trust it with --tls-ca-file %s.\n", certFile, keyFile, caFile)
	case tlsutil.KindClient:
		fmt.Fprintf(w, "Use it to call nodes:\n  ordinal <command> --tls-cert-file %s --tls-key-file %s --tls-ca-file <the servers' CA> ...\n"+
			"Nodes accept it with serve --tls-client-ca-file %s; it may make admin calls\n"+
			"if serve --admin-names lists %q.\n", certFile, keyFile, caFile, leaf.Subject.CommonName)
	}
}

// tlsParse parses the flags of a tls command, which takes no arguments.
func tlsParse(cmd string, set *flag.FlagSet, args []string) error {
	positional, err := parseCommandFlags(cmd, set, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return usageErrorf("%s: unexpected argument %q: the command takes only flags", cmd, positional[0])
	}
	return nil
}

func checkDays(cmd string, days int) error {
	if days < 1 || days > maxDays {
		return usageErrorf("%s: --days %d: give a number of days from 1 to %d", cmd, days, maxDays)
	}
	return nil
}

// writeTLSFiles writes a certificate and its key; when a file exists
// (and force is false) the error ends with hint.
func writeTLSFiles(cmd, certFile, keyFile string, certPEM, keyPEM []byte, force bool, hint string) error {
	err := tlsutil.WriteFiles(certFile, keyFile, certPEM, keyPEM, force)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w; %s", cmd, err, hint)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}

// splitCommas splits a comma-separated flag value, dropping empty items.
func splitCommas(s string) []string {
	var items []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

// fileNamePart makes name usable in a file name: anything but letters,
// digits, '.', '_' and '-' becomes '_', and so do leading dots (a name
// may hold spaces, an IPv6 address colons, and must not make a path or a
// hidden file).
func fileNamePart(name string) string {
	trimmed := strings.TrimLeft(name, ".")
	name = strings.Repeat("_", len(name)-len(trimmed)) + trimmed
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, name)
}

// parseLeaf parses the first certificate in certPEM.
func parseLeaf(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}
