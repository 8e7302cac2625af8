package bolt

import (
	"os"
	"syscall"
)

// preallocate makes sure the file at path has its blocks allocated up to
// size bytes. Writing into allocated blocks spares each commit's fdatasync
// the file system metadata (block allocation, size) that writing past the
// end, or into a sparse region, would add; and bbolt, which stats the file
// before growing it, then needs no truncate and fsync of its own.
func preallocate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
