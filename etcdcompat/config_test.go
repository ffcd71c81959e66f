package etcdcompat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ordinal-dev/ordinal/fsm"
)

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	ep := []string{"127.0.0.1:2379"}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no endpoints", Config{}, "no etcd endpoints"},
		{"blank endpoints", Config{Endpoints: []string{" ", ""}}, "no etcd endpoints"},
		{"unknown layout", Config{Endpoints: ep, Layout: "zk"}, `unknown etcd layout "zk"`},
		{"app id in the native layout", Config{Endpoints: ep, AppID: "a"}, "only applies to the Layotto layout"},
		{"app id with the separator", Config{Endpoints: ep, Layout: LayoutLayotto, AppID: "a|||b"}, "must not contain"},
		{"app id with the app separator", Config{Endpoints: ep, Layout: LayoutLayotto, AppID: "a||b"}, "must not contain"},
		{"password without username", Config{Endpoints: ep, Password: "p"}, "needs a username"},
		{"cert without key", Config{Endpoints: ep, CertFile: "c.pem"}, "both --etcd-cert-file and --etcd-key-file"},
		{"missing CA file", Config{Endpoints: ep, CAFile: filepath.Join(dir, "nope.pem")}, "read etcd CA file"},
		{"CA file without a certificate", Config{Endpoints: ep, CAFile: notPEM}, "holds no PEM certificate"},
		{"missing client certificate", Config{Endpoints: ep, CertFile: notPEM, KeyFile: notPEM}, "load etcd client certificate"},
		{"native layout without an address", Config{Endpoints: ep}, "advertised peer address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Open: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		cfg        Config
		wantPrefix string
	}{
		{Config{}, "/ordinal/"},
		{Config{Layout: LayoutLayotto}, "/layotto/"},
		{Config{Prefix: "ids"}, "/ids/"},
		{Config{Prefix: "/a/b"}, "/a/b/"},
		{Config{Prefix: "a/b/", Layout: LayoutLayotto}, "/a/b/"},
		{Config{Prefix: "/"}, "/"},
	}
	for _, tc := range tests {
		tc.cfg.Endpoints = []string{"e:2379"}
		got, err := tc.cfg.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if got.Prefix != tc.wantPrefix {
			t.Errorf("prefix %q (layout %q) becomes %q, want %q", tc.cfg.Prefix, tc.cfg.Layout, got.Prefix, tc.wantPrefix)
		}
		if got.Layout == "" || got.DialTimeout != DefaultDialTimeout || got.SessionTTL != DefaultSessionTTL {
			t.Errorf("defaults not filled in: %+v", got)
		}
	}
}

func TestLayottoKeys(t *testing.T) {
	for _, tc := range []struct {
		prefix, appID, want string
	}{
		{"", "", "/layotto/sequencer|||key666"},
		{"", "app1", "/layotto/sequencer|||app1||key666"},
		{"seq", "", "/seq/sequencer|||key666"},
	} {
		st, err := Open(Config{Endpoints: []string{"e:2379"}, Layout: LayoutLayotto, Prefix: tc.prefix, AppID: tc.appID})
		if err != nil {
			t.Fatal(err)
		}
		if got := st.(*LayottoStore).EtcdKey("key666"); got != tc.want {
			t.Errorf("prefix %q app %q: key %q, want %q", tc.prefix, tc.appID, got, tc.want)
		}
		st.Close()
	}
}

func TestNativeKeysRoundTrip(t *testing.T) {
	for _, k := range []fsm.Key{
		{Store: "default", Name: "order_table"},
		{Store: "a/b", Name: "c/d"},
		{Store: "100%", Name: "%2F"},
		{Store: "", Name: "x"},
		{Store: "s p a c e", Name: "\x00\xff"},
	} {
		ek := keyIn("/ordinal/counters/", k)
		back, err := parseKeyIn("/ordinal/counters/", ek)
		if err != nil || back != k {
			t.Errorf("%+v -> %q -> %+v, %v", k, ek, back, err)
		}
	}
	if got := keyIn("/p/counters/", fsm.Key{Store: "default", Name: "k"}); got != "/p/counters/default/k" {
		t.Errorf("plain key: %q", got)
	}
	for _, bad := range []string{"/other/default/k", "/p/counters/default", "/p/counters/%zz/k"} {
		if _, err := parseKeyIn("/p/counters/", bad); err == nil {
			t.Errorf("parseKeyIn(%q) accepted it", bad)
		}
	}
}
