package keyspace_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The package boundaries ARCHITECTURE.md draws, checked: the allocator
// links no Raft, the etcd store neither Raft nor the daemon that wires it
// (the daemon wires stores; stores know nothing of it), and the serving
// binary no load generator (that is cmd/ordinal-bench).
func TestPackageBoundaries(t *testing.T) {
	for _, tt := range []struct {
		pkg       string
		forbidden []string
	}{
		{"github.com/ordinal-dev/ordinal/alloc", []string{"github.com/hashicorp/raft", "github.com/ordinal-dev/ordinal/fsm"}},
		{"github.com/ordinal-dev/ordinal/etcdcompat", []string{"github.com/hashicorp/raft", "github.com/ordinal-dev/ordinal/daemon", "github.com/ordinal-dev/ordinal/cluster"}},
		{"github.com/ordinal-dev/ordinal/keyspace", []string{"github.com/ordinal-dev/ordinal/"}},
		{"github.com/ordinal-dev/ordinal/cmd/ordinal", []string{"github.com/ordinal-dev/ordinal/bench"}},
	} {
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps", tt.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", tt.pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range tt.forbidden {
				if dep != tt.pkg && (dep == f || strings.HasPrefix(dep, f+"/") || strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) {
					t.Errorf("%s depends on %s", tt.pkg, dep)
				}
			}
		}
	}
}
