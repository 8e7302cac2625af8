package hitlog

import (
	"os"
	"syscall"
)

// Datasync flushes f's data, and its metadata only where reading the data
// back needs it (the size): cheaper than fsync on a file written in place.
func Datasync(f *os.File) error {
	return syscall.Fdatasync(int(f.Fd()))
}
