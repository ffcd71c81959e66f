// Command ordinal runs and talks to an ordinal node: a Raft-replicated
// service handing out unique, increasing 64-bit IDs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, errHelp) {
			fmt.Fprintf(os.Stderr, "ordinal: %v\n", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitCode maps an error to the process exit status: 0 when the user asked
// for help (usage was printed and nothing failed), 2 when the command line
// itself is wrong, 1 for everything else.
func exitCode(err error) int {
	var u *usageError
	switch {
	case errors.Is(err, errHelp):
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

func run(args []string) error {
	if len(args) == 0 {
		usage()
		return usageErrorf("no command given")
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
		return runBench(args[1:])
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
	return usageErrorf("unknown command %q; run 'ordinal --help' for the list of commands", args[0])
}

func usage() {
	fmt.Fprint(os.Stderr, `ordinal hands out distributed unique, increasing 64-bit IDs.

Usage:
  ordinal serve [flags]      run a node
  ordinal next [flags] KEY   take the next ID (or --count IDs) of KEY from a node
  ordinal demo [flags]       run Layotto's sequencer quick-start demo against a node
  ordinal members [flags]    list the cluster's members and how far each is behind
  ordinal remove NODE_ID     take a node out of the cluster (it may be down)
  ordinal leader [transfer [NODE_ID]]
                             show the leader, or move leadership
  ordinal health [flags]     exit 0 if the node serves calls (for healthchecks)
  ordinal keys list [flags]  list keys and their high-water marks, a page at a time (--all for every page)
  ordinal bench [flags]      load-test nodes and verify every ID; see ordinal bench --help
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

Every flag can also be set through its environment variable, ORDINAL_<FLAG>.
`)
}

// usageError marks an error in how ordinal was invoked (an unknown command
// or flag, a missing or malformed argument), as opposed to a failure while
// doing the work, so that it exits with status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// parseCommandFlags is parseFlags for the commands other than serve. It
// prints usage exactly once and only on --help: the flag package prints it
// on every parse error and parseFlags prints it again on --help, which
// would bury the one line that says what is wrong. Other errors come back
// prefixed with the command's name and marked as usage errors.
func parseCommandFlags(cmd string, fs *flag.FlagSet, args []string) ([]string, error) {
	printUsage := fs.Usage
	fs.Usage = func() {}
	positional, err := parseFlags(fs, args)
	fs.Usage = printUsage
	switch {
	case errors.Is(err, errHelp):
		printUsage()
		return nil, err
	case err != nil:
		return nil, &usageError{err: fmt.Errorf("%s: %w", cmd, err)}
	}
	return positional, nil
}
