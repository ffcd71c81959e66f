package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ordinal-dev/ordinal/admin"
	"github.com/ordinal-dev/ordinal/bench"
	"github.com/ordinal-dev/ordinal/bench/noop"
	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/tlsutil"
)

const runUsage = `ordinal-bench run [--mode strong|weak|batch|stream] [--backend ordinal|etcd] [--targets HOST:PORT,...]
           [--concurrency N] [--duration D] [--warmup D] [--count N] [--key K] [--keys N]
           [--key-dist cycle|fresh|zipf] [--seed N] [--store S] [--multi-address] [--weak-prefetch N]
       ordinal-bench [flags]   (the same)

Runs a bounded load and verifies every ID received: no ID twice, STRONG IDs
in real-time order across targets, WEAK IDs in order per target. Exits 1 if
the verification fails. Callers are spread round-robin over the targets;
with --multi-address they share one client made with all the targets
(client.New("A,B,C")), which sends STRONG calls to the leader and WEAK
calls over the healthy nodes (WEAK IDs are then checked for uniqueness
only: which node served a call is not known). --weak-prefetch N serves WEAK
IDs from blocks of N (client.WithWeakPrefetch); such a run, one key only,
keeps no record per call: each caller checks its own IDs increase, every ID
is checked unique after the run, and one call in 64 is timed.
--backend etcd takes one ID per call from etcd exactly as Layotto's etcd
sequencer does. The other commands: ordinal-bench serve-noop (the no-op
ceiling server), failover (kills the leader's process and measures until
STRONG calls succeed again) and compare (every scenario of BENCHMARKS.md
in interleaved rounds); see ordinal-bench --help`

// runBench is ordinal-bench run.
func runBench(args []string) error {
	var (
		cfg              bench.Config
		mode, backend    string
		targets, keyDist string
		concurrency, nks int
		conn             cli.ConnFlags
	)
	fs := cli.NewFlagSet("run", runUsage)
	conn.Register(fs)
	fs.StringVar(&mode, "mode", "strong", "strong or weak (one ID per GetNextId call), batch (--count IDs per GetNextIds call, STRONG) or stream (STRONG through client.WithStreaming, one client per target shared by all callers)")
	fs.StringVar(&backend, "backend", "ordinal", "ordinal (ordinal nodes or the no-op server) or etcd (Layotto's etcd sequencer: one transaction per ID)")
	fs.StringVar(&targets, "targets", "", "comma-separated addresses to send calls to, round-robin over callers; default "+daemon.DefaultGRPCAddr+", or 127.0.0.1:2379 for etcd")
	fs.IntVar(&concurrency, "concurrency", bench.DefaultConcurrency, "callers, each making one call at a time")
	fs.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "how long calls are measured, after the warm-up")
	fs.DurationVar(&cfg.Warmup, "warmup", bench.DefaultWarmup, "calls made before measuring starts (verified, not measured); 0 for none")
	fs.Int64Var(&cfg.Count, "count", 0, fmt.Sprintf("IDs per call; default %d in batch mode, else 1", bench.DefaultBatchCount))
	fs.StringVar(&cfg.Key, "key", bench.DefaultKey, "the key, or with --keys N the prefix of keys KEY-0..KEY-(N-1), or with --key-dist fresh the prefix of the fresh keys")
	fs.IntVar(&nks, "keys", 1, fmt.Sprintf("how many keys the callers spread over (at most %d); not with --key-dist fresh", bench.MaxKeys))
	fs.StringVar(&keyDist, "key-dist", string(bench.KeyCycle), fmt.Sprintf("how each call picks its key: cycle (each caller through the --keys keys in turn, callers starting spread over them), "+
		"fresh (a key never used before on every call: KEY-<nonce>-<n>) or zipf (drawn from the --keys keys with Zipf popularity, s=%g, KEY-0 the most popular)", bench.ZipfS))
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the callers' sources for --key-dist zipf (caller i draws from a PCG seeded with SEED and i)")
	fs.StringVar(&cfg.Store, "store", "", "store of the keys (ordinal only)")
	fs.DurationVar(&cfg.Timeout, "timeout", bench.DefaultTimeout, "how long calls in flight when the run ends may take before they are abandoned")
	fs.IntVar(&cfg.Conns, "conns", 1, "clients (gRPC connections) per target, shared by the callers")
	fs.StringVar(&cfg.Label, "label", "", "name of the run in the RESULT line")
	fs.BoolVar(&cfg.MultiAddress, "multi-address", false, "make each client over all --targets at once (client.New(\"A,B,C\")), shared by every caller: "+
		"the client sends STRONG calls to the leader and WEAK calls in turn over the healthy nodes; WEAK IDs are then checked for uniqueness only")
	fs.IntVar(&cfg.WeakPrefetch, "weak-prefetch", 0, fmt.Sprintf("serve WEAK IDs from blocks of this many taken ahead (client.WithWeakPrefetch, 2 to %d; 0: off); "+
		"--mode weak and one key only; verified per caller and for uniqueness as the run goes, latencies of 1 call in %d", client.MaxWeakPrefetch, bench.PrefetchSampleEvery))
	var cpuProfile string
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator to this file")
	if err := cli.NoArgs("run", fs, args); err != nil {
		return err
	}
	cfg.Mode, cfg.Backend = bench.Mode(strings.ToLower(mode)), bench.Backend(strings.ToLower(backend))
	cfg.Concurrency, cfg.Keys, cfg.KeyDist = concurrency, nks, bench.KeyDist(strings.ToLower(keyDist))
	// --warmup 0 means none; bench.Config's zero Warmup alone would mean
	// the default.
	cfg.NoWarmup = cfg.Warmup == 0
	cfg.Targets = cli.SplitList(targets)
	if len(cfg.Targets) == 0 {
		cfg.Targets = []string{daemon.DefaultGRPCAddr}
		if cfg.Backend == bench.BackendEtcd {
			cfg.Targets = []string{"127.0.0.1:2379"}
		}
	}
	if concurrency < 1 || cfg.Duration <= 0 || nks < 1 {
		return cli.UsageErrorf("run: --concurrency, --duration and --keys must be positive")
	}
	if _, err := cfg.WithDefaults(); err != nil {
		return cli.UsageErrorf("run: %v", err)
	}
	if cfg.Backend == bench.BackendEtcd && (conn.TLSEnabled() || conn.TokenFile != "") {
		return cli.UsageErrorf("run: --tls, --tls-* and --token-file secure the connections to ordinal nodes; --backend etcd does not use them")
	}
	var err error
	if cfg.ClientOptions, err = conn.ClientOptions(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("run: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		var u *bench.UsageError
		if errors.As(err, &u) {
			return cli.UsageErrorf("run: %v", err)
		}
		return fmt.Errorf("run: %w", err)
	}
	res.Print(os.Stdout)
	if res.VerifyErr != nil {
		return fmt.Errorf("run: VERIFICATION FAILED: %w", res.VerifyErr)
	}
	return nil
}

// runBenchServeNoop is ordinal-bench serve-noop.
func runBenchServeNoop(args []string) error {
	var addr, certFile, keyFile, clientCAFile string
	fs := cli.NewFlagSet("serve-noop", "ordinal-bench serve-noop [--addr HOST:PORT] [--tls-cert-file F --tls-key-file F [--tls-client-ca-file F]]\n\n"+
		"Serves ordinal.v1.SequencerService GetNextId, GetNextIds and NextIdStream from one\n"+
		"atomic counter, with no consensus: the ceiling for ordinal's benchmarks.\n"+
		"With --tls-cert-file it serves over TLS, and with --tls-client-ca-file it\n"+
		"requires client certificates (mutual TLS), as ordinal serve's same flags do:\n"+
		"the ceiling of a node serving TLS.")
	fs.StringVar(&addr, "addr", "127.0.0.1:34906", "address to listen on; port 0 picks a free one")
	var pprofAddr string
	fs.StringVar(&pprofAddr, "pprof-addr", "", "serve Go's /debug/pprof profiles on this address, as ordinal serve does (off when empty)")
	fs.StringVar(&certFile, "tls-cert-file", "", "server certificate (PEM): serve over TLS, as ordinal serve --tls-cert-file does")
	fs.StringVar(&keyFile, "tls-key-file", "", "key (PEM) of --tls-cert-file")
	fs.StringVar(&clientCAFile, "tls-client-ca-file", "", "CA (PEM) of client certificates: clients must present one it signed (mutual TLS)")
	if err := cli.NoArgs("serve-noop", fs, args); err != nil {
		return err
	}
	switch {
	case (certFile == "") != (keyFile == ""):
		return cli.UsageErrorf("serve-noop: --tls-cert-file and --tls-key-file go together")
	case clientCAFile != "" && certFile == "":
		return cli.UsageErrorf("serve-noop: --tls-client-ca-file needs --tls-cert-file and --tls-key-file: client certificates are checked during a TLS handshake")
	}
	if pprofAddr != "" {
		// Loopback only: the no-op server has no admin credentials.
		if _, err := admin.Listen(admin.Config{Addr: pprofAddr, Pprof: true}); err != nil {
			return fmt.Errorf("serve-noop: %w", err)
		}
	}
	var (
		l   *noop.Listener
		kp  *tlsutil.KeyPair
		cas *tlsutil.CAPool
		err error
	)
	if certFile != "" {
		// The configuration ordinal serve builds for its client port, so
		// that the ceiling pays the same handshake and record layer.
		if kp, err = tlsutil.LoadKeyPair(certFile, keyFile, nil); err != nil {
			return cli.UsageErrorf("serve-noop: --tls-cert-file: %v", err)
		}
		if clientCAFile != "" {
			if cas, err = tlsutil.LoadCAPool(clientCAFile, nil); err != nil {
				return cli.UsageErrorf("serve-noop: --tls-client-ca-file: %v", err)
			}
		}
		l, err = noop.ListenTLS(addr, tlsutil.ServerConfig(kp, cas, cas != nil))
	} else {
		l, err = noop.Listen(addr)
	}
	if err != nil {
		return fmt.Errorf("serve-noop: %w", err)
	}
	defer l.Close()
	fmt.Printf("no-op sequencer listening on %s\n", l.Addr())
	switch {
	case cas != nil:
		fmt.Println("serving over mutual TLS: client certificates of --tls-client-ca-file required")
	case kp != nil:
		fmt.Println("serving over TLS")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-l.Done():
		return fmt.Errorf("serve-noop: %w", err)
	}
}

// runBenchFailover is ordinal-bench failover.
func runBenchFailover(args []string) error {
	var (
		cfg     bench.FailoverConfig
		targets string
		conn    cli.ConnFlags
	)
	fs := cli.NewFlagSet("failover", "ordinal-bench failover --kill-pid PID --targets SURVIVOR,...\n\n"+
		"Takes a STRONG ID through every target, kills PID (the leader) with SIGKILL,\n"+
		"then sends a STRONG call every --interval, in turn to each target, and reports\n"+
		"how long after the kill the first call, and a call through every target,\n"+
		"succeeded. Fails if IDs after the kill are not above those before it.")
	fs.IntVar(&cfg.KillPID, "kill-pid", 0, "process ID of the leader to kill")
	fs.StringVar(&targets, "targets", "", "comma-separated gRPC addresses of the surviving nodes")
	fs.StringVar(&cfg.Key, "key", "failover", "key of the STRONG calls")
	fs.StringVar(&cfg.Store, "store", "", "store of the key")
	fs.DurationVar(&cfg.Interval, "interval", 10*time.Millisecond, "time between calls after the kill")
	fs.DurationVar(&cfg.CallTimeout, "call-timeout", time.Second, "how long calls in flight when the run ends may take before they are abandoned")
	fs.DurationVar(&cfg.Timeout, "timeout", 15*time.Second, "give up this long after the kill")
	conn.Register(fs)
	if err := cli.NoArgs("failover", fs, args); err != nil {
		return err
	}
	cfg.Targets = cli.SplitList(targets)
	if cfg.KillPID <= 0 || len(cfg.Targets) == 0 {
		return cli.UsageErrorf("failover: --kill-pid and --targets are required")
	}
	var err error
	if cfg.ClientOptions, err = conn.ClientOptions(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := bench.Failover(ctx, cfg)
	if err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	res.Print(os.Stdout)
	return nil
}

// runBenchCompare is ordinal-bench compare.
func runBenchCompare(args []string) error {
	var (
		cfg                  bench.CompareConfig
		cluster, only, out   string
		rounds               int
		duration, warmup     time.Duration
		machine, commandLine string
	)
	fs := cli.NewFlagSet("compare", "ordinal-bench compare --cluster A,B,C --noop HOST:PORT [--etcd HOST:PORT] [--etcd-cluster D,E,F]\n"+
		"           [--tls-cluster G,H,I --tls-noop HOST:PORT --tls-cluster-ca-file F --tls-cluster-cert-file F --tls-cluster-key-file F\n"+
		"            --tls-cluster-admin-cert-file F --tls-cluster-admin-key-file F] [--out FILE]\n\n"+
		"Runs every benchmark scenario against the cluster's leader and a follower, the\n"+
		"no-op server, etcd and ordinal nodes on etcd (--etcd-cluster), interleaved in\n"+
		"rounds, and writes the markdown tables of BENCHMARKS.md (medians over rounds,\n"+
		"ratios to the same round's no-op run).\n\n"+
		"With --tls-cluster and --tls-noop it also runs the mTLS rows (tls-*, noop-tls-*)\n"+
		"against a second cluster secured with TLS and client certificates and a no-op\n"+
		"server over the same mutual TLS ('ordinal-bench serve-noop --tls-cert-file ...\n"+
		"--tls-client-ca-file ...'), each right after its plain twin, and reports TLS on\n"+
		"vs off. Their calls present --tls-cluster-cert-file, which needs only the ids\n"+
		"role; the leader lookup presents --tls-cluster-admin-cert-file, a certificate\n"+
		"named in the nodes' --admin-names. --tls-ca-file and the other connection flags\n"+
		"secure --cluster and --etcd-cluster instead.\n\n"+
		"With --cluster5 it also runs strong-leader-64-5nodes against the leader of that\n"+
		"plain 5-node cluster, next to the 3-node row.\n\n"+
		"With --cluster-metrics and --cluster-nometrics it also runs\n"+
		"strong-leader-64-metrics and strong-leader-64-nometrics, one after the other,\n"+
		"against the leaders of those plain 3-node clusters, started alike but one with\n"+
		"metrics on and one with metrics off (ordinal serve --metrics-addr \"\"), and\n"+
		"reports metrics on vs off against the target\n"+
		"strong-leader-64-metrics / strong-leader-64-nometrics >= 0.95.\n\n"+
		"The multi-address rows call all of --cluster through one client made with every\n"+
		"address ('ordinal-bench run --multi-address'): strong-multi-64, against the target\n"+
		"strong-multi-64 / strong-leader-64 >= 0.9 in the same rounds, and weak-prefetch-64\n"+
		"(--weak-prefetch 100000), against the target >= 20M ids/s.")
	fs.StringVar(&cluster, "cluster", "", "comma-separated gRPC addresses of the ordinal nodes")
	var cluster5 string
	fs.StringVar(&cluster5, "cluster5", "", "comma-separated gRPC addresses of a plain 5-node cluster, for strong-leader-64-5nodes; empty skips that row")
	var clusterNoMetrics, clusterMetrics string
	fs.StringVar(&clusterNoMetrics, "cluster-nometrics", "", `comma-separated gRPC addresses of a plain 3-node cluster serving with metrics off (--metrics-addr ""), for strong-leader-64-nometrics; empty skips that row`)
	fs.StringVar(&clusterMetrics, "cluster-metrics", "", `comma-separated gRPC addresses of a plain 3-node cluster started as --cluster-nometrics's but with metrics on, for strong-leader-64-metrics, the metrics-off row's twin; empty skips that row`)
	fs.StringVar(&cfg.Noop, "noop", "", "address of `ordinal-bench serve-noop`")
	fs.StringVar(&cfg.Etcd, "etcd", "", "etcd client address; empty skips the etcd rows")
	var etcdCluster string
	fs.StringVar(&etcdCluster, "etcd-cluster", "", "comma-separated gRPC addresses of ordinal nodes serving with --backend etcd (native layout) on --etcd; empty skips the etcdstore- rows")
	fs.StringVar(&cfg.EtcdClusterPrefix, "etcd-cluster-prefix", "", "the --etcd-prefix of the --etcd-cluster nodes, to find the elected one in etcd; default ordinal's default prefix")
	fs.IntVar(&rounds, "rounds", 4, "how many times every scenario runs (even: the pairs compared to within a few per cent swap order every other round)")
	fs.DurationVar(&duration, "duration", 5*time.Second, "measured time of each run")
	fs.DurationVar(&warmup, "warmup", time.Second, "warm-up of each run")
	fs.StringVar(&only, "only", "", "comma-separated scenario names to run; default all")
	fs.StringVar(&out, "out", "-", "file for the markdown; - for stdout")
	fs.StringVar(&machine, "machine", "this machine", "description of the machine, for the report")
	fs.StringVar(&commandLine, "command", "", "the command to name as the source of the numbers; default this one")
	var pids string
	fs.StringVar(&pids, "pids", "", "comma-separated ADDR=PID of the servers, to measure their CPU time per call (Linux)")
	var conn cli.ConnFlags
	conn.Register(fs) // for the ordinal nodes: --noop and --etcd are plain TCP
	var tf tlsTargetFlags
	tf.register(fs)
	if err := cli.NoArgs("compare", fs, args); err != nil {
		return err
	}
	cfg.Cluster, cfg.Only, cfg.EtcdCluster, cfg.Cluster5 = cli.SplitList(cluster), cli.SplitList(only), cli.SplitList(etcdCluster), cli.SplitList(cluster5)
	cfg.ClusterNoMetrics = cli.SplitList(clusterNoMetrics)
	cfg.ClusterMetrics = cli.SplitList(clusterMetrics)
	cfg.Rounds, cfg.Duration, cfg.Warmup, cfg.Machine = rounds, duration, warmup, machine
	// --warmup 0 means none; CompareConfig's zero Warmup alone would mean
	// the default.
	cfg.NoWarmup = warmup == 0
	if len(cfg.Cluster) < 2 || cfg.Noop == "" || rounds < 1 || duration <= 0 || warmup < 0 {
		return cli.UsageErrorf("compare: --cluster (two nodes or more) and --noop are required; --rounds and --duration must be positive")
	}
	if len(cfg.EtcdCluster) > 0 && cfg.Etcd == "" {
		return cli.UsageErrorf("compare: --etcd-cluster needs --etcd, the etcd those nodes use (the elected node is read from it)")
	}
	var err error
	if cfg.ClientOptions, err = conn.ClientOptions(); err != nil {
		return err
	}
	if cfg.TLS, err = tf.targets(); err != nil {
		return err
	}
	if pids != "" {
		cfg.PIDs = map[string]int{}
		for _, kv := range cli.SplitList(pids) {
			addr, pid, ok := strings.Cut(kv, "=")
			n, err := strconv.Atoi(pid)
			if !ok || err != nil || n <= 0 {
				return cli.UsageErrorf("compare: --pids wants ADDR=PID pairs, got %q", kv)
			}
			cfg.PIDs[addr] = n
		}
	}
	cfg.Command = commandLine
	if cfg.Command == "" {
		cfg.Command = "ordinal-bench compare " + strings.Join(args, " ")
	}
	cfg.Log = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cmp, err := bench.Compare(ctx, cfg)
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	if out == "-" {
		cmp.Markdown(os.Stdout)
	} else {
		f, err := os.Create(out)
		if err != nil {
			return fmt.Errorf("compare: %w", err)
		}
		cmp.Markdown(f)
		if err := f.Close(); err != nil {
			return fmt.Errorf("compare: %w", err)
		}
	}
	if len(cmp.Failures) > 0 {
		return fmt.Errorf("compare: %d run(s) failed; first: %w", len(cmp.Failures), cmp.Failures[0])
	}
	return nil
}

// tlsTargetFlags are compare's flags for the servers of the mTLS
// rows (bench.TLSTargets): a secured cluster, a no-op server over mutual
// TLS, and the two client certificates that reach them.
type tlsTargetFlags struct {
	cluster, noop               string
	caFile, certFile, keyFile   string
	adminCertFile, adminKeyFile string
	serverName                  string
}

func (f *tlsTargetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.cluster, "tls-cluster", "", "comma-separated gRPC addresses of a cluster secured with TLS and client certificates, for the tls- rows; empty skips them")
	fs.StringVar(&f.noop, "tls-noop", "", "address of 'ordinal-bench serve-noop --tls-cert-file ... --tls-client-ca-file ...', the ceiling of the mTLS rows; empty skips its rows")
	fs.StringVar(&f.caFile, "tls-cluster-ca-file", "", "CA (PEM) that signed the server certificates of --tls-cluster and --tls-noop")
	fs.StringVar(&f.certFile, "tls-cluster-cert-file", "", "client certificate (PEM) the calls of the mTLS rows present; any certificate of the nodes' client CA (the ids role) will do")
	fs.StringVar(&f.keyFile, "tls-cluster-key-file", "", "key (PEM) of --tls-cluster-cert-file")
	fs.StringVar(&f.adminCertFile, "tls-cluster-admin-cert-file", "", "client certificate (PEM) named in the nodes' --admin-names, for the leader lookup before every round (an admin call); default --tls-cluster-cert-file")
	fs.StringVar(&f.adminKeyFile, "tls-cluster-admin-key-file", "", "key (PEM) of --tls-cluster-admin-cert-file")
	fs.StringVar(&f.serverName, "tls-cluster-server-name", "", "name to verify in the servers' certificates; default the host of each address dialled")
}

// targets returns the servers and client options the flags describe; zero
// when neither --tls-cluster nor --tls-noop is given.
func (f *tlsTargetFlags) targets() (bench.TLSTargets, error) {
	var t bench.TLSTargets
	t.Cluster, t.Noop = cli.SplitList(f.cluster), f.noop
	const cmd = "compare"
	if len(t.Cluster) == 0 && t.Noop == "" {
		if f.caFile != "" || f.certFile != "" || f.keyFile != "" || f.adminCertFile != "" || f.adminKeyFile != "" || f.serverName != "" {
			return t, cli.UsageErrorf("%s: the --tls-cluster-* flags secure the connections to --tls-cluster and --tls-noop; give those, or use --tls-ca-file and its kin for --cluster", cmd)
		}
		return t, nil
	}
	switch {
	case len(t.Cluster) == 1:
		return t, cli.UsageErrorf("%s: --tls-cluster needs two nodes or more, as --cluster does: every round picks a follower (tls-weak-follower-64)", cmd)
	case f.caFile == "":
		return t, cli.UsageErrorf("%s: --tls-cluster and --tls-noop need --tls-cluster-ca-file, the CA that signed their server certificates", cmd)
	case f.certFile == "" || f.keyFile == "":
		return t, cli.UsageErrorf("%s: --tls-cluster and --tls-noop need --tls-cluster-cert-file and --tls-cluster-key-file: they require client certificates", cmd)
	case (f.adminCertFile == "") != (f.adminKeyFile == ""):
		return t, cli.UsageErrorf("%s: --tls-cluster-admin-cert-file and --tls-cluster-admin-key-file go together", cmd)
	}
	roots, err := loadCAFile(f.caFile)
	if err != nil {
		return t, cli.UsageErrorf("%s: --tls-cluster-ca-file: %v", cmd, err)
	}
	cfg, err := clientTLSConfig(roots, f.certFile, f.keyFile, f.serverName)
	if err != nil {
		return t, cli.UsageErrorf("%s: --tls-cluster-cert-file and --tls-cluster-key-file: %v", cmd, err)
	}
	t.ClientOptions = []client.Option{client.WithTLS(cfg)}
	t.Flags = "--tls-ca-file " + f.caFile + " --tls-cert-file " + f.certFile + " --tls-key-file " + f.keyFile
	if f.serverName != "" {
		t.Flags += " --tls-server-name " + f.serverName
	}
	if f.adminCertFile != "" {
		admin, err := clientTLSConfig(roots, f.adminCertFile, f.adminKeyFile, f.serverName)
		if err != nil {
			return t, cli.UsageErrorf("%s: --tls-cluster-admin-cert-file and --tls-cluster-admin-key-file: %v", cmd, err)
		}
		t.AdminOptions = []client.Option{client.WithTLS(admin)}
	}
	return t, nil
}

// loadCAFile reads a pool of CA certificates from a PEM file.
func loadCAFile(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// clientTLSConfig is the TLS configuration of a client that trusts roots
// and presents the certificate in certFile: the configuration
// `ordinal-bench run --tls-ca-file --tls-cert-file --tls-key-file` makes
// (cli.ConnFlags), so that the standalone commands of the report measure
// the same thing.
func clientTLSConfig(roots *x509.CertPool, certFile, keyFile, serverName string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: serverName}, nil
}
