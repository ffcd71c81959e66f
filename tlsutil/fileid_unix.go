//go:build unix

package tlsutil

import (
	"os"
	"syscall"
)

// fileID returns the device and inode of the file fi describes.
func fileID(fi os.FileInfo) (dev, inode uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // types differ between platforms
	}
	return 0, 0
}
