package etcdtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

const (
	// EmbeddedBinary as the value of ORDINAL_ETCD_BIN selects the embedded
	// etcd even when an etcd binary is installed.
	EmbeddedBinary = "embedded"
	// EmbeddedSource is the directory of the embedded etcd's module,
	// relative to the repository's root.
	EmbeddedSource = "tools/etcd"
	// EmbeddedCacheEnv names the directory the embedded etcd is built into
	// instead of the default, ordinal/etcdtest under the user's cache
	// directory (os.UserCacheDir: $XDG_CACHE_HOME or ~/.cache on Linux).
	EmbeddedCacheEnv = "ORDINAL_ETCD_CACHE"
)

var (
	embeddedOnce sync.Once
	embeddedBin  string
	embeddedErr  error
)

// Embedded returns the embedded etcd (the module in tools/etcd), building
// it first when needed. The binary's name carries a hash of the module's
// files (etcd-<hash>), so it is built once per version of tools/etcd and
// machine: a build takes about a minute, the module downloads included,
// later test runs find it in place. Test processes running at once (go
// test runs packages in parallel) build it once between them, under a
// lock; a finished binary is never overwritten, so one process never
// replaces the etcd another is running.
func Embedded() (string, error) {
	embeddedOnce.Do(func() { embeddedBin, embeddedErr = buildEmbedded() })
	return embeddedBin, embeddedErr
}

func buildEmbedded() (string, error) {
	src, err := embeddedSource()
	if err != nil {
		return "", err
	}
	sum, err := hashDir(src)
	if err != nil {
		return "", fmt.Errorf("embedded etcd: %w", err)
	}
	dir := os.Getenv(EmbeddedCacheEnv)
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "ordinal", "etcdtest")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("embedded etcd: %w", err)
	}
	bin := filepath.Join(dir, "etcd-"+sum)
	if isExecutable(bin) {
		return bin, nil
	}
	unlock, err := lockFile(filepath.Join(dir, "build.lock"))
	if err != nil {
		return "", fmt.Errorf("embedded etcd: %w", err)
	}
	defer unlock()
	if isExecutable(bin) { // another process built it while we waited
		return bin, nil
	}
	// go test puts its own go command first on the tests' PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("building the embedded etcd needs the go command: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	defer os.Remove(tmp)
	fmt.Fprintf(os.Stderr, "etcdtest: no etcd binary installed: building the embedded etcd of %s into %s (once; about a minute)\n", src, bin)
	start := time.Now()
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", tmp, ".")
	cmd.Dir = src
	// Static, so no C compiler is needed; the caller's GOFLAGS are for the
	// ordinal module, and VCS stamping would need git.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly -buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the embedded etcd (go build in %s) failed: %w\n%s", src, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil && !isExecutable(bin) {
		return "", fmt.Errorf("embedded etcd: %w", err)
	}
	fmt.Fprintf(os.Stderr, "etcdtest: built %s in %v\n", bin, time.Since(start).Round(time.Second))
	return bin, nil
}

// embeddedSource finds tools/etcd in the working directory or above it: go
// test runs a package's tests in the package's directory.
func embeddedSource() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		src := filepath.Join(dir, filepath.FromSlash(EmbeddedSource))
		if _, err := os.Stat(filepath.Join(src, "go.mod")); err == nil {
			return src, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s/go.mod in %s or a directory above it, to build the embedded etcd from", EmbeddedSource, wd)
		}
		dir = parent
	}
}

// hashDir returns a short hash of the regular files directly in dir
// (go.mod, go.sum and the sources), names and contents.
func hashDir(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	h := sha256.New()
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}
