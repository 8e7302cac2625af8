package durable

import (
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
)

// Steps of a write, one variable each so that the tests can watch their
// order and make one fail.
var (
	syncFile = (*os.File).Sync
	rename   = os.Rename
	link     = os.Link
)

// Options says how Write makes a file.
type Options struct {
	// Perm is the file's mode before the umask; zero means 0o600.
	Perm fs.FileMode
	// NoReplace: when a file exists at the path, it is kept and Write
	// returns an error wrapping fs.ErrExist. Of several writers racing to
	// create the file, exactly one succeeds.
	NoReplace bool
	// SyncDir makes the new name durable; nil means SyncDir of the path's
	// directory. A caller that shares directory fsyncs between concurrent
	// writers passes its own; it is called after the file has its name.
	SyncDir func() error
}

// WriteFile writes data to path durably, replacing any file there.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, Options{Perm: perm}, writeAll(data))
}

// CreateFile writes data to path durably unless a file exists there: then it
// leaves that file alone and returns an error wrapping fs.ErrExist. It is for
// what is generated once, such as a secret that links already sent depend on.
func CreateFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, Options{Perm: perm, NoReplace: true}, writeAll(data))
}

func writeAll(data []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}
}

// Write makes the file at path hold what write writes, durably: write fills a
// temporary file in the same directory, which is fsynced, closed, given its
// name, and then the directory is fsynced. When Write returns an error no
// temporary file is left behind; when the error comes from the directory's
// fsync the file is in place but its name may not survive a power loss.
func Write(path string, opts Options, write func(io.Writer) error) error {
	perm := opts.Perm
	if perm == 0 {
		perm = 0o600
	}
	dir := filepath.Dir(path)
	f, err := createTemp(dir, filepath.Base(path), perm)
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = write(f)
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if opts.NoReplace {
		// link fails when the name is taken, where rename would replace it.
		err = link(tmp, path)
		os.Remove(tmp)
		var le *os.LinkError
		if errors.As(err, &le) {
			err = &fs.PathError{Op: "create", Path: path, Err: le.Err}
		}
	} else if err = rename(tmp, path); err != nil {
		os.Remove(tmp)
	}
	if err != nil {
		return err
	}
	if opts.SyncDir != nil {
		return opts.SyncDir()
	}
	return SyncDir(dir)
}

// createTemp creates a new file ".NAME.tmp<random>" in dir, like
// os.CreateTemp but with perm (before the umask) rather than 0o600.
func createTemp(dir, name string, perm fs.FileMode) (*os.File, error) {
	for range 1000 {
		p := filepath.Join(dir, "."+name+".tmp"+strconv.FormatUint(uint64(rand.Uint32()), 36))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, &fs.PathError{Op: "createtemp", Path: filepath.Join(dir, "."+name+".tmp*"), Err: fs.ErrExist}
}

// SyncDir fsyncs the directory dir, so that the names created, renamed or
// removed in it survive a power loss.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = syncFile(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// MkdirAll is os.MkdirAll that makes the directories it creates durable:
// the parent of each is fsynced once it holds the new name, so that what is
// written inside afterwards cannot outlive a power loss that the directory
// itself does not.
func MkdirAll(path string, perm fs.FileMode) error {
	path = filepath.Clean(path)
	var missing []string // from path up to the first that exists
	for p := path; ; {
		if _, err := os.Lstat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	if err := os.MkdirAll(path, perm); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := SyncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}
