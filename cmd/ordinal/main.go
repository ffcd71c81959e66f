// Command ordinal runs and talks to an ordinal node: a Raft-replicated
// service handing out unique, increasing 64-bit IDs.
package main

import (
	"fmt"
	"os"

	"github.com/ordinal-dev/ordinal/internal/cli"
)

func main() {
	cli.Main("ordinal", run)
}

func run(args []string) error {
	if len(args) == 0 {
		usage()
		return cli.UsageErrorf("no command given")
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:])
	case "next":
		return runNext(args[1:])
	case "demo":
		return runDemo(args[1:])
	case "members":
		return runMembers(args[1:])
	case "remove":
		return runRemove(args[1:])
	case "leader":
		return runLeader(args[1:])
	case "health":
		return runHealth(args[1:])
	case "keys":
		return runKeys(args[1:])
	case "bench":
		// The load generator is a binary of its own, so that the one
		// that serves carries no SIGKILL of a PID it is given.
		return cli.UsageErrorf("bench: the load generator is a binary of its own: use ordinal-bench " +
			"(make build-bench builds bin/ordinal-bench; see ordinal-bench --help)")
	case "backup":
		return runBackup(args[1:])
	case "restore":
		return runRestore(args[1:])
	case "check":
		return runCheck(args[1:])
	case "import":
		return runImport(args[1:])
	case "token":
		return runToken(args[1:])
	case "tls":
		return runTLS(args[1:])
	case "decode":
		return runDecode(args[1:])
	case "version", "--version":
		return runVersion(args[1:])
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
	return cli.UsageErrorf("unknown command %q; run 'ordinal --help' for the list of commands", args[0])
}

func usage() {
	fmt.Fprint(os.Stderr, `ordinal hands out distributed unique, increasing 64-bit IDs.

Usage:
  ordinal serve [flags]      run a node
  ordinal next [flags] KEY   take the next ID (or --count IDs) of KEY from a node
  ordinal decode [flags] ID  print the time, worker and sequence of a Snowflake store's ID
  ordinal demo [flags]       run Layotto's sequencer quick-start demo against a node
  ordinal members [flags]    list the cluster's members and how far each is behind
  ordinal remove NODE_ID     take a node out of the cluster (it may be down)
  ordinal leader [transfer [NODE_ID]]
                             show the leader, or move leadership
  ordinal health [flags]     exit 0 if the node serves calls (for healthchecks)
  ordinal keys list [flags]  list keys and their high-water marks, a page at a time (--all for every page)
  ordinal backup FILE        write a consistent backup of the cluster to FILE (online, from the leader)
  ordinal restore FILE --data-dir D --node-id ID
                             create a new single-node cluster from a backup, every key advanced past
                             what the old cluster may have handed out since; see ordinal restore --help
  ordinal check --data-dir D verify a stopped node's raft.db, every log entry and its snapshots
  ordinal import [flags]     set floors in bulk from a CSV or JSON file or Layotto's etcd keys; see ordinal import --help
  ordinal token create       make a bearer token for --auth-tokens-file; see ordinal token create --help
  ordinal tls init|ca create|cert create
                             make certificates for TLS; see ordinal tls --help
  ordinal version            print the version
  ordinal <command> --help   help for a command

Every flag can also be set through its environment variable, ORDINAL_<FLAG>;
serve also reads them from a YAML file, --config FILE (see ordinal serve --help).
The load generator (make bench) is a binary of its own: ordinal-bench.
`)
}
