//go:build !linux

package hitlog

import "os"

// Datasync is fsync where fdatasync is not available.
func Datasync(f *os.File) error { return f.Sync() }
