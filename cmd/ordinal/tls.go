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
	"slices"
	"strings"
	"time"

	"github.com/ordinal-dev/ordinal/internal/cli"
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
  ordinal tls init [flags]          make everything a secured cluster needs, in
                                    one step: CAs, node and client certificates
  ordinal tls ca create [flags]     make a certificate authority (CA)
  ordinal tls cert create [flags]   make a certificate signed by a CA:
                                    --server, --client or --peer

Everything ordinal needs for TLS, without openssl. The quickest start is
one command, which can run again at any time (it only adds what is
missing):

  ordinal tls init --dir certs --node n1 --node n2 --node n3

A secured cluster uses a peer CA, whose certificates name the nodes to
each other, and a CA for the client-facing port (it may be the same one
for server and client certificates). To make them one by one, for node n1:

  ordinal tls ca create --prefix peer-
  ordinal tls ca create
  ordinal tls cert create --peer --node n1 --ca peer-ca.pem --ca-key peer-ca-key.pem
  ordinal tls cert create --server --name n1 --dns n1,localhost --ip 127.0.0.1
  ordinal tls cert create --client --name admin

Run 'ordinal tls init --help', 'ordinal tls ca create --help' or
'ordinal tls cert create --help' for the flags.
`

// runTLS runs `ordinal tls ...`.
func runTLS(args []string) error {
	return tlsCommand(args, os.Stdout, os.Stderr)
}

// tlsCommand is runTLS writing its report to stdout and help to stderr.
func tlsCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, tlsUsage)
		return cli.UsageErrorf("tls: expected 'init', 'ca create' or 'cert create'")
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stderr, tlsUsage)
		return cli.ErrHelp
	case "init":
		return tlsInit(args[1:], stdout)
	case "ca", "cert":
	default:
		return cli.UsageErrorf("tls: unknown command %q: expected 'init', 'ca create' or 'cert create'", args[0])
	}
	what, rest := args[0], args[1:]
	if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "--help") {
		rest = []string{"create", "--help"}
	}
	if len(rest) == 0 || rest[0] != "create" {
		return cli.UsageErrorf("tls %s: expected 'ordinal tls %s create'", what, what)
	}
	if what == "ca" {
		return tlsCACreate(rest[1:], stdout)
	}
	return tlsCertCreate(rest[1:], stdout)
}

// tlsCACreate runs `ordinal tls ca create`.
func tlsCACreate(args []string, stdout io.Writer) error {
	set := cli.NewFlagSet("tls ca create", `ordinal tls ca create [--dir DIR] [--prefix PREFIX] [--name NAME] [--days N] [--force]

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
		return cli.UsageErrorf("tls ca create: --name must not be empty")
	}
	if strings.ContainsAny(*prefix, `/\`) {
		return cli.UsageErrorf("tls ca create: --prefix %q contains a path separator; use --dir for the directory", *prefix)
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
	set := cli.NewFlagSet("tls cert create", `ordinal tls cert create (--server | --client | --peer) [flags]

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
		return req, "", cli.UsageErrorf("tls cert create: give exactly one of --server, --client or --peer")
	}
	if err := checkDays("tls cert create", f.days); err != nil {
		return req, "", err
	}
	req.Validity = time.Duration(f.days) * day
	req.Name = f.name
	req.DNSNames = cli.SplitList(f.dns)
	for _, s := range cli.SplitList(f.ip) {
		ip := net.ParseIP(s)
		if ip == nil {
			return req, "", cli.UsageErrorf("tls cert create: --ip: %q is not an IP address", s)
		}
		req.IPs = append(req.IPs, ip)
	}
	switch {
	case f.peer:
		req.Kind, req.NodeID = tlsutil.KindPeer, f.node
		if f.node == "" {
			return req, "", cli.UsageErrorf("tls cert create: --peer needs --node, the ID of the node the certificate is for")
		}
	case f.node != "":
		return req, "", cli.UsageErrorf("tls cert create: --node is only for --peer certificates; name a server or client certificate with --name")
	case f.client:
		req.Kind = tlsutil.KindClient
		if f.name == "" {
			return req, "", cli.UsageErrorf("tls cert create: --client needs --name, the caller's identity (what serve --admin-names lists)")
		}
	default:
		req.Kind = tlsutil.KindServer
	}
	if err := req.Validate(); err != nil {
		return req, "", cli.UsageErrorf("tls cert create: %w", err)
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
	positional, err := cli.ParseCommandFlags(cmd, set, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return cli.UsageErrorf("%s: unexpected argument %q: the command takes only flags", cmd, positional[0])
	}
	return nil
}

func checkDays(cmd string, days int) error {
	if days < 1 || days > maxDays {
		return cli.UsageErrorf("%s: --days %d: give a number of days from 1 to %d", cmd, days, maxDays)
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

// tls init: the quick-start PKI of a whole cluster.

const tlsInitUsage = `ordinal tls init --dir DIR --node ID [--node ID ...] [--host NAME|IP ...] [--client NAME ...] [--days N] [--ca-key-dir DIR]

Makes, in one step, everything a cluster with TLS and authorization on
needs: three CAs and, signed by them, a peer and a server certificate for
every node and a certificate for every client. It creates only the files
that are missing and checks the others, so running it again (with the
same or more nodes and clients, on every start of a container) never
replaces anything, a CA least of all. --node, --host and --client may be
repeated or take comma-separated lists.

Files (in --dir; private keys mode 0600, beside their certificate):
  peer-ca.pem              CA of the peer certificates: serve --peer-ca-file
  server-ca.pem            CA of the server certificates: clients' --tls-ca-file
  client-ca.pem            CA of the client certificates: serve --tls-client-ca-file
  *-ca-key.pem             the CAs' keys (in --ca-key-dir): only 'ordinal tls'
                           needs them, to issue more certificates
  ID-peer.pem              node ID's certificate for the other nodes, naming it
                           (urn:ordinal:peer:ID): serve --peer-cert-file
  ID-server.pem            node ID's certificate for its client port, valid for
                           ID, localhost, 127.0.0.1, ::1 and every --host:
                           serve --tls-cert-file
  NAME-client.pem          client NAME's certificate: the client commands'
                           --tls-cert-file; admin calls need NAME in serve
                           --admin-names

There are three CAs, not one, so that a client certificate can never act
as a node, nor a node's server certificate as a client.`

// tlsInitDefaultClient is the client tls init makes a certificate for
// when no --client is given: the name serve --admin-names lists in the
// quick start.
const tlsInitDefaultClient = "admin"

// tlsInitRenewWithin is how close to its expiry a certificate makes tls
// init say that it is time to renew it.
const tlsInitRenewWithin = 30 * day

// listFlag is a flag that may be repeated, each time with one or more
// comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, cli.SplitList(v)...)
	return nil
}

// initCA is one of the CAs of tls init.
type initCA struct {
	kind              string // "peer", "server" or "client": the file names' prefix
	name              string // CommonName of a new CA
	trustedBy         string // who trusts it, for the report
	certFile, keyFile string
	cert              *x509.Certificate // nil until found or made
	ca                *tlsutil.CA       // with its key; nil when the key is not there
	created           bool
}

// initCert is a certificate tls init makes: a node's peer or server
// certificate, or a client's.
type initCert struct {
	req               tlsutil.CertRequest
	ca                *initCA
	owner             string   // "node n1" or `client "admin"`, for messages
	names             []string // server certificates: the names it must be valid for
	usages            []x509.ExtKeyUsage
	certFile, keyFile string
	leaf              *x509.Certificate
	created           bool
}

// tlsInitPlan is what tls init works on: its flags, turned into CAs and
// certificates.
type tlsInitPlan struct {
	dir, caKeyDir   string
	nodes, clients  []string
	hosts           []string // DNS names and IPs, as given
	peerCA, srvCA   *initCA
	cliCA           *initCA
	nodeCerts       []*initCert // peer then server certificate of each node
	clientCerts     []*initCert
	renewSoon       []*initCert
	nothingToCreate bool
}

// tlsInit runs `ordinal tls init`.
func tlsInit(args []string, stdout io.Writer) error {
	set := cli.NewFlagSet("tls init", tlsInitUsage)
	dir := set.String("dir", ".", "directory of the certificates and keys (created if missing)")
	caKeyDir := set.String("ca-key-dir", "", "directory of the CAs' private keys (default --dir); keep it off the nodes: whoever holds a CA key can make certificates, an admin's included")
	var nodes, hosts, clients listFlag
	set.Var(&nodes, "node", "ID of a node (its --node-id) to make a peer and a server certificate for; repeat it or give a comma-separated list")
	set.Var(&hosts, "host", "another DNS name or IP address clients reach the nodes by (a load balancer's, a host's), added to every server certificate; repeatable")
	set.Var(&clients, "client", "name of a caller to make a client certificate for (default "+tlsInitDefaultClient+"); repeatable")
	days := set.Int("days", defaultCertDays, "how many days new node and client certificates are valid; new CAs are valid for at least 5 years")
	if err := tlsParse("tls init", set, args); err != nil {
		return err
	}
	if *caKeyDir == "" {
		*caKeyDir = *dir
	}
	p, err := newTLSInitPlan(*dir, *caKeyDir, nodes, hosts, clients, *days)
	if err != nil {
		return err
	}
	now := time.Now()
	// Look at everything before writing anything: a problem leaves the
	// directory as it was.
	for _, c := range p.cas() {
		if err := c.inspect(now); err != nil {
			return fmt.Errorf("tls init: %w", err)
		}
	}
	var missing []*initCert
	for _, c := range p.certs() {
		found, err := c.inspect(now)
		if err != nil {
			return fmt.Errorf("tls init: %w", err)
		}
		if !found {
			missing = append(missing, c)
		} else if c.leaf.NotAfter.Sub(now) < tlsInitRenewWithin {
			p.renewSoon = append(p.renewSoon, c)
		}
	}
	for _, c := range missing {
		if c.ca.cert == nil {
			continue // a new CA, made to outlive its certificates
		}
		if c.ca.ca == nil {
			return fmt.Errorf("tls init: cannot make %s's certificate %s: the key of the %s CA, %s, is missing "+
				"(point --ca-key-dir at the directory that holds it); tls init never replaces a CA, since the certificates it issued are in use",
				c.owner, c.certFile, c.ca.kind, c.ca.keyFile)
		}
		if until := now.Add(c.req.Validity); until.After(c.ca.cert.NotAfter) {
			return cli.UsageErrorf("tls init: %s's certificate would be valid until %s, after the %s CA in %s expires (%s): pass a smaller --days",
				c.owner, until.UTC().Format(time.DateOnly), c.ca.kind, c.ca.certFile, c.ca.cert.NotAfter.UTC().Format(time.DateOnly))
		}
	}

	caValidity := time.Duration(max(defaultCADays, *days+1)) * day
	for _, c := range p.cas() {
		if c.cert != nil {
			continue
		}
		ca, err := tlsutil.NewCA(c.name, caValidity)
		if err != nil {
			return fmt.Errorf("tls init: %w", err)
		}
		if err := writeTLSFiles("tls init", c.certFile, c.keyFile, ca.CertPEM, ca.KeyPEM, false,
			"another 'ordinal tls init' may be running on the same directory"); err != nil {
			return err
		}
		c.ca, c.cert, c.created = ca, ca.Cert, true
	}
	for _, c := range missing {
		certPEM, keyPEM, err := c.ca.ca.Issue(c.req)
		if err != nil {
			return fmt.Errorf("tls init: %s's certificate: %w", c.owner, err)
		}
		if err := writeTLSFiles("tls init", c.certFile, c.keyFile, certPEM, keyPEM, false,
			"another 'ordinal tls init' may be running on the same directory"); err != nil {
			return err
		}
		if c.leaf, err = parseLeaf(certPEM); err != nil {
			return fmt.Errorf("tls init: read back %s: %w", c.certFile, err)
		}
		c.created = true
	}
	p.nothingToCreate = len(missing) == 0 && !p.peerCA.created && !p.srvCA.created && !p.cliCA.created
	p.report(stdout)
	return nil
}

// newTLSInitPlan checks the flags of tls init and lays out its files.
func newTLSInitPlan(dir, caKeyDir string, nodes, hosts, clients []string, days int) (*tlsInitPlan, error) {
	if err := checkDays("tls init", days); err != nil {
		return nil, err
	}
	if len(clients) == 0 {
		clients = []string{tlsInitDefaultClient}
	}
	p := &tlsInitPlan{dir: dir, caKeyDir: caKeyDir, nodes: dedupe(nodes), hosts: dedupe(hosts), clients: dedupe(clients)}
	newCA := func(kind, name, trustedBy string) *initCA {
		return &initCA{kind: kind, name: name, trustedBy: trustedBy,
			certFile: filepath.Join(dir, kind+"-ca.pem"), keyFile: filepath.Join(caKeyDir, kind+"-ca-key.pem")}
	}
	p.peerCA = newCA("peer", "ordinal peer CA", "every node trusts it for the other nodes: serve --peer-ca-file")
	p.srvCA = newCA("server", "ordinal server CA", "clients trust it for the nodes' client port: --tls-ca-file of the client commands")
	p.cliCA = newCA("client", "ordinal client CA", "every node trusts it for callers: serve --tls-client-ca-file")

	validity := time.Duration(days) * day
	var dnsNames []string
	var ips []net.IP
	for _, h := range p.hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !ip.Equal(net.IPv4(127, 0, 0, 1)) && !ip.Equal(net.IPv6loopback) { // in every server certificate already
				ips = append(ips, ip)
			}
			continue
		}
		if _, _, err := net.SplitHostPort(h); err == nil {
			return nil, cli.UsageErrorf("tls init: --host %q: give a DNS name or an IP address, without a port", h)
		}
		dnsNames = append(dnsNames, h)
	}
	for _, node := range p.nodes {
		peer := &initCert{
			req:    tlsutil.CertRequest{Kind: tlsutil.KindPeer, NodeID: node, Validity: validity},
			ca:     p.peerCA,
			owner:  "node " + node,
			usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		server := &initCert{
			req: tlsutil.CertRequest{Kind: tlsutil.KindServer, Name: node, Validity: validity,
				DNSNames: dedupe(append([]string{node, "localhost"}, dnsNames...)),
				IPs:      append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...)},
			ca:     p.srvCA,
			owner:  "node " + node,
			usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		server.names = append(append([]string{}, server.req.DNSNames...), "127.0.0.1", "::1")
		server.names = append(server.names, hostIPs(ips)...)
		for _, c := range []*initCert{peer, server} {
			if err := c.req.Validate(); err != nil {
				if c.req.Kind == tlsutil.KindServer {
					return nil, cli.UsageErrorf("tls init: --node %q or --host: %w", node, err)
				}
				return nil, cli.UsageErrorf("tls init: --node: %w", err)
			}
			base := node + "-" + c.req.Kind.String()
			c.certFile, c.keyFile = filepath.Join(dir, base+".pem"), filepath.Join(dir, base+"-key.pem")
			p.nodeCerts = append(p.nodeCerts, c)
		}
	}
	files := map[string]string{} // client file base -> client name
	for _, name := range p.clients {
		c := &initCert{
			req:    tlsutil.CertRequest{Kind: tlsutil.KindClient, Name: name, Validity: validity},
			ca:     p.cliCA,
			owner:  fmt.Sprintf("client %q", name),
			usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := c.req.Validate(); err != nil {
			return nil, cli.UsageErrorf("tls init: --client %q: %w", name, err)
		}
		base := fileNamePart(name) + "-client"
		if other, taken := files[base]; taken {
			return nil, cli.UsageErrorf("tls init: --client %q and --client %q would both be written to %s.pem: rename one", other, name, base)
		}
		files[base] = name
		c.certFile, c.keyFile = filepath.Join(dir, base+".pem"), filepath.Join(dir, base+"-key.pem")
		p.clientCerts = append(p.clientCerts, c)
	}
	return p, nil
}

func (p *tlsInitPlan) cas() []*initCA { return []*initCA{p.peerCA, p.srvCA, p.cliCA} }

func (p *tlsInitPlan) certs() []*initCert {
	return append(append([]*initCert{}, p.nodeCerts...), p.clientCerts...)
}

// inspect reads the CA's files when they exist. It refuses a CA with only
// one of its files, or one not valid now: tls init never replaces a CA,
// and it would issue nothing useful with an expired one.
func (c *initCA) inspect(now time.Time) error {
	certThere, err := fileExists(c.certFile)
	if err != nil {
		return err
	}
	keyThere, err := fileExists(c.keyFile)
	if err != nil {
		return err
	}
	switch {
	case !certThere && !keyThere:
		return nil // to make
	case !certThere:
		return fmt.Errorf("the %s CA's key %s exists without its certificate %s: tls init never replaces a CA; "+
			"restore %s, or delete %s if nothing uses that CA", c.kind, c.keyFile, c.certFile, c.certFile, c.keyFile)
	case keyThere:
		ca, err := tlsutil.LoadCA(c.certFile, c.keyFile)
		if err != nil {
			return fmt.Errorf("the %s CA: %w", c.kind, err)
		}
		c.ca, c.cert = ca, ca.Cert
	default:
		// The key kept elsewhere: enough to check what exists, not to
		// issue more.
		b, err := os.ReadFile(c.certFile)
		if err != nil {
			return fmt.Errorf("the %s CA: %w", c.kind, err)
		}
		if c.cert, err = parseLeaf(b); err != nil {
			return fmt.Errorf("the %s CA: %s: %w", c.kind, c.certFile, err)
		}
		if !c.cert.IsCA {
			return fmt.Errorf("the %s CA: %s holds %q, which is not a CA certificate", c.kind, c.certFile, c.cert.Subject.CommonName)
		}
	}
	switch {
	case now.After(c.cert.NotAfter):
		return fmt.Errorf("the %s CA in %s expired on %s, and with it every certificate it issued: "+
			"move %s (and %s) away and run tls init again to make a new set", c.kind, c.certFile,
			c.cert.NotAfter.UTC().Format(time.DateOnly), c.certFile, c.keyFile)
	case now.Before(c.cert.NotBefore):
		return fmt.Errorf("the %s CA in %s is not valid until %s: is the clock right?", c.kind, c.certFile,
			c.cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// inspect reports whether the certificate exists, and if it does checks
// that it is what tls init would make: its key beside it, issued by its
// CA, valid now, for the node or client it is named after.
func (c *initCert) inspect(now time.Time) (bool, error) {
	certThere, err := fileExists(c.certFile)
	if err != nil {
		return false, err
	}
	keyThere, err := fileExists(c.keyFile)
	if err != nil {
		return false, err
	}
	redo := fmt.Sprintf("delete %s and %s and run tls init again to make a new pair", c.certFile, c.keyFile)
	switch {
	case !certThere && !keyThere:
		return false, nil
	case !certThere || !keyThere:
		there, gone := c.certFile, c.keyFile
		if !certThere {
			there, gone = c.keyFile, c.certFile
		}
		return false, fmt.Errorf("%s exists but %s does not: %s", there, gone, redo)
	}
	kp, err := tlsutil.LoadKeyPair(c.certFile, c.keyFile, nil)
	if err != nil {
		return false, fmt.Errorf("%s's certificate: %w; %s", c.owner, err, redo)
	}
	c.leaf = kp.Leaf()
	if c.ca.cert == nil {
		return false, fmt.Errorf("%s exists but the CA that issued it, %s, does not: restore the CA, or %s", c.certFile, c.ca.certFile, redo)
	}
	if now.After(c.leaf.NotAfter) {
		return false, fmt.Errorf("%s expired on %s: to renew it, %s (nodes re-read their certificate files within a second)",
			c.certFile, c.leaf.NotAfter.UTC().Format(time.DateOnly), redo)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.ca.cert)
	for _, usage := range c.usages {
		if _, err := c.leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: now}); err != nil {
			return false, fmt.Errorf("%s is not a valid certificate of the %s CA in %s: %w; %s", c.certFile, c.ca.kind, c.ca.certFile, err, redo)
		}
	}
	switch c.req.Kind {
	case tlsutil.KindPeer:
		if id, _ := tlsutil.PeerID(c.leaf); id != c.req.NodeID {
			return false, fmt.Errorf("%s names node %q, not %q: %s", c.certFile, id, c.req.NodeID, redo)
		}
	case tlsutil.KindServer:
		for _, name := range c.names {
			if err := c.leaf.VerifyHostname(name); err != nil {
				return false, fmt.Errorf("%s is not valid for %s (it is for %s): to add names, %s",
					c.certFile, name, strings.Join(certSANs(c.leaf), ", "), redo)
			}
		}
	case tlsutil.KindClient:
		if cn := c.leaf.Subject.CommonName; cn != c.req.Name {
			return false, fmt.Errorf("%s is the certificate of client %q, not %q: %s", c.certFile, cn, c.req.Name, redo)
		}
	}
	return true, nil
}

// report says what tls init made or kept, what each file is for, and how
// to start the nodes and call them with them.
func (p *tlsInitPlan) report(w io.Writer) {
	status := func(created bool) string {
		if created {
			return "created"
		}
		return "kept   "
	}
	if p.nothingToCreate {
		fmt.Fprintf(w, "Nothing to do: every file exists and checks out. In %s:\n", p.dir)
	} else {
		fmt.Fprintf(w, "Certificates in %s (created: new; kept: found and checked, left as they were):\n", p.dir)
	}
	fmt.Fprintln(w, "CAs, three so that a client certificate can never act as a node or a server:")
	for _, c := range p.cas() {
		fmt.Fprintf(w, "  %s %s\n          %s CA %q, valid until %s: %s\n", status(c.created), c.certFile,
			c.kind, c.cert.Subject.CommonName, c.cert.NotAfter.UTC().Format(time.DateOnly), c.trustedBy)
	}
	var keys []string
	for _, c := range p.cas() {
		keys = append(keys, c.keyFile)
	}
	fmt.Fprintf(w, "  %s\n          the CAs' keys: only 'ordinal tls' needs them, to issue certificates; keep them off the nodes\n", strings.Join(keys, ", "))
	for _, c := range p.nodeCerts {
		what := fmt.Sprintf("%s's peer certificate, naming it (%s%s), for Raft and calls between nodes: serve --peer-cert-file/--peer-key-file",
			c.req.NodeID, tlsutil.PeerURIPrefix, c.req.NodeID)
		if c.req.Kind == tlsutil.KindServer {
			what = fmt.Sprintf("%s's client port certificate, for %s: serve --tls-cert-file/--tls-key-file",
				c.req.Name, strings.Join(certSANs(c.leaf), ", "))
		}
		fmt.Fprintf(w, "  %s %s, %s\n          %s\n", status(c.created), c.certFile, filepath.Base(c.keyFile), what)
	}
	for _, c := range p.clientCerts {
		fmt.Fprintf(w, "  %s %s, %s\n          client certificate of %q: --tls-cert-file/--tls-key-file of the client commands\n",
			status(c.created), c.certFile, filepath.Base(c.keyFile), c.req.Name)
	}
	fmt.Fprintln(w, "Private keys are mode 0600.")
	for _, c := range p.renewSoon {
		fmt.Fprintf(w, "Renew soon: %s expires on %s; delete it and %s and run tls init again (nodes re-read their certificate files within a second).\n",
			c.certFile, c.leaf.NotAfter.UTC().Format(time.DateOnly), c.keyFile)
	}

	// The quick start's admin, if this run or an earlier one made it.
	adminNames := "NAMES"
	admin := filepath.Join(p.dir, tlsInitDefaultClient+"-client.pem")
	if there, _ := fileExists(admin); there || slices.Contains(p.clients, tlsInitDefaultClient) {
		adminNames = tlsInitDefaultClient
	}
	if len(p.nodes) > 0 {
		n := p.nodes[0]
		fmt.Fprintf(w, "Start each node with its own files; %s:\n", n)
		fmt.Fprintf(w, "  ordinal serve --node-id %s \\\n", n)
		fmt.Fprintf(w, "    --peer-cert-file %s --peer-key-file %s --peer-ca-file %s \\\n",
			p.nodeCerts[0].certFile, p.nodeCerts[0].keyFile, p.peerCA.certFile)
		fmt.Fprintf(w, "    --tls-cert-file %s --tls-key-file %s --tls-client-ca-file %s \\\n",
			p.nodeCerts[1].certFile, p.nodeCerts[1].keyFile, p.cliCA.certFile)
		fmt.Fprintf(w, "    --admin-names %s ...\n", adminNames)
		if adminNames != tlsInitDefaultClient {
			fmt.Fprintln(w, "where NAMES lists, comma-separated, the clients allowed admin calls.")
		}
	}
	c := p.clientCerts[0]
	addr := "HOST:34904"
	if len(p.nodes) > 0 {
		addr = p.nodes[0] + ":34904"
	}
	cmd := "next mykey"
	if c.req.Name == tlsInitDefaultClient {
		cmd = "members"
	}
	fmt.Fprintf(w, "Call the nodes as %q with:\n  ordinal %s --addr %s --tls-ca-file %s --tls-cert-file %s --tls-key-file %s\n",
		c.req.Name, cmd, addr, p.srvCA.certFile, c.certFile, c.keyFile)
}

// certSANs lists a certificate's DNS and IP SANs.
func certSANs(cert *x509.Certificate) []string {
	names := append([]string{}, cert.DNSNames...)
	return append(names, hostIPs(cert.IPAddresses)...)
}

func hostIPs(ips []net.IP) []string {
	var s []string
	for _, ip := range ips {
		s = append(s, ip.String())
	}
	return s
}

// fileExists reports whether path exists; an error other than its
// absence (a directory it may not read, say) is returned.
func fileExists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// dedupe returns items without repeats, in their first order.
func dedupe(items []string) []string {
	var out []string
	for _, item := range items {
		if !slices.Contains(out, item) {
			out = append(out, item)
		}
	}
	return out
}
