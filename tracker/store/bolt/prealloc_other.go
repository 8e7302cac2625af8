//go:build !linux

package bolt

// preallocate is a no-op where fallocate is not available.
func preallocate(path string, size int64) error { return nil }
