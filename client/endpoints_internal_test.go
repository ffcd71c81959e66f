package client

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseTargets(t *testing.T) {
	tests := []struct {
		in   string
		want []target
	}{
		{"127.0.0.1:34904", []target{{raw: "127.0.0.1:34904", host: "127.0.0.1", port: "34904"}}},
		{" a.example:1 , b.example:2,[::1]:3,:4", []target{
			{raw: "a.example:1", host: "a.example", port: "1", name: true},
			{raw: "b.example:2", host: "b.example", port: "2", name: true},
			{raw: "[::1]:3", host: "::1", port: "3"},
			{raw: ":4", port: "4"},
		}},
		{"a:1,a:1", []target{{raw: "a:1", host: "a", port: "1", name: true}}},
		{"dns:///ordinal.example:34904", []target{{raw: "dns:///ordinal.example:34904"}}},
		{"unix:///run/ordinal.sock", []target{{raw: "unix:///run/ordinal.sock"}}},
	}
	for _, tt := range tests {
		got, err := parseTargets(tt.in)
		if err != nil {
			t.Errorf("parseTargets(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseTargets(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"", ",", "a:1,", "host", "a:1:2", "a:", "dns:///a:1,b:2", "b:2,unix:///x"} {
		if _, err := parseTargets(bad); !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("parseTargets(%q): %v, want ErrInvalidAddress", bad, err)
		}
	}
}

// fakeDNS answers lookups from a table that tests change, counting them.
type fakeDNS struct {
	mu      sync.Mutex
	hosts   map[string][]string
	fail    bool
	lookups int
}

func (f *fakeDNS) lookup(_ context.Context, host string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.fail {
		return nil, errors.New("server misbehaving")
	}
	ips, ok := f.hosts[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	return append([]string(nil), ips...), nil
}

func (f *fakeDNS) set(host string, ips ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts[host] = ips
}

func TestResolve(t *testing.T) {
	dns := &fakeDNS{hosts: map[string][]string{
		"ordinal.example": {"10.0.0.3", "10.0.0.1", "10.0.0.2"},
		"one.example":     {"10.0.0.1"},
	}}
	targets, err := parseTargets("ordinal.example:34904,10.0.0.9:34904,one.example:34904")
	if err != nil {
		t.Fatal(err)
	}
	got, err := resolve(context.Background(), targets, dns.lookup, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []endpoint{
		{name: "ordinal.example:34904", addr: "10.0.0.1:34904"},
		{name: "ordinal.example:34904", addr: "10.0.0.2:34904"},
		{name: "ordinal.example:34904", addr: "10.0.0.3:34904"},
		{name: "10.0.0.9:34904", addr: "10.0.0.9:34904"},
		// one.example's address is ordinal.example's first: one node.
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("resolve = %v, want %v", got, want)
	}
	if s := got[0].String(); s != "ordinal.example:34904 (10.0.0.1:34904)" {
		t.Errorf("endpoint shows as %q", s)
	}

	// A failed lookup keeps what the name resolved to before.
	dns.fail = true
	again, err := resolve(context.Background(), targets, dns.lookup, got)
	if err != nil || !reflect.DeepEqual(again, want) {
		t.Fatalf("resolve with DNS down = %v, %v; want the previous endpoints", again, err)
	}
	// Without anything before, a name that cannot be looked up is an
	// error only when nothing is left.
	only, _ := parseTargets("ordinal.example:34904")
	if eps, err := resolve(context.Background(), only, dns.lookup, nil); err == nil {
		t.Fatalf("resolve with DNS down and nothing before = %v, want an error", eps)
	}
}

// A Client given a DNS name looks it up on the first call, and follows it
// when the name moves to other addresses after every node failed.
func TestRouterFollowsTheName(t *testing.T) {
	dns := &fakeDNS{hosts: map[string][]string{"ordinal.example": {"127.0.0.1", "127.0.0.2"}}}
	o := defaultOptions()
	o.lookup = dns.lookup
	targets, err := parseTargets("ordinal.example:1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRouter(targets, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	if dns.lookups != 0 {
		t.Fatalf("newRouter looked the name up %d times; it must not before the first call", dns.lookups)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes, err := r.current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].ep.addr != "127.0.0.1:1" || nodes[1].ep.addr != "127.0.0.2:1" {
		t.Fatalf("nodes %v, want the name's two addresses", nodes)
	}
	kept := nodes[1]

	dns.set("ordinal.example", "127.0.0.2", "127.0.0.3")
	r.resolvedAt.Store(0) // as if minResolveInterval had passed
	r.refresh()
	deadline := time.Now().Add(5 * time.Second)
	for {
		nodes, err = r.current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) == 2 && nodes[1].ep.addr == "127.0.0.3:1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes %v after the name moved, want 127.0.0.2:1 and 127.0.0.3:1", nodes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if nodes[0] != kept {
		t.Error("the node of an address the name still has was replaced, not kept")
	}

	// A name that resolves to nothing fails calls with Unavailable.
	dns.fail = true
	r2, err := newRouter(targets, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.close()
	if _, err := r2.current(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("current with the name unresolvable: %v, want Unavailable", err)
	}
}
