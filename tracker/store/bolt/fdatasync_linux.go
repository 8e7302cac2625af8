package bolt

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data, and its metadata only where reading the data
// back needs it (the size): cheaper than fsync on a file written in place.
func fdatasync(f *os.File) error {
	return syscall.Fdatasync(int(f.Fd()))
}
