package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"text/tabwriter"
	"time"

	"github.com/ordinal-dev/ordinal/backup"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

type restoreFlags struct {
	dataDir, nodeID         string
	raftAddr, advertiseRaft string
	advance, minAdvance     uint64
	advanceFor, timeMargin  time.Duration
	safety                  float64
}

// runRestore turns a backup into the data directory of a new single-node
// cluster, offline: no node runs during a restore.
func runRestore(args []string) error {
	var f restoreFlags
	fs := cli.NewFlagSet("restore", "ordinal restore FILE --data-dir DIR --node-id ID [--raft-addr HOST:PORT] [--advance N | --advance-for DURATION] [--safety F] [--snowflake-margin D]")
	fs.StringVar(&f.dataDir, "data-dir", "", "data directory to create for the restored node; it must not exist or be empty")
	fs.StringVar(&f.nodeID, "node-id", "", "ID of the restored node, the new cluster's only member; start it with the same ID (default: the hostname)")
	fs.StringVar(&f.raftAddr, "raft-addr", daemon.DefaultRaftAddr, "the node's peer port, as serve will be given it: its address in the new cluster's configuration")
	fs.StringVar(&f.advertiseRaft, "advertise-raft", "", "peer address other nodes reach the node on, as serve will be given it; default: --raft-addr")
	fs.Uint64Var(&f.advance, "advance", 0, "advance every key by exactly this many IDs, instead of by its reservation rate")
	fs.DurationVar(&f.advanceFor, "advance-for", 0, "how long the old cluster served after the backup, when known: advance each key by its rate over this long instead of over the time since the backup")
	fs.Float64Var(&f.safety, "safety", backup.DefaultSafety, "multiply every recorded rate by this (at least 1)")
	fs.Uint64Var(&f.minAdvance, "min-advance", backup.DefaultMinAdvance, "advance every key by at least this many IDs when advancing by rates")
	fs.DurationVar(&f.timeMargin, "snowflake-margin", backup.DefaultTimeMargin, "how far past the restore's clock (with --advance-for, past the old cluster's end) every Snowflake worker's time starts: "+
		"at least the old cluster's --snowflake-lease plus --snowflake-max-drift (the default fits their defaults, 3s and 10s)")
	positional, err := cli.ParseCommandFlags("restore", fs, args)
	if err != nil {
		return err
	}
	if len(positional) != 1 {
		return cli.UsageErrorf("restore: expected one backup FILE, got %d arguments", len(positional))
	}
	if f.dataDir == "" {
		return cli.UsageErrorf("restore: --data-dir is required: the data directory to create for the restored node")
	}
	switch {
	case f.advance > 0 && f.advanceFor > 0:
		return cli.UsageErrorf("restore: --advance and --advance-for exclude each other: give the exact advance, or how long the old cluster ran after the backup")
	case f.advance > 0 && (cli.ExplicitlySet(fs, "safety") || cli.ExplicitlySet(fs, "min-advance")):
		return cli.UsageErrorf("restore: --advance is exact; --safety and --min-advance apply only when advancing by rates")
	case f.safety < 1:
		return cli.UsageErrorf("restore: --safety is %v; it must be at least 1", f.safety)
	case f.minAdvance == 0:
		return cli.UsageErrorf("restore: --min-advance must be at least 1")
	case f.advanceFor < 0:
		return cli.UsageErrorf("restore: --advance-for must not be negative")
	case f.timeMargin < time.Millisecond:
		return cli.UsageErrorf("restore: --snowflake-margin is %v; it must be at least 1ms (the old cluster's --snowflake-lease plus --snowflake-max-drift)", f.timeMargin)
	}
	nodeID, err := resolveNodeID(f.nodeID, "")
	if err != nil {
		return err
	}
	raftAddr, err := restoredRaftAddr(f.raftAddr, f.advertiseRaft)
	if err != nil {
		return err
	}

	b, err := readBackupFile(positional[0])
	if err != nil {
		return err
	}
	report, err := cluster.Restore(b, cluster.RestoreConfig{
		NodeID:   nodeID,
		DataDir:  f.dataDir,
		RaftAddr: raftAddr,
		Plan:     backup.Plan{Advance: f.advance, For: f.advanceFor, Safety: f.safety, Min: f.minAdvance, TimeMargin: f.timeMargin},
	})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	printRestore(os.Stdout, f, nodeID, raftAddr, report)
	return nil
}

// readBackupFile reads and verifies the backup in file.
func readBackupFile(file string) (*backup.Backup, error) {
	fh, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer fh.Close()
	b, err := backup.Read(bufio.NewReaderSize(fh, 1<<20))
	switch {
	case errors.Is(err, backup.ErrCorrupt):
		return nil, fmt.Errorf("restore: %s is damaged; nothing was restored: %w", file, err)
	case err != nil:
		return nil, fmt.Errorf("restore: %s: %w", file, err)
	}
	return b, nil
}

// restoredRaftAddr returns the peer address the restored node will
// advertise, as serve computes it from the same flags: --advertise-raft,
// else --raft-addr with an unspecified host replaced by the hostname.
func restoredRaftAddr(raftAddr, advertise string) (string, error) {
	addr := advertise
	if addr == "" {
		addr = raftAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", cli.UsageErrorf("restore: peer address %q is not host:port", addr)
	}
	if port == "0" {
		return "", cli.UsageErrorf("restore: peer address %q has port 0: give the port the node will listen on, other nodes reach it there", addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		name, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("restore: --raft-addr %s listens on every address and the hostname is unknown: give --advertise-raft", addr)
		}
		addr = net.JoinHostPort(name, port)
	}
	return addr, nil
}

// printRestore says what the restore did: from what, into what, and how
// far each store's keys advanced.
func printRestore(w io.Writer, f restoreFlags, nodeID, raftAddr string, r *cluster.RestoreReport) {
	h := r.Backup
	fmt.Fprintf(w, "restored the backup of cluster %s (raft index %d, term %d, taken at %s) into %s\n",
		h.ClusterID, h.Index, h.Term, h.TakenAt.Format(time.RFC3339), f.dataDir)
	fmt.Fprintf(w, "new cluster %s: node %s, peer address %s\n", r.ClusterID, nodeID, raftAddr)
	p := r.Plan
	switch {
	case p.Advance > 0:
		fmt.Fprintf(w, "advance: exactly %d for every key\n", p.Advance)
	case p.For > 0:
		fmt.Fprintf(w, "advance: each key's peak reservation rate (the cluster's, %d ids/s, for keys without one) x %v (--advance-for %v plus two %v rate windows) x safety %v, at least %d\n",
			h.Rates.ClusterPeak, r.Span, p.For, h.Rates.Window, p.Safety, p.Min)
	default:
		fmt.Fprintf(w, "advance: each key's peak reservation rate (the cluster's, %d ids/s, for keys without one) x %v (the time since the backup plus two %v rate windows) x safety %v, at least %d\n",
			h.Rates.ClusterPeak, r.Span.Round(time.Millisecond), h.Rates.Window, p.Safety, p.Min)
		if observed := h.TakenAt.Sub(h.Rates.Since); observed < h.Rates.Horizon {
			fmt.Fprintf(w, "note: the leader had observed reservations for only %v when it took the backup; if the old cluster ran much faster than that, give --advance\n", observed.Round(time.Second))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE\tKEYS\tSMALLEST ADVANCE\tLARGEST ADVANCE\tRATES (IDS/S)")
	for _, s := range r.Stores {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d-%d\n", s.Store, s.Keys, s.MinAdvance, s.MaxAdvance, s.MinRate, s.MaxRate)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d keys restored; keys not in the backup (created after it) start above %d\n", r.Keys, r.Floor)
	fmt.Fprintf(w, "Snowflake IDs: every worker's time starts after %s (--snowflake-margin %v); Snowflake stores answer Unavailable until the nodes' clocks are within --snowflake-max-drift of it\n",
		time.UnixMilli(int64(r.TimeFloor)).UTC().Format(time.RFC3339Nano), p.TimeMargin)
	if r.Exhausted > 0 {
		fmt.Fprintf(w, "warning: %d keys reached the largest ID and hand out no more\n", r.Exhausted)
	}
	fmt.Fprintf(w, "start it with: ordinal serve --data-dir %s --node-id %s --raft-addr %s (plus your other serve flags); other nodes join it with --join %s\n",
		f.dataDir, nodeID, f.raftAddr, raftAddr)
}
