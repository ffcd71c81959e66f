package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/backup"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

// runBackup takes an online backup from the cluster's leader, through any
// node, and writes it to FILE atomically: to a temporary file next to it
// (mode 0600), synced and verified, then renamed over FILE. A failed or
// interrupted backup leaves FILE as it was.
func runBackup(args []string) error {
	var (
		conn    connFlags
		timeout time.Duration
	)
	fs := cli.NewFlagSet("backup", "ordinal backup [--addr HOST:PORT] FILE")
	conn.registerAddr(fs, "gRPC address of any ordinal node; the leader takes the backup")
	conn.Register(fs)
	fs.DurationVar(&timeout, "timeout", 10*time.Minute, "how long the whole backup may take")
	positional, err := cli.ParseCommandFlags("backup", fs, args)
	if err != nil {
		return err
	}
	if len(positional) != 1 {
		return cli.UsageErrorf("backup: expected one FILE to write the backup to, got %d arguments", len(positional))
	}
	file := positional[0]
	cc, err := conn.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := ordinalv1.NewClusterServiceClient(cc).Backup(ctx, &ordinalv1.BackupRequest{})
	if err != nil {
		return conn.rpcError(err)
	}
	b, err := writeBackupFile(file, func(w io.Writer) error {
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return conn.rpcError(err)
			}
			if _, err := w.Write(chunk.GetData()); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return err
	}
	printBackup(os.Stdout, file, b)
	return nil
}

// writeBackupFile writes what fill writes to a temporary file next to
// file, syncs it, verifies it as a backup and renames it over file. On any
// failure the temporary file is removed and file is left as it was.
func writeBackupFile(file string, fill func(io.Writer) error) (_ *backup.Backup, err error) {
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".*.tmp") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err := fill(w); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("backup: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("backup: sync %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	b, err := backup.Read(tmp)
	if err != nil {
		return nil, fmt.Errorf("backup: the backup received does not verify, nothing was written to %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("backup: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable where the file system allows it
		d.Close()
	}
	return b, nil
}

// printBackup says what a backup holds: what and when, its keys per
// store, and the rates a restore will advance them by.
func printBackup(w io.Writer, file string, b *backup.Backup) {
	stores := map[string]int{}
	keys := 0
	b.State.ForEachKey(func(k fsm.Key, _ uint64) bool {
		if k != backup.AllKeysFloor {
			stores[k.Store]++
			keys++
		}
		return true
	})
	fmt.Fprintf(w, "wrote %s: %d bytes, format version %d\n", file, b.Size, b.Version)
	fmt.Fprintf(w, "cluster %s, raft index %d, term %d, taken at %s\n", b.ClusterID, b.Index, b.Term, b.TakenAt.Format(time.RFC3339Nano))
	fmt.Fprintf(w, "%d keys in %d stores\n", keys, len(stores))
	if floor := b.State.HighWater(backup.AllKeysFloor); floor > 0 {
		fmt.Fprintf(w, "the cluster was restored from a backup: every key is above %d\n", floor)
	}
	fmt.Fprintf(w, "reservation rates: cluster peak %d ids/s, %d keys with a rate of their own (observed since %s)\n",
		b.Rates.ClusterPeak, len(b.Rates.Keys), b.Rates.Since.Format(time.RFC3339))
	names := make([]string, 0, len(stores))
	for s := range stores {
		names = append(names, s)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE\tKEYS")
	for _, s := range names {
		fmt.Fprintf(tw, "%s\t%d\n", s, stores[s])
	}
	tw.Flush()
}
