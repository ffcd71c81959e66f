package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// etcdRequests counts the unary requests an etcd server has handled, by
// method, as its Prometheus endpoint reports them.
type etcdRequests map[string]float64

// handledMetric is the counter of finished RPCs that etcd's gRPC
// middleware (go-grpc-prometheus) exports on /metrics, labelled by
// grpc_method among others.
const handledMetric = "grpc_server_handled_total{"

// scrapeEtcdRequests reads etcd's /metrics on its client address (etcd
// serves it there by default) and sums grpc_server_handled_total by
// grpc_method. The ordinal-on-etcd rows use it to count the linearizable
// reads (Range) and transactions (Txn) their calls cost etcd.
func scrapeEtcdRequests(ctx context.Context, etcdAddr string) (etcdRequests, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+etcdAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read etcd's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read etcd's metrics: %s", resp.Status)
	}
	return parseEtcdRequests(resp.Body)
}

// parseEtcdRequests parses Prometheus text exposition, keeping the
// grpc_server_handled_total samples.
func parseEtcdRequests(r io.Reader) (etcdRequests, error) {
	out := etcdRequests{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, handledMetric) {
			continue
		}
		labels, value, ok := strings.Cut(line[len(handledMetric):], "} ")
		if !ok {
			continue
		}
		method, fields := labelValue(labels, "grpc_method"), strings.Fields(value)
		if method == "" || len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		out[method] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read etcd's metrics: %w", err)
	}
	return out, nil
}

// labelValue returns the value of label name in a Prometheus label set
// (`a="x",b="y"`), empty when absent. etcd's label values hold no quotes
// or commas.
func labelValue(labels, name string) string {
	for _, kv := range strings.Split(labels, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// since is the number of requests of each method handled between before
// and r.
func (r etcdRequests) since(before etcdRequests) etcdRequests {
	out := etcdRequests{}
	for m, v := range r {
		out[m] = v - before[m]
	}
	return out
}
