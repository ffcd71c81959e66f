package bench

import (
	"strings"
	"testing"
)

func TestParseEtcdRequests(t *testing.T) {
	t.Parallel()
	const exposition = `# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1200
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7e+01
grpc_server_handled_total{grpc_code="OK",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 2
grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 9999
grpc_server_handled_total{grpc_code="OK",grpc_service="etcdserverpb.KV"} 5
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 
`
	got, err := parseEtcdRequests(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	want := etcdRequests{"Range": 1203, "Txn": 70, "Watch": 2}
	if len(got) != len(want) {
		t.Fatalf("parsed %v, want %v", got, want)
	}
	for m, v := range want {
		if got[m] != v {
			t.Errorf("%s: %v, want %v", m, got[m], v)
		}
	}
	delta := got.since(etcdRequests{"Range": 1000, "Txn": 70})
	if delta["Range"] != 203 || delta["Txn"] != 0 || delta["Watch"] != 2 {
		t.Errorf("since: %v", delta)
	}
}
