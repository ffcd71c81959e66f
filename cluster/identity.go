package cluster

import (
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
}

// ReadNodeID returns the node ID stored in dataDir, or "" when the
// directory has none yet. Callers use it to keep a node's ID stable when the
// default (the hostname) changes, as it does between containers.
func ReadNodeID(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read node identity: %w", err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return "", fmt.Errorf("parse %s: %w", filepath.Join(dataDir, identityFile), err)
	}
	return id.NodeID, nil
}

// claimDataDir records nodeID as the owner of dataDir, or fails with
// ErrIdentityMismatch if another node owns it.
func claimDataDir(dataDir, nodeID string) error {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	stored, err := ReadNodeID(dataDir)
	if err != nil {
		return err
	}
	if stored != "" && stored != nodeID {
		return fmt.Errorf("%w: %s was created by node %q, not %q; start with --node-id %s or use another data directory",
			ErrIdentityMismatch, dataDir, stored, nodeID, stored)
	}
	if stored == nodeID {
		return nil
	}
	b, _ := json.Marshal(identity{NodeID: nodeID})
	return writeFileAtomic(filepath.Join(dataDir, identityFile), b)
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
