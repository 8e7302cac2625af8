//go:build unix

package durable

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
)

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// withUmask runs the test under umask m.
func withUmask(t *testing.T, m int) {
	old := syscall.Umask(m)
	t.Cleanup(func() { syscall.Umask(old) })
}

var tmpSuffix = regexp.MustCompile(`\.tmp[0-9a-z]+$`)

// steps records the fsyncs, renames and links of a write, as "sync NAME",
// "rename OLD NEW", "link OLD NEW", with names relative to dir.
func steps(t *testing.T, dir string) *[]string {
	var mu sync.Mutex
	var got []string
	rel := func(p string) string {
		r, err := filepath.Rel(dir, p)
		if err != nil {
			return p
		}
		return tmpSuffix.ReplaceAllString(r, ".tmp") // ".NAME.tmp<random>" → ".NAME.tmp"
	}
	add := func(s string) {
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	}
	oldSync, oldRename, oldLink := syncFile, rename, link
	syncFile = func(f *os.File) error { add("sync " + rel(f.Name())); return oldSync(f) }
	rename = func(a, b string) error { add("rename " + rel(a) + " " + rel(b)); return oldRename(a, b) }
	link = func(a, b string) error { add("link " + rel(a) + " " + rel(b)); return oldLink(a, b) }
	t.Cleanup(func() { syncFile, rename, link = oldSync, oldRename, oldLink })
	return &got
}

func TestWriteFile(t *testing.T) {
	withUmask(t, 0o022)
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	got := steps(t, dir)
	if err := WriteFile(path, []byte("first\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	// The bytes are synced before the file takes its name, and the
	// directory after.
	want := []string{"sync .secret.tmp", "rename .secret.tmp secret", "sync ."}
	if !slices.Equal(*got, want) {
		t.Errorf("steps %q, want %q", *got, want)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "first\n" {
		t.Fatalf("content %q, %v", b, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, %v; want 0640", fi.Mode(), err)
	}
	if names := entries(t, dir); !slices.Equal(names, []string{"secret"}) {
		t.Errorf("directory holds %q", names)
	}

	// A second write replaces the file.
	if err := WriteFile(path, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "second\n" {
		t.Errorf("after replace: %q", b)
	}
	if names := entries(t, dir); !slices.Equal(names, []string{"secret"}) {
		t.Errorf("directory holds %q", names)
	}
}

func TestWriteFile_umaskApplies(t *testing.T) {
	withUmask(t, 0o077)
	path := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v under umask 077", fi.Mode())
	}
}

// A failure at any step before the file has its name leaves no temporary
// file, and the file already there as it was.
func TestWrite_failureLeavesNothingBehind(t *testing.T) {
	boom := errors.New("boom")
	cases := []struct {
		name  string
		setup func(t *testing.T, path string)
		write func(io.Writer) error
	}{
		{"write fails", nil, func(w io.Writer) error {
			w.Write([]byte("partial"))
			return boom
		}},
		{"fsync fails", func(t *testing.T, path string) {
			old := syncFile
			syncFile = func(*os.File) error { return boom }
			t.Cleanup(func() { syncFile = old })
		}, writeAll([]byte("new"))},
		{"rename fails", func(t *testing.T, path string) {
			old := rename
			rename = func(string, string) error { return boom }
			t.Cleanup(func() { rename = old })
		}, writeAll([]byte("new"))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			if c.setup != nil {
				c.setup(t, path)
			}
			if err := Write(path, Options{}, c.write); !errors.Is(err, boom) {
				t.Fatalf("Write = %v, want %v", err, boom)
			}
			if names := entries(t, dir); !slices.Equal(names, []string{"f"}) {
				t.Errorf("directory holds %q", names)
			}
			if b, _ := os.ReadFile(path); string(b) != "old" {
				t.Errorf("the old file became %q", b)
			}
		})
	}

	// The path is taken by a directory: the rename itself fails.
	dir := t.TempDir()
	path := filepath.Join(dir, "d")
	if err := os.MkdirAll(filepath.Join(path, "inside"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile over a directory succeeded")
	}
	if names := entries(t, dir); !slices.Equal(names, []string{"d"}) {
		t.Errorf("directory holds %q", names)
	}
}

func TestCreateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	got := steps(t, dir)
	if err := CreateFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := []string{"sync .secret.tmp", "link .secret.tmp secret", "sync ."}
	if !slices.Equal(*got, want) {
		t.Errorf("steps %q, want %q", *got, want)
	}
	// An existing file is kept.
	err := CreateFile(path, []byte("two"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateFile over an existing file = %v, want fs.ErrExist", err)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != path {
		t.Errorf("error %v does not name %s", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "one" {
		t.Errorf("existing file became %q", b)
	}
	if names := entries(t, dir); !slices.Equal(names, []string{"secret"}) {
		t.Errorf("directory holds %q", names)
	}
}

// Of writers racing to create one file, exactly one wins, and the file holds
// what the winner wrote.
func TestCreateFile_race(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = CreateFile(path, []byte{byte('a' + i)}, 0o600) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both created the file", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, fs.ErrExist):
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer created the file")
	}
	if b, _ := os.ReadFile(path); string(b) != string(rune('a'+winner)) {
		t.Errorf("file holds %q, the winner wrote %q", b, string(rune('a'+winner)))
	}
	if names := entries(t, dir); !slices.Equal(names, []string{"secret"}) {
		t.Errorf("directory holds %q", names)
	}
}

// A caller's own directory sync replaces SyncDir and runs once the file
// has its name.
func TestWrite_callerSyncsDir(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "copy.eml")
	got := steps(t, dir)
	calls := 0
	err := Write(path, Options{SyncDir: func() error {
		calls++
		if _, err := os.Stat(path); err != nil {
			t.Errorf("directory synced before the file had its name: %v", err)
		}
		return nil
	}}, writeAll([]byte("x")))
	if err != nil || calls != 1 {
		t.Fatalf("Write = %v, %d directory syncs", err, calls)
	}
	if want := []string{"sync .copy.eml.tmp", "rename .copy.eml.tmp copy.eml"}; !slices.Equal(*got, want) {
		t.Errorf("steps %q, want %q", *got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("default mode %v, want 0600", fi.Mode())
	}

	boom := errors.New("dir sync failed")
	if err := Write(path, Options{SyncDir: func() error { return boom }}, writeAll([]byte("y"))); !errors.Is(err, boom) {
		t.Errorf("a failed directory sync: Write = %v", err)
	}
}

func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	got := steps(t, dir)
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sync ."}; !slices.Equal(*got, want) {
		t.Errorf("steps %q, want %q", *got, want)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SyncDir of a missing directory = %v", err)
	}
}

func TestMkdirAll(t *testing.T) {
	dir := t.TempDir()
	got := steps(t, dir)
	path := filepath.Join(dir, "a", "b", "c")
	if err := MkdirAll(path, 0o700); err != nil {
		t.Fatal(err)
	}
	// Each new name is synced in its parent, from the top down.
	if want := []string{"sync .", "sync a", "sync a/b"}; !slices.Equal(*got, want) {
		t.Errorf("steps %q, want %q", *got, want)
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Fatalf("%s: %v", path, err)
	}
	// Nothing new, nothing synced.
	*got = nil
	if err := MkdirAll(path, 0o700); err != nil || len(*got) != 0 {
		t.Errorf("existing directory: %v, steps %q", err, *got)
	}
	if err := MkdirAll(filepath.Join(path, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sync a/b/c"}; !slices.Equal(*got, want) {
		t.Errorf("steps %q, want %q", *got, want)
	}
	// A file in the way.
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(dir, "f", "g"), 0o700); err == nil {
		t.Error("MkdirAll through a file succeeded")
	}
}
