package cluster

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDataDirIncarnation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := claimDataDir(dir, "n1")
	if err != nil || first == "" {
		t.Fatalf("claim a fresh directory: %q, %v", first, err)
	}
	if again, err := claimDataDir(dir, "n1"); err != nil || again != first {
		t.Fatalf("claim it again: %q, %v; want the same incarnation %q", again, err, first)
	}
	if _, err := claimDataDir(dir, "n2"); err == nil {
		t.Fatal("another node claimed the directory")
	}

	// A directory claimed before incarnations existed keeps its node ID
	// and gets one, once.
	old := t.TempDir()
	if err := os.WriteFile(filepath.Join(old, identityFile), []byte(`{"node_id":"n1"}`), 0o640); err != nil {
		t.Fatal(err)
	}
	upgraded, err := claimDataDir(old, "n1")
	if err != nil || upgraded == "" || upgraded == first {
		t.Fatalf("claim a directory without an incarnation: %q, %v; want a new one", upgraded, err)
	}
	if again, err := claimDataDir(old, "n1"); err != nil || again != upgraded {
		t.Fatalf("claim it again: %q, %v; want %q", again, err, upgraded)
	}
	if id, err := ReadNodeID(old); err != nil || id != "n1" {
		t.Fatalf("node ID after the upgrade: %q, %v", id, err)
	}

	// A wiped directory is a new incarnation of the same node.
	wiped := t.TempDir()
	if inc, err := claimDataDir(wiped, "n1"); err != nil || inc == first {
		t.Fatalf("a new directory for n1: %q, %v; want another incarnation than %q", inc, err, first)
	}
}
