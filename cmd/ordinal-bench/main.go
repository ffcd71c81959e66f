// Command ordinal-bench load-tests ordinal nodes and measures them: the
// load generator and verifier (run), the no-op ceiling server
// (serve-noop), failover after killing the leader (failover), and every
// scenario of BENCHMARKS.md in interleaved rounds (compare). It is a
// binary of its own, built by make build-bench, so that the one that
// serves (cmd/ordinal) carries neither the load generator nor a command
// that kills the process whose ID it is given.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/ordinal-dev/ordinal/internal/cli"
)

func main() {
	cli.Main("ordinal-bench", run)
}

func run(args []string) error {
	if len(args) == 0 {
		usage()
		return cli.UsageErrorf("no command given")
	}
	switch args[0] {
	case "run":
		return runBench(args[1:])
	case "serve-noop":
		return runBenchServeNoop(args[1:])
	case "failover":
		return runBenchFailover(args[1:])
	case "compare":
		return runBenchCompare(args[1:])
	case "help":
		if len(args) > 1 {
			return run([]string{args[1], "--help"})
		}
		usage()
		return nil
	case "-h", "--help":
		usage()
		return nil
	}
	if strings.HasPrefix(args[0], "-") {
		// ordinal-bench --mode weak ...: run's flags without the
		// command, as `ordinal bench` took them.
		return runBench(args)
	}
	return cli.UsageErrorf("unknown command %q; run 'ordinal-bench --help' for the list of commands", args[0])
}

func usage() {
	fmt.Fprint(os.Stderr, `ordinal-bench load-tests ordinal nodes and verifies every ID they hand out.

Usage:
  ordinal-bench run [flags]         run a bounded load against nodes (or etcd, or the no-op server) and
                                    verify every ID; ordinal-bench [flags] is short for it
  ordinal-bench serve-noop [flags]  serve the no-op ceiling: an atomic counter behind ordinal's gRPC stack
  ordinal-bench failover --kill-pid PID --targets SURVIVOR,...
                                    kill the leader's process (SIGKILL) and measure until STRONG calls
                                    succeed again
  ordinal-bench compare [flags]     run every scenario of BENCHMARKS.md in interleaved rounds and write
                                    its tables (what make bench runs)
  ordinal-bench <command> --help    help for a command

Every flag can also be set through its environment variable, ORDINAL_<FLAG>,
as ordinal's are: the connection flags (--tls-ca-file, --token-file, ...)
read the same variables as ordinal's client commands.
`)
}
