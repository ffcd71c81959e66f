//go:build !unix

package tlsutil

import "os"

// fileID returns zeros where os.FileInfo exposes no inode: a change is
// then seen through the file's size and modification time only.
func fileID(os.FileInfo) (dev, inode uint64) { return 0, 0 }
