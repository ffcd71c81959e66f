package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ordinal-dev/ordinal/etcdcompat"
)

// Roles of the ordinal-on-etcd rows (`ordinal serve --backend etcd`, native
// layout).
const (
	// RoleEtcdStoreElected is the ordinal-on-etcd node that won the
	// election in etcd: the one that serves STRONG calls (the others
	// forward them to it).
	RoleEtcdStoreElected Role = "etcd-store-elected"
	// RoleEtcdStoreOther is an ordinal-on-etcd node that was not elected.
	RoleEtcdStoreOther Role = "etcd-store-other"
)

// isEtcdStore reports whether r is a role of the ordinal-on-etcd nodes.
func (r Role) isEtcdStore() bool { return r == RoleEtcdStoreElected || r == RoleEtcdStoreOther }

// electionDir is where, under the store's prefix, every ordinal-on-etcd
// node keeps its election key, valued with its advertised gRPC address;
// the key with the lowest create revision leads (etcdcompat/DESIGN.md,
// "Keys in etcd").
const electionDir = "election/"

// electionPrefix is the etcd prefix of the election keys of the
// ordinal-on-etcd nodes that use the key prefix prefix (their
// --etcd-prefix; empty means etcdcompat's default), normalised as
// etcdcompat normalises it: a leading and a trailing slash.
func electionPrefix(prefix string) string {
	if prefix == "" {
		prefix = etcdcompat.DefaultNativePrefix
	}
	if !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return prefix + electionDir
}

// findElected returns the ordinal-on-etcd node that serves STRONG calls
// and one that does not (the elected one again when nodes has only one).
// ordinal's ClusterService, with its Leader RPC, runs only over Raft, so
// the elected node is read where the nodes themselves read it: the oldest
// key under the election prefix in etcd, one linearizable Get, nothing
// written.
func findElected(ctx context.Context, etcdAddr, prefix string, nodes []string) (elected, other string, err error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "", "", fmt.Errorf("etcd client for %s: %w", etcdAddr, err)
	}
	defer cli.Close()
	pfx := electionPrefix(prefix)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := cli.Get(cctx, pfx, clientv3.WithFirstCreate()...)
	cancel()
	if err != nil {
		return "", "", fmt.Errorf("read the election under %s in etcd %s: %w", pfx, etcdAddr, err)
	}
	if len(resp.Kvs) == 0 {
		return "", "", fmt.Errorf("no ordinal-on-etcd node is in the election under %s in etcd %s", pfx, etcdAddr)
	}
	v, err := etcdcompat.ParseElectionValue(resp.Kvs[0].Value)
	if err != nil {
		return "", "", err
	}
	elected = v.GRPCAddr
	if !slices.Contains(nodes, elected) {
		return "", "", fmt.Errorf("the node elected under %s is %s, not one of the given ordinal-on-etcd nodes %s",
			pfx, elected, strings.Join(nodes, ","))
	}
	for _, n := range nodes {
		if n != elected {
			return elected, n, nil
		}
	}
	return elected, elected, nil
}
