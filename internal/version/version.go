// Package version holds the build's version, set by the linker.
package version

// Version is the release this binary was built from; `make build` sets it
// from git describe.
var Version = "dev"
