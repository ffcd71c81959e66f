package version

import (
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	const rev = "1acafba3c0e5e2b9a8c9e1f0d2b3a4c5d6e7f809"
	info := func(version string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/ordinal-dev/ordinal", Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	cases := []struct {
		name   string
		linked string
		bi     *debug.BuildInfo
		want   string
	}{
		{"linker wins over a module version", "v1.2.3-4-gabcdef", info("v9.9.9"), "v1.2.3-4-gabcdef"},
		{"linker wins over a revision", "abcdef1-dirty", info("(devel)", "vcs.revision", rev), "abcdef1-dirty"},
		{"go install module@version", Unset, info("v1.2.3"), "v1.2.3"},
		{"empty linker value counts as unset", "", info("v1.2.3"), "v1.2.3"},
		{"go build in a checkout: pseudo-version", Unset,
			info("v0.0.0-20261130101010-1acafba3c0e5+dirty", "vcs.revision", rev, "vcs.modified", "true"),
			"v0.0.0-20261130101010-1acafba3c0e5+dirty"},
		{"devel with a clean revision", Unset, info("(devel)", "vcs", "git", "vcs.revision", rev, "vcs.modified", "false"), rev},
		{"devel with a modified tree", Unset, info("(devel)", "vcs.revision", rev, "vcs.modified", "true"), rev + "-dirty"},
		{"no main version, revision only", Unset, info("", "vcs.revision", rev), rev},
		{"devel without VCS information", Unset, info("(devel)", "-buildvcs", "false"), Unset},
		{"modified but no revision", Unset, info("(devel)", "vcs.modified", "true"), Unset},
		{"no build information", Unset, nil, Unset},
		{"no build information, empty linker value", "", nil, Unset},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.linked, tc.bi); got != tc.want {
				t.Errorf("resolve(%q, ...) = %q, want %q", tc.linked, got, tc.want)
			}
		})
	}
}
