package etcdtest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestEmbeddedSource checks that tests find the embedded etcd's module from
// their package's directory, and that its hash follows its files. It does
// not build it: that takes a minute, and CI runs Debian's etcd.
func TestEmbeddedSource(t *testing.T) {
	src, err := embeddedSource()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		if _, err := os.Stat(filepath.Join(src, f)); err != nil {
			t.Errorf("embedded etcd source: %v", err)
		}
	}

	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module m\n")
	write("main.go", "package main\n")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	h1, err := hashDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := hashDir(dir); h != h1 {
		t.Errorf("hash changed between two reads: %s, %s", h1, h)
	}
	write("main.go", "package main // changed\n")
	if h, _ := hashDir(dir); h == h1 {
		t.Errorf("hash %s did not change with main.go", h)
	}
}
