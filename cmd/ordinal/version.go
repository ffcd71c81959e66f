package main

import (
	"fmt"
	"runtime"

	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/internal/version"
)

func runVersion(args []string) error {
	fs := cli.NewFlagSet("version", "ordinal version")
	positional, err := cli.ParseCommandFlags("version", fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return cli.UsageErrorf("version: unexpected argument %q", positional[0])
	}
	fmt.Println(versionLine())
	return nil
}

// versionLine names the release and the toolchain and platform it was built
// with, which is what a bug report needs.
func versionLine() string {
	return fmt.Sprintf("ordinal %s (%s %s/%s)", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
