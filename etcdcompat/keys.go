package etcdcompat

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/ordinal-dev/ordinal/keyspace"
)

// Key spaces of the native layout, under the configured prefix:
//
//	<prefix>counters/<store>/<key>   the key's high-water mark, in decimal
//	<prefix>floors/<store>/<key>     the highest floor set for the key, in decimal
//	<prefix>election/<lease>         one per ordinal node; the oldest leads
//
// <store> is path-escaped (a "/" in a store name becomes %2F), so the first
// "/" after it separates it from the key, which is stored as is.
const (
	countersDir = "counters/"
	floorsDir   = "floors/"
	electionDir = "election"
)

// keyIn returns the etcd key of k under dir.
func keyIn(dir string, k keyspace.Key) string {
	return dir + url.PathEscape(k.Store) + "/" + k.Name
}

// parseKeyIn is the inverse of keyIn.
func parseKeyIn(dir, etcdKey string) (keyspace.Key, error) {
	rest, ok := strings.CutPrefix(etcdKey, dir)
	if !ok {
		return keyspace.Key{}, fmt.Errorf("etcd key %q is not under %q", etcdKey, dir)
	}
	store, name, ok := strings.Cut(rest, "/")
	if !ok || name == "" {
		return keyspace.Key{}, fmt.Errorf("etcd key %q has no <store>/<key> part", etcdKey)
	}
	store, err := url.PathUnescape(store)
	if err != nil {
		return keyspace.Key{}, fmt.Errorf("etcd key %q: bad store: %w", etcdKey, err)
	}
	return keyspace.Key{Store: store, Name: name}, nil
}

// counter is a counter key as last read: its value and its mod revision,
// which the next compare-and-swap compares. A key that does not exist has
// value 0 and mod revision 0.
type counter struct {
	value  uint64
	modRev int64
}

// counterOf decodes kvs, the result of a Get of one key.
func counterOf(kvs []*mvccpb.KeyValue) (counter, error) {
	if len(kvs) == 0 {
		return counter{}, nil
	}
	kv := kvs[0]
	v, err := strconv.ParseUint(string(kv.Value), 10, 64)
	if err != nil || v > keyspace.MaxID {
		return counter{}, fmt.Errorf("etcd key %s holds %q, not an ordinal counter (a decimal number up to %d): was it written by something else?", kv.Key, kv.Value, keyspace.MaxID)
	}
	return counter{value: v, modRev: kv.ModRevision}, nil
}

func encode(v uint64) string { return strconv.FormatUint(v, 10) }
