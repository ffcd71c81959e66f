package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/backup"
)

// Backups (see DESIGN.md, "Backup and restore"): the leader writes a
// consistent copy of the state machine, taken after a barrier, with the
// reservation rates it observed, in package backup's format. Followers
// relay the leader's backup.

// watchRates makes the node measure reservation rates, from every
// reservation its state machine applies, for the backups it may take as
// leader. Every node measures, so that a new leader has rates at once.
// New calls it before Raft starts.
func (n *Node) watchRates() {
	n.rates = backup.NewRates(backup.RatesConfig{})
	n.fsm.SetReserveHook(n.rates.Observe)
}

// Backup writes a backup of the cluster's state to w (package backup's
// file format). The leader takes it; a follower relays the leader's when
// forward is set and otherwise fails with an error wrapping
// alloc.ErrNotLeader, so that a call another node forwarded never hops
// twice.
//
// The backup holds every ID handed out before Backup was called: the
// leader records the time, then commits a barrier, which only a leader
// still leading a quorum can, and copies the state machine once the
// barrier has been applied. On an error after some bytes were written, w
// holds an incomplete backup, which backup.Read refuses.
func (n *Node) Backup(ctx context.Context, w io.Writer, forward bool) error {
	if !n.isStarted() {
		return ErrNotReady
	}
	if !n.IsLeader() {
		if !forward {
			return n.notLeader()
		}
		return n.relayBackup(ctx, w)
	}
	h, size, err := n.takeBackup(ctx, w)
	if err != nil {
		return err
	}
	n.logger.Info("took a backup", "index", h.Index, "term", h.Term, "keys", n.fsm.Len(), "bytes", size,
		"keys_with_rates", len(h.Rates.Keys), "cluster_peak_rate", h.Rates.ClusterPeak)
	return nil
}

// takeBackup writes the backup as leader and returns its header and size.
func (n *Node) takeBackup(ctx context.Context, w io.Writer) (backup.Header, int64, error) {
	takenAt := time.Now()
	if err := n.await(ctx, n.raft.Barrier(n.cfg.ApplyTimeout)); err != nil {
		return backup.Header{}, 0, fmt.Errorf("backup: barrier: %w", err)
	}
	term := n.raft.CurrentTerm()
	index := n.raft.AppliedIndex()
	snap, err := n.fsm.Snapshot()
	if err != nil {
		return backup.Header{}, 0, fmt.Errorf("backup: %w", err)
	}
	defer snap.Release()
	if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
		return backup.Header{}, 0, n.notLeader()
	}
	h := backup.Header{
		ClusterID: n.fsm.ClusterID(),
		Index:     index,
		Term:      term,
		TakenAt:   takenAt.UTC(),
		Rates:     n.rates.Summary(),
	}
	bw, err := backup.NewWriter(w, h)
	if err != nil {
		return backup.Header{}, 0, err
	}
	if err := snap.Persist(&backupSink{Writer: bw}); err != nil {
		return backup.Header{}, 0, err
	}
	return h, bw.Size(), nil
}

// relayBackup copies the leader's backup to w.
func (n *Node) relayBackup(ctx context.Context, w io.Writer) error {
	c, err := n.leaderConn()
	if err != nil {
		return err
	}
	stream, err := ordinalv1.NewClusterServiceClient(c).Backup(ctx, &ordinalv1.BackupRequest{})
	if err != nil {
		return err
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(chunk.GetData()); err != nil {
			return err
		}
	}
}

// backupSink adapts a backup.Writer to the raft.SnapshotSink the state
// machine persists into: Close ends the backup file.
type backupSink struct {
	*backup.Writer
}

var _ raft.SnapshotSink = (*backupSink)(nil)

func (s *backupSink) ID() string    { return "backup" }
func (s *backupSink) Cancel() error { return nil }
