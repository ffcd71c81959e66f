// Package etcdcompat keeps a node's counters in etcd instead of ordinal's
// own Raft cluster, for teams that already run etcd. Its stores plug into
// a node as the Raft store does (the daemon wires them; this package knows
// nothing of it), so the allocator and the gRPC layer work unchanged:
//
//   - The native layout (LayoutNative) keeps one high-water mark per key
//     and reserves ranges of IDs with compare-and-swap transactions, so no
//     ID costs an etcd write. STRONG calls are served by one ordinal node
//     at a time, elected through etcd and fenced by a linearizable read of
//     its election key per batch of calls. See DESIGN.md.
//   - The Layotto layout (LayoutLayotto) reads and writes the keys of
//     Layotto's etcd sequencer component exactly as that component does:
//     an ID is the etcd version of the key after one Put. Ordinal nodes and
//     Layotto sidecars can then serve the same keys at once. It costs one
//     etcd write per ID.
//
// Both layouts also serve Snowflake stores (package snowflake) through a
// SnowflakeBackend: worker IDs leased from etcd by the node's session, and
// time reserved per worker on a counter in etcd (DESIGN.md, "Snowflake
// stores").
//
// ordinal nodes hold no state of their own in either layout: any number of
// them can serve the same keys.
package etcdcompat

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/metrics"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Layout says which keys and values a store reads and writes in etcd.
type Layout string

const (
	// LayoutNative is ordinal's own layout: one high-water mark per key,
	// IDs reserved in ranges. The default.
	LayoutNative Layout = "native"
	// LayoutLayotto is the layout of Layotto's etcd sequencer component:
	// one Put per ID, the ID being the key's etcd version.
	LayoutLayotto Layout = "layotto"
)

// Defaults of Config.
const (
	DefaultNativePrefix   = "/ordinal/"
	DefaultLayottoPrefix  = "/layotto/"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultSessionTTL     = 10 * time.Second
)

// layottoSeparator separates Layotto's "sequencer" from the rest of the
// key; layottoAppSep separates the app ID from the key.
const (
	layottoSeparator = "|||"
	layottoAppSep    = "||"
)

// layottoForbidden may not appear in a key or an app ID in the Layotto
// layout. Layotto's runtime rejects it in keys and fixed key prefixes
// (pkg/runtime/sequencer, checkKeyIllegal; runtimes before the key
// strategies rejected only "|||", which contains it): without the check,
// key "a||k" with no app ID and key "k" with app ID "a" would share one
// etcd key.
const layottoForbidden = layottoAppSep

// Config configures a store.
type Config struct {
	// Endpoints are etcd client URLs or host:port pairs. Required.
	Endpoints []string

	// DialTimeout bounds connecting to etcd and each probe while waiting
	// for it. Default DefaultDialTimeout.
	DialTimeout time.Duration

	// RequestTimeout bounds the etcd requests made on behalf of one call
	// (an ID in the Layotto layout, SetFloor, GetHighWater), also when
	// the caller set no deadline: when etcd loses quorum or the link goes
	// silent, the call answers Unavailable after this long instead of
	// waiting for the client to notice. Shorter fails faster during an
	// etcd leader election (which takes about a second); longer rides
	// elections out. Range reservations are bounded by the allocator's
	// ReserveTimeout, and leadership proofs by its FenceTimeout. Zero
	// or less means DefaultRequestTimeout.
	RequestTimeout time.Duration

	// Username and Password authenticate to etcd when Username is set.
	Username, Password string

	// CAFile, CertFile and KeyFile configure TLS to etcd: CAFile alone
	// verifies the servers, CertFile and KeyFile add a client certificate.
	// TLS, when set, is used instead.
	CAFile, CertFile, KeyFile string
	TLS                       *tls.Config

	// Layout is LayoutNative (the default) or LayoutLayotto.
	Layout Layout

	// Prefix is prepended to every key this store uses. Like Layotto's
	// keyPrefixPath it is given a leading and a trailing slash. Default
	// DefaultNativePrefix, or DefaultLayottoPrefix in the Layotto layout.
	Prefix string

	// AppID, in the Layotto layout, is the app ID Layotto's default
	// keyPrefix strategy puts into every key: sequencer|||<AppID>||<key>.
	// Empty means sequencer|||<key>, as Layotto does with no app ID. To
	// share keys with sidecars configured with a fixed keyPrefix instead,
	// give that prefix in lower case: Layotto lowercases it. It must not
	// contain "||".
	AppID string

	// SessionTTL is the TTL of the etcd lease behind this node's election
	// key (native layout). A node that stops renewing it, because it
	// crashed or lost etcd, loses STRONG leadership this long after; a
	// node that shuts down cleanly hands it over at once. etcd rounds it
	// up to whole seconds and to at least its own minimum (about 2s).
	// Default DefaultSessionTTL.
	SessionTTL time.Duration

	// NodeID and PeerAdvertise are this node's ID and the address of its
	// peer port as other ordinal nodes reach it; the native layout
	// publishes both in the election value so that nodes forward STRONG
	// calls to the leader, over the peer port and only to the node the
	// election names. GRPCAdvertise, its client address, is published for
	// tools. Whoever opens the store fills them in (the daemon, through its
	// NewStore).
	NodeID, PeerAdvertise, GRPCAdvertise string

	// Logger receives the store's logs, and the etcd client's (named
	// "client", at the levels Logger prints). Nil means none.
	Logger hclog.Logger

	// Metrics records the store's requests to etcd and this node's
	// elections. Nil records nothing.
	Metrics *metrics.Etcd
}

// withDefaults validates cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	var eps []string
	for _, ep := range cfg.Endpoints {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		return cfg, errors.New("etcdcompat: no etcd endpoints given (--etcd-endpoints host:2379[,...])")
	}
	cfg.Endpoints = eps
	switch cfg.Layout {
	case "":
		cfg.Layout = LayoutNative
	case LayoutNative, LayoutLayotto:
	default:
		return cfg, fmt.Errorf("etcdcompat: unknown etcd layout %q: use %q or %q", cfg.Layout, LayoutNative, LayoutLayotto)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultNativePrefix
		if cfg.Layout == LayoutLayotto {
			cfg.Prefix = DefaultLayottoPrefix
		}
	}
	cfg.Prefix = addPathSeparator(cfg.Prefix)
	if cfg.AppID != "" && cfg.Layout != LayoutLayotto {
		return cfg, errors.New("etcdcompat: an app ID only applies to the Layotto layout (--etcd-layout layotto)")
	}
	if strings.Contains(cfg.AppID, layottoForbidden) {
		return cfg, fmt.Errorf("etcdcompat: app ID %q must not contain %q", cfg.AppID, layottoForbidden)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Password != "" && cfg.Username == "" {
		return cfg, errors.New("etcdcompat: an etcd password needs a username")
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return cfg, errors.New("etcdcompat: give both --etcd-cert-file and --etcd-key-file, or neither")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return cfg, nil
}

// Validate reports what is wrong with cfg, TLS files included, without
// connecting to etcd. NodeID and PeerAdvertise are not checked: whoever opens the store fills them
// in.
func (cfg Config) Validate() error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	_, err = cfg.clientConfig()
	return err
}

// addPathSeparator gives p a leading and a trailing slash, as Layotto does
// with its keyPrefixPath.
func addPathSeparator(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

// tlsConfig builds the TLS configuration from the files, or returns nil
// when none is configured.
func (cfg Config) tlsConfig() (*tls.Config, error) {
	if cfg.TLS != nil {
		return cfg.TLS, nil
	}
	if cfg.CAFile == "" && cfg.CertFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcdcompat: read etcd CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcdcompat: etcd CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcdcompat: load etcd client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// clientConfig returns the etcd client configuration.
func (cfg Config) clientConfig() (clientv3.Config, error) {
	tc, err := cfg.tlsConfig()
	if err != nil {
		return clientv3.Config{}, err
	}
	return clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Username:    cfg.Username,
		Password:    cfg.Password,
		TLS:         tc,
		// Notice a dead connection (a host gone without a reset) within
		// seconds; etcd refuses pings more often than every 5s.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{
			// Reconnect within a couple of seconds once etcd is back;
			// gRPC's default backoff grows to two minutes.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: cfg.DialTimeout,
			}),
		},
		// The client's own logs go to the store's logger, at the levels
		// it prints (zaplog.go).
		Logger: zapLogger(cfg.Logger),
	}, nil
}

// WithNode returns cfg with this node's identity and logger filled in
// where cfg leaves them empty: what whoever opens the store (the daemon)
// knows and the flags do not.
func (cfg Config) WithNode(nodeID, peerAddr, grpcAddr string, logger hclog.Logger) Config {
	if cfg.NodeID == "" {
		cfg.NodeID = nodeID
	}
	if cfg.PeerAdvertise == "" {
		cfg.PeerAdvertise = peerAddr
	}
	if cfg.GRPCAdvertise == "" {
		cfg.GRPCAdvertise = grpcAddr
	}
	if cfg.Logger == nil && logger != nil {
		cfg.Logger = logger.Named("etcd")
	}
	return cfg
}

// Node is a store Open returns, not yet connected: a *Store (native
// layout, which reserves ranges for the allocator: alloc.Backend) or a
// *LayottoStore (which hands out IDs itself: alloc.Sequencer). Its Start
// waits for etcd.
type Node interface {
	// Start connects, waiting for etcd, and (native layout) campaigns.
	Start(ctx context.Context) error
	// WaitReady blocks until the store can serve calls.
	WaitReady(ctx context.Context) error
	// Leader returns the node ID and peer address of the node that serves
	// STRONG calls, or empty strings when none is known (always, in the
	// Layotto layout).
	Leader() (id, peerAddr string)
	// Healthy reports whether the node reaches etcd (and, native layout,
	// knows a leader).
	Healthy() bool
	// Close releases the store.
	Close() error
}

var (
	_ Node            = (*Store)(nil)
	_ alloc.Backend   = (*Store)(nil)
	_ Node            = (*LayottoStore)(nil)
	_ alloc.Sequencer = (*LayottoStore)(nil)
)

// Open returns the store cfg describes, not yet connected.
func Open(cfg Config) (Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := newConn(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Layout == LayoutLayotto {
		return newLayottoStore(c), nil
	}
	if cfg.NodeID == "" || cfg.PeerAdvertise == "" {
		return nil, errors.New("etcdcompat: the native layout needs this node's ID and advertised peer address, for forwarding STRONG calls to the leader")
	}
	return newStore(c), nil
}
