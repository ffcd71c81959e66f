// Package version holds the build's version, which `ordinal version`
// reports.
//
// The linker sets it: `make build` and `make release` pass
// -X .../internal/version.Version=$(git describe). A binary built without
// that flag (go install github.com/ordinal-dev/ordinal/cmd/ordinal@v1.2.3,
// or go build) takes it from the build information the go command records
// in every binary instead: the main module's version (v1.2.3 for go
// install of a release; for go build in a checkout, the pseudo-version Go
// derives from the commit, +dirty when the tree has changes), else the VCS
// revision the build was made from (with -dirty when the tree had changes),
// else it stays "dev".
package version

import "runtime/debug"

// Unset is the value of Version when the linker did not set it.
const Unset = "dev"

// Version is the release this binary was built from.
var Version = Unset

func init() {
	bi, _ := debug.ReadBuildInfo() // nil when there is none
	Version = resolve(Version, bi)
}

// resolve returns the version to report: linked, the linker's value,
// unless it is empty or Unset; else what bi, the binary's build
// information (nil when there is none), tells.
func resolve(linked string, bi *debug.BuildInfo) string {
	if linked != "" && linked != Unset {
		return linked
	}
	if bi == nil {
		return Unset
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var revision string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	switch {
	case revision == "":
		return Unset
	case modified:
		return revision + "-dirty"
	}
	return revision
}
