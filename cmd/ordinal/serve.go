package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ordinal-dev/ordinal/admin"
	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/auth"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/internal/version"
	"github.com/ordinal-dev/ordinal/metrics"
)

type serveFlags struct {
	nodeID, dataDir, grpcAddr, raftAddr string
	advertiseGRPC, advertiseRaft        string
	join                                string
	bootstrapExpect                     int
	logLevel, logFormat                 string
	metricsAddr, pprofAddr              string
	pprof, accessLog                    bool
	backend                             string
	storeAlias                          *cli.Alias // --store, the old name of --backend
	weakRangeTTL                        time.Duration
	maxKeys                             int
	etcd                                etcdFlags
	snowflake                           snowflakeFlags
	security                            securityFlags
}

// etcdFlags configure --backend etcd.
type etcdFlags struct {
	endpoints, username, passwordFile string
	caFile, certFile, keyFile         string
	prefix, layout, appID             string
	dialTimeout, sessionTTL           time.Duration
	requestTimeout                    time.Duration
}

// addEtcdFlags registers the --etcd-* flags.
func addEtcdFlags(fs *flag.FlagSet, f *etcdFlags) {
	cli.ListVar(fs, &f.endpoints, "etcd-endpoints", "", "with --backend etcd: comma-separated etcd client endpoints (host:port or http(s):// URLs)")
	fs.DurationVar(&f.dialTimeout, "etcd-dial-timeout", etcdcompat.DefaultDialTimeout, "bound on connecting to etcd and on each probe while waiting for it")
	fs.StringVar(&f.username, "etcd-username", "", "etcd user, when etcd has authentication enabled")
	fs.StringVar(&f.passwordFile, "etcd-password-file", "", "file holding the password of --etcd-username (a file, so that the password is not in the process list)")
	fs.StringVar(&f.caFile, "etcd-ca-file", "", "CA certificate (PEM) that signed etcd's server certificates: turns on TLS")
	fs.StringVar(&f.certFile, "etcd-cert-file", "", "client certificate (PEM) for etcd's --client-cert-auth; needs --etcd-key-file")
	fs.StringVar(&f.keyFile, "etcd-key-file", "", "key (PEM) of --etcd-cert-file")
	fs.StringVar(&f.prefix, "etcd-prefix", "", "prefix of every key ordinal uses in etcd; default /ordinal/, or /layotto/ with --etcd-layout layotto")
	fs.StringVar(&f.layout, "etcd-layout", string(etcdcompat.LayoutNative), "native (ids reserved in ranges: no etcd write per id) or layotto (the keys of Layotto's etcd sequencer: one etcd write per id, served next to Layotto sidecars)")
	fs.StringVar(&f.appID, "etcd-app-id", "", "with --etcd-layout layotto: the app ID Layotto puts in its keys (sequencer|||<app-id>||<key>), or a sidecar's fixed keyPrefix in lower case; empty: sequencer|||<key>")
	fs.DurationVar(&f.requestTimeout, "etcd-request-timeout", etcdcompat.DefaultRequestTimeout, "bound on the etcd requests of one call (Layotto-layout IDs, SetFloor, GetHighWater), also when the caller set no deadline")
	fs.DurationVar(&f.sessionTTL, "etcd-session-ttl", etcdcompat.DefaultSessionTTL, "lease TTL behind this node's STRONG leadership: how long a crashed or cut-off leader holds it")
}

// config returns the store configuration the --etcd-* flags describe,
// reading the password file.
func (f etcdFlags) config() (etcdcompat.Config, error) {
	var password string
	if f.passwordFile != "" {
		p, err := readSecretFile(f.passwordFile)
		if err != nil {
			return etcdcompat.Config{}, fmt.Errorf("--etcd-password-file: %w", err)
		}
		password = string(p)
	}
	return etcdcompat.Config{
		Endpoints:      cli.SplitList(f.endpoints),
		DialTimeout:    f.dialTimeout,
		Username:       f.username,
		Password:       password,
		CAFile:         f.caFile,
		CertFile:       f.certFile,
		KeyFile:        f.keyFile,
		Layout:         etcdcompat.Layout(f.layout),
		Prefix:         f.prefix,
		AppID:          f.appID,
		SessionTTL:     f.sessionTTL,
		RequestTimeout: f.requestTimeout,
	}, nil
}

// serveFlagGroups are the headings of serve --help. Every flag is under
// one (TestServeFlagGroups).
var serveFlagGroups = []cli.FlagGroup{
	{Heading: "Node", Flags: []string{cli.ConfigFlag, "node-id", "data-dir", "grpc-addr", "raft-addr",
		"advertise-grpc", "advertise-raft", "backend", "store", "max-concurrent-streams"}},
	{Heading: "Cluster", Flags: []string{"join", "bootstrap-expect", "max-keys", "weak-range-ttl"}},
	{Heading: "Snowflake stores (Raft store)", Flags: snowflakeFlagNames},
	{Heading: "etcd store (--backend etcd)", Flags: []string{"etcd-endpoints", "etcd-dial-timeout", "etcd-request-timeout",
		"etcd-session-ttl", "etcd-username", "etcd-password-file", "etcd-ca-file", "etcd-cert-file", "etcd-key-file",
		"etcd-prefix", "etcd-layout", "etcd-app-id"}},
	{Heading: "Security", Flags: []string{"tls-cert-file", "tls-key-file", "tls-client-ca-file", "admin-names",
		"auth-tokens-file", "anonymous-ids", "peer-cert-file", "peer-key-file", "peer-ca-file", "cluster-token-file"}},
	{Heading: "Observability", Flags: []string{"log-level", "log-format", "access-log", "metrics-addr", "pprof", "pprof-addr"}},
}

// newServeFlagSet registers serve's flags into f.
func newServeFlagSet(f *serveFlags) *flag.FlagSet {
	const usage = "ordinal serve [--config FILE] [flags]"
	fs := cli.NewFlagSet("serve", usage)
	cli.SetUsage(fs, usage, serveFlagGroups)
	cli.AddConfigFlag(fs)
	fs.StringVar(&f.nodeID, "node-id", "", "this node's ID, unique in the cluster; default: the ID stored in the data directory, else the hostname")
	fs.StringVar(&f.dataDir, "data-dir", "./data", "directory for the Raft log, snapshots and node identity")
	fs.StringVar(&f.grpcAddr, "grpc-addr", daemon.DefaultGRPCAddr, "address the client gRPC API listens on")
	fs.StringVar(&f.raftAddr, "raft-addr", daemon.DefaultRaftAddr, "address of the peer port: Raft and every call between nodes")
	fs.StringVar(&f.advertiseGRPC, "advertise-grpc", "", "gRPC address clients reach this node on; default: --grpc-addr")
	fs.StringVar(&f.advertiseRaft, "advertise-raft", "", "peer address other nodes reach this node on; default: --raft-addr")
	cli.ListVar(fs, &f.join, "join", "", "comma-separated peer addresses (--raft-addr) of other nodes: join their cluster, or form one with --bootstrap-expect")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "form a new cluster once this many nodes (this one included) find each other through --join")
	fs.StringVar(&f.metricsAddr, "metrics-addr", admin.DefaultAddr, "address of the admin HTTP listener: Prometheus /metrics, /healthz, /readyz (and /debug/pprof with --pprof); empty turns it off")
	fs.BoolVar(&f.pprof, "pprof", false, "also serve Go's /debug/pprof profiles on --metrics-addr; beyond loopback only with --auth-tokens-file, and every request then needs an admin token")
	fs.StringVar(&f.pprofAddr, "pprof-addr", "", "deprecated: the same as --metrics-addr ADDR --pprof (and it wins over --metrics-addr)")
	fs.StringVar(&f.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&f.accessLog, "access-log", false, "log every call when it finishes (method, code, duration, peer) at debug level; needs --log-level debug or trace")
	fs.DurationVar(&f.weakRangeTTL, "weak-range-ttl", alloc.DefaultWeakRangeTTL, "how long a range of WEAK IDs may serve after it was reserved; SetFloor waits about this long when a node cannot confirm the floor (every node of a cluster needs the same value)")
	fs.IntVar(&f.maxKeys, "max-keys", defaultMaxKeys, "most keys the cluster holds, all stores together (0: no limit): creating one more fails with ResourceExhausted, keys that exist keep working; up to 90 bytes of memory each, see the README (every node needs the same value; the leader's applies)")
	fs.StringVar(&f.backend, "backend", "raft", "where the counters live: raft (this cluster's own Raft log) or etcd (an existing etcd cluster, see --etcd-*; the nodes then hold no state)")
	// --store was the backend's flag, and ORDINAL_STORE its variable, until
	// the variable came to mean the client commands' store (namespace) of
	// keys only: the flag stays, on the command line alone.
	f.storeAlias = cli.DeprecatedAlias(fs, "store", "backend")
	addEtcdFlags(fs, &f.etcd)
	addSnowflakeFlags(fs, &f.snowflake)
	addSecurityFlags(fs, &f.security)
	return fs
}

func runServe(args []string) error {
	var f serveFlags
	fs := newServeFlagSet(&f)
	if _, err := cli.ParseCommandFlags("serve", fs, args); err != nil {
		return err
	}
	if err := checkStoreFlags(fs, f); err != nil {
		return err
	}
	if err := f.security.check(); err != nil {
		return err
	}
	if f.pprofAddr != "" {
		// The old flag: one listener now serves profiles with the metrics.
		f.metricsAddr, f.pprof = f.pprofAddr, true
	}
	if lvl := hclog.LevelFromString(f.logLevel); f.accessLog && lvl != hclog.Debug && lvl != hclog.Trace {
		return cli.UsageErrorf("serve: --access-log logs at debug level: add --log-level debug (or trace)")
	}
	if f.pprof && f.metricsAddr == "" {
		return cli.UsageErrorf("serve: --pprof serves profiles on --metrics-addr, which is empty (off)")
	}
	if f.pprof && !admin.IsLoopback(f.metricsAddr) && f.security.tokensFile == "" {
		return cli.UsageErrorf("serve: --pprof on --metrics-addr %s, not a loopback address: profiles there need admin credentials, so set --auth-tokens-file (and call with an admin bearer token), or use 127.0.0.1", f.metricsAddr)
	}
	logger, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if f.storeAlias.Used() {
		logger.Warn(f.storeAlias.Warning())
	}
	sec, peerTLS, token, err := f.security.load(logger)
	if err != nil {
		return err
	}
	sf, err := f.snowflake.config()
	if err != nil {
		return err
	}
	cfg := daemon.Config{
		Snowflake: sf,
		Cluster: cluster.Config{
			RaftAddr:      f.raftAddr,
			RaftAdvertise: f.advertiseRaft,
			GRPCAdvertise: f.advertiseGRPC,
			PeerTLS:       peerTLS,
			ClusterToken:  token,
		},
		GRPCAddr:             f.grpcAddr,
		Alloc:                alloc.Config{WeakRangeTTL: f.weakRangeTTL},
		Security:             sec,
		MaxConcurrentStreams: uint32(f.security.maxStreams),
		Logger:               logger,
		AccessLog:            f.accessLog,
	}
	if f.metricsAddr != "" {
		cfg.Metrics = metrics.New()
	}
	if f.backend == "etcd" {
		ecfg, err := f.etcd.config()
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		if err := ecfg.Validate(); err != nil {
			return &cli.UsageError{Err: fmt.Errorf("serve: %w", err)}
		}
		if cfg.Cluster.NodeID, err = resolveNodeID(f.nodeID, ""); err != nil {
			return err
		}
		if cfg.Metrics != nil {
			ecfg.Metrics = cfg.Metrics.Etcd
		}
		cfg.NewStore = etcdStore(ecfg)
	} else {
		if cfg.Cluster.NodeID, err = resolveNodeID(f.nodeID, f.dataDir); err != nil {
			return err
		}
		cfg.Cluster.DataDir = f.dataDir
		cfg.Cluster.MaxKeys = f.maxKeys
		cfg.Cluster.Join = cli.SplitList(f.join)
		cfg.Cluster.BootstrapExpect = f.bootstrapExpect
		// Without --join or --bootstrap-expect a node with an empty data
		// directory forms a single-node cluster: make run needs no set-up.
		cfg.Cluster.Bootstrap = f.join == "" && f.bootstrapExpect == 0
	}
	f.security.warn(logger, f.grpcAddr, f.raftAddr)
	return serve(logger, cfg, listenerFlags{addr: f.metricsAddr, pprof: f.pprof})
}

// listenerFlags configure the admin HTTP listener.
type listenerFlags struct {
	addr  string // empty: no listener
	pprof bool
}

func serve(logger hclog.Logger, cfg daemon.Config, af listenerFlags) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	d, err := daemon.Start(cfg)
	if err != nil {
		return err
	}
	if af.addr != "" {
		srv, err := serveAdmin(af, cfg.Metrics, d, logger)
		if err != nil {
			_ = d.Close()
			return err
		}
		defer srv.Close()
	}
	if err := d.WaitReady(ctx); err != nil {
		_ = d.Close()
		return fmt.Errorf("node did not become ready: %w", err)
	}
	if cfg.NewStore != nil {
		logger.Info("ordinal ready", "version", version.Version, "store", "etcd", "node_id", cfg.Cluster.NodeID,
			"grpc_addr", d.GRPCAddr(), "peer_addr", d.RaftAddr())
	} else {
		logger.Info("ordinal ready", "version", version.Version, "node_id", cfg.Cluster.NodeID,
			"grpc_addr", d.GRPCAddr(), "raft_addr", d.RaftAddr(), "data_dir", cfg.Cluster.DataDir)
	}
	select {
	case <-ctx.Done():
	case err := <-d.Err():
		// The node found its data damaged and stopped: exit non-zero with
		// the reason, which says what to do.
		_ = d.Close()
		return err
	}
	logger.Info("shutting down")
	if err := d.Close(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// etcdStore returns the daemon's NewStore for the etcd store cfg: the
// daemon wires stores, and etcdcompat knows nothing of it.
func etcdStore(cfg etcdcompat.Config) func(daemon.Self, hclog.Logger) (daemon.Store, error) {
	return func(self daemon.Self, logger hclog.Logger) (daemon.Store, error) {
		return etcdcompat.Open(cfg.WithNode(self.NodeID, self.PeerAddr, self.GRPCAddr, logger))
	}
}

// checkStoreFlags rejects flags that do not apply to the chosen backend.
// Raft's address and data directory flags are ignored with --backend etcd
// (the image's default command sets them), but --join and
// --bootstrap-expect would suggest a cluster that etcd replaces.
func checkStoreFlags(fs *flag.FlagSet, f serveFlags) error {
	switch f.backend {
	case "raft":
		var etcdSet []string
		fs.Visit(func(fl *flag.Flag) {
			if strings.HasPrefix(fl.Name, "etcd-") {
				etcdSet = append(etcdSet, "--"+fl.Name)
			}
		})
		if len(etcdSet) > 0 {
			hint := ""
			if os.Getenv(cli.EnvPrefix+"STORE") == "etcd" && !cli.ExplicitlySet(fs, "backend") {
				// The variable of the old --store, which serve no longer reads.
				hint = fmt.Sprintf(" (serve does not read %sSTORE=etcd: that variable is the client commands' store of keys; set %sBACKEND=etcd)", cli.EnvPrefix, cli.EnvPrefix)
			}
			return cli.UsageErrorf("serve: %s: the --etcd-* flags need --backend etcd%s", strings.Join(etcdSet, ", "), hint)
		}
		if f.maxKeys < 0 {
			return cli.UsageErrorf("serve: --max-keys %d: use 0 for no limit, or the most keys the cluster may hold", f.maxKeys)
		}
	case "etcd":
		for _, name := range []string{"join", "bootstrap-expect"} {
			if cli.ExplicitlySet(fs, name) {
				return cli.UsageErrorf("serve: --%s only applies to --backend raft; with --backend etcd, nodes share etcd and need no cluster of their own", name)
			}
		}
		if f.etcd.endpoints == "" {
			return cli.UsageErrorf("serve: --backend etcd needs --etcd-endpoints host:2379[,...]")
		}
		if cli.ExplicitlySet(fs, "max-keys") {
			return cli.UsageErrorf("serve: --max-keys only applies to --backend raft; with --backend etcd the keys live in etcd, whose --quota-backend-bytes bounds them")
		}
	default:
		return cli.UsageErrorf("serve: unknown --backend %q: use raft or etcd", f.backend)
	}
	return nil
}

// serveAdmin opens the admin HTTP listener: m's metrics, d's health and
// readiness and, with --pprof, the profiles, which off loopback (serve
// allows that only with a tokens file) need admin credentials.
func serveAdmin(af listenerFlags, m *metrics.Metrics, d *daemon.Daemon, logger hclog.Logger) (*admin.Server, error) {
	g, err := m.Gatherer()
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return admin.Listen(admin.Config{
		Addr:     af.addr,
		Gatherer: g,
		Ready:    d.Ready,
		Pprof:    af.pprof,
		Guard:    adminOnly(d.Authorizer()),
		Logger:   logger.Named("admin"),
	})
}

// adminOnly is the guard of the profiles off loopback: authz's admin
// check, or none without authz (then only loopback is allowed).
func adminOnly(authz *auth.Authorizer) func(http.Handler) http.Handler {
	if authz == nil {
		return nil
	}
	return authz.RequireAdminHTTP
}

// resolveNodeID picks the node ID: the flag when given, else the one the
// data directory (when there is one) remembers, else the hostname.
func resolveNodeID(flagValue, dataDir string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if dataDir != "" {
		stored, err := cluster.ReadNodeID(dataDir)
		if err != nil || stored != "" {
			return stored, err
		}
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("no --node-id given and the hostname is unknown: %w", err)
	}
	return host, nil
}

func newLogger(level, format string) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel {
		return nil, fmt.Errorf("unknown --log-level %q: use trace, debug, info, warn or error", level)
	}
	if format != "text" && format != "json" {
		return nil, fmt.Errorf("unknown --log-format %q: use text or json", format)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "ordinal",
		Level:      lvl,
		JSONFormat: format == "json",
		Output:     os.Stderr,
	}), nil
}

// defaultMaxKeys is --max-keys when not given. A sequencer keeps a key
// per kind of thing it numbers, so a million is far more than deployments
// use, while a client that makes a new key per call (a bug, or a request
// ID used as a key) stops at it long before the node runs out of memory:
// a million keys cost about 90 MB of heap and snapshot and restore in
// well under a second (fsm/DESIGN.md, "Memory per key"). Clusters that do
// need more raise it; make bench measures 10M.
const defaultMaxKeys = 1_000_000
