package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

// checkUsage is the synopsis of `ordinal check`.
const checkUsage = "ordinal check --data-dir DIR"

// runCheck runs `ordinal check`.
func runCheck(args []string) error {
	return checkCommand(args, os.Stdout)
}

// checkCommand verifies a stopped node's data directory and prints what it
// checked to stdout. It fails (exit 1) with a *cluster.DamageError on
// damage, and refuses a directory that a running node holds.
func checkCommand(args []string, stdout io.Writer) error {
	var dataDir string
	set := cli.NewFlagSet("check", checkUsage)
	set.StringVar(&dataDir, "data-dir", "./data", "data directory of the stopped node to check")
	positional, err := cli.ParseCommandFlags("check", set, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return cli.UsageErrorf("check: unexpected argument %q; usage: %s", positional[0], checkUsage)
	}
	if st, err := os.Stat(dataDir); err != nil || !st.IsDir() {
		return fmt.Errorf("check: %s is not a data directory: %v", dataDir, errOrNotDir(err))
	}
	rep, err := cluster.CheckDataDir(dataDir, cluster.CheckOptions{VerifySnapshots: true})
	if errors.Is(err, cluster.ErrDataDirInUse) {
		return fmt.Errorf("check: %w; check reads only the data of a stopped node, so stop the node first", err)
	}
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	printCheckReport(stdout, rep)
	return nil
}

func errOrNotDir(err error) error {
	if err != nil {
		return err
	}
	return errors.New("not a directory")
}

// printCheckReport prints what CheckDataDir looked at, one aspect a line.
func printCheckReport(w io.Writer, rep *cluster.CheckReport) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-10s %s\n", label, fmt.Sprintf(format, args...))
	}
	line("data dir", "%s", rep.DataDir)
	if rep.NodeID != "" {
		line("node id", "%s (node.json)", rep.NodeID)
	} else {
		line("node id", "none (no node.json: the directory was never used by a node)")
	}
	switch {
	case rep.LogFileSize == 0:
		line("raft.db", "none yet (a node that never started)")
	default:
		line("raft.db", "%s: %d bytes, %d pages of %d bytes in use, bbolt structure ok", rep.LogFile, rep.LogFileSize, rep.Pages, rep.PageSize)
		if rep.Entries == 0 {
			line("log", "no entries, current term %d", rep.CurrentTerm)
		} else {
			line("log", "%d entries, index %d to %d (%d commands), each decoded as Raft reads it, each command as the state machine does (checksum verified where it has one); current term %d",
				rep.Entries, rep.FirstIndex, rep.LastIndex, rep.Commands, rep.CurrentTerm)
		}
	}
	if len(rep.Snapshots) == 0 {
		line("snapshots", "none")
	}
	for _, s := range rep.Snapshots {
		line("snapshot", "%s: index %d, term %d, %d bytes, CRC-64 ok, %d keys (state at index %d) verified",
			s.ID, s.Index, s.Term, s.Size, s.Keys, s.AppliedIndex)
	}
	for _, warning := range rep.Warnings {
		line("warning", "%s", warning)
	}
	line("ok", "no damage found (%v)", rep.Elapsed.Round(time.Millisecond))
}
