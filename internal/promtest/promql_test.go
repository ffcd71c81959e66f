package promtest

import (
	"reflect"
	"testing"
)

func TestSelectors(t *testing.T) {
	cases := []struct {
		expr string
		want []Selector
	}{
		{`up`, []Selector{{Name: "up"}}},
		{`up{job="ordinal"} == 0`, []Selector{{"up", `job="ordinal"`}}},
		{`sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{job="$job", port="client"}[$__rate_interval]))`,
			[]Selector{{"grpc_server_handling_seconds_bucket", `job="$job", port="client"`}}},
		{`histogram_quantile(0.99, sum(rate(a_bucket{x="}{"}[5m])) by (le))`, []Selector{{"a_bucket", `x="}{"`}}},
		{`(sum without (instance) (rate(x_total[1m])) or on() vector(0)) == 0 and on() count(y) > 1`,
			[]Selector{{Name: "x_total"}, {Name: "y"}}},
		{`a / on(instance) group_left(mode) b offset 5m`, []Selector{{Name: "a"}, {Name: "b"}}},
		{`a > bool 1e3 unless ignoring (x) c`, []Selector{{Name: "a"}, {Name: "c"}}},
		{`label_replace(m, "dst", "$1", "src", "(.*)")`, []Selector{{Name: "m"}}},
		{`{__name__="z"}`, []Selector{{Matchers: `__name__="z"`}}},
		{`max_over_time(ordinal:x:rate5m[1h:1m])`, []Selector{{Name: "ordinal:x:rate5m"}}},
		{"sum(rate(a[1m])) # a comment naming b\n/ sum(c)", []Selector{{Name: "a"}, {Name: "c"}}},
		{`SUM BY (job) (x)`, []Selector{{Name: "x"}}},
	}
	for _, tc := range cases {
		got, err := Selectors(tc.expr)
		if err != nil {
			t.Errorf("Selectors(%q): %v", tc.expr, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Selectors(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`a{x="y"`, `rate(a[5m)`, `a{x="y}`} {
		if _, err := Selectors(bad); err == nil {
			t.Errorf("Selectors(%q) succeeded, want an error", bad)
		}
	}
}

func TestMetricNames(t *testing.T) {
	got, err := MetricNames(`sum(rate(a[1m])) / sum(rate(a[5m])) + b`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("MetricNames = %q, want %q", got, want)
	}
}
