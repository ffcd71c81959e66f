package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const identityFile = "node.json"

// identity is what a data directory remembers about the node that owns it.
type identity struct {
	NodeID string `json:"node_id"`
	// Incarnation is random, drawn when the directory is first claimed:
	// a node that lost its data directory comes back with the same
	// NodeID and another Incarnation, which lets a leader tell it from
	// the voter it knew (see the prover).
	Incarnation string `json:"incarnation,omitempty"`
}

// ReadNodeID returns the node ID stored in dataDir, or "" when the
// directory has none yet. Callers use it to keep a node's ID stable when the
// default (the hostname) changes, as it does between containers.
func ReadNodeID(dataDir string) (string, error) {
	id, err := readIdentity(dataDir)
	return id.NodeID, err
}

func readIdentity(dataDir string) (identity, error) {
	var id identity
	b, err := os.ReadFile(filepath.Join(dataDir, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return id, nil
	}
	if err != nil {
		return id, fmt.Errorf("read node identity: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("parse %s: %w", filepath.Join(dataDir, identityFile), err)
	}
	return id, nil
}

// claimDataDir records nodeID as the owner of dataDir, or fails with
// ErrIdentityMismatch if another node owns it, and returns the
// directory's incarnation (drawn on first use, including the first start
// of a directory claimed before incarnations existed).
func claimDataDir(dataDir, nodeID string) (incarnation string, err error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return "", fmt.Errorf("create data directory: %w", err)
	}
	stored, err := readIdentity(dataDir)
	if err != nil {
		return "", err
	}
	if stored.NodeID != "" && stored.NodeID != nodeID {
		return "", fmt.Errorf("%w: %s was created by node %q, not %q; start with --node-id %s or use another data directory",
			ErrIdentityMismatch, dataDir, stored.NodeID, nodeID, stored.NodeID)
	}
	if stored.NodeID == nodeID && stored.Incarnation != "" {
		return stored.Incarnation, nil
	}
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("draw an incarnation: %w", err)
	}
	id := identity{NodeID: nodeID, Incarnation: hex.EncodeToString(r[:])}
	b, _ := json.Marshal(id)
	if err := writeFileAtomic(filepath.Join(dataDir, identityFile), b); err != nil {
		return "", err
	}
	return id.Incarnation, nil
}

// writeFileAtomic writes through a synced temporary file and a rename, so a
// crash leaves either the old file or the new one, never a torn one.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}
