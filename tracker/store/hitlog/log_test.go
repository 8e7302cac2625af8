package hitlog

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func payloads(from, n int) [][]byte {
	var ps [][]byte
	for i := range n {
		ps = append(ps, []byte(fmt.Sprintf("hit %d", from+i)))
	}
	return ps
}

func readAll(t *testing.T, l *Log, after uint64, max int) []string {
	t.Helper()
	var got []string
	for {
		rs, err := l.Read(after, max)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			return got
		}
		for _, r := range rs {
			if r.Seq <= after {
				t.Fatalf("Read(%d) gave record %d", after, r.Seq)
			}
			after = r.Seq
			got = append(got, string(r.Payload))
		}
	}
}

func wantHits(from, n int) []string {
	var out []string
	for _, p := range payloads(from, n) {
		out = append(out, string(p))
	}
	return out
}

// Records appended over several segments come back in order, also after
// a reopen; a release removes the segments it covers, and only those; the
// backlog counts what follows the release.
func TestLogAppendReadRelease(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, 200) // a few records a segment
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 10 {
		if last, err = l.Append(payloads(i*3, 3)); err != nil {
			t.Fatal(err)
		}
	}
	if last != 30 {
		t.Fatalf("last sequence %d, want 30", last)
	}
	if got := readAll(t, l, 0, 4); !slices.Equal(got, wantHits(0, 30)) {
		t.Fatalf("read %q", got)
	}
	if n, at := l.Backlog(); n != 30 || at.IsZero() {
		t.Fatalf("backlog %d since %v, want 30", n, at)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(files) < 3 {
		t.Fatalf("%d segment files, want several", len(files))
	}
	if err := l.Release(14); err != nil {
		t.Fatal(err)
	}
	if n, _ := l.Backlog(); n != 16 {
		t.Fatalf("backlog %d after releasing 14, want 16", n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(dir, 200)
	if err != nil {
		t.Fatal(err)
	}
	// What reopens is whole segments: the one holding 15 may start before it.
	got := readAll(t, l, 14, 100)
	if !slices.Equal(got, wantHits(14, 16)) {
		t.Fatalf("after reopen, read past 14: %q", got)
	}
	if last, err = l.Append(payloads(30, 2)); err != nil || last != 32 {
		t.Fatalf("append after reopen: %d, %v; want 32", last, err)
	}
	if err := l.Release(32); err != nil {
		t.Fatal(err)
	}
	if n, at := l.Backlog(); n != 0 || !at.IsZero() {
		t.Fatalf("backlog %d since %v after releasing everything", n, at)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.log")); len(files) != 0 {
		t.Fatalf("segment files left after releasing everything: %q", files)
	}
	if last, err = l.Append(payloads(32, 1)); err != nil || last != 33 {
		t.Fatalf("append after releasing everything: %d, %v; want 33", last, err)
	}
	l.Close()
	l, err = Open(dir, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := readAll(t, l, 0, 10); !slices.Equal(got, wantHits(32, 1)) {
		t.Fatalf("after the last reopen: %q", got)
	}
}

// A torn last record (cut short, or with a byte changed: an append that
// was never answered) is skipped at Open; the records before it stay, and
// appends go on after them.
func TestLogTornRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		tear func(b []byte) []byte
	}{
		{"cut short", func(b []byte) []byte { return b[:len(b)-3] }},
		{"garbled", func(b []byte) []byte { b[len(b)-2] ^= 0xff; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := Open(dir, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Append(payloads(0, 2)); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Append(payloads(2, 1)); err != nil {
				t.Fatal(err)
			}
			l.Close()
			files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			if len(files) != 1 {
				t.Fatalf("files %q", files)
			}
			b, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			// The file holds the records, then zeros up to GrowStep.
			end := 0
			for _, p := range payloads(0, 3) {
				end += HeaderSize + len(p)
			}
			torn := append(tc.tear(b[:end]), b[end:]...)
			if err := os.WriteFile(files[0], torn, 0o600); err != nil {
				t.Fatal(err)
			}
			l, err = Open(dir, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if n, _ := l.Backlog(); n != 2 {
				t.Errorf("backlog %d, want 2", n)
			}
			if _, err := l.Append(payloads(10, 1)); err != nil {
				t.Fatal(err)
			}
			want := append(wantHits(0, 2), wantHits(10, 1)...)
			if got := readAll(t, l, 0, 10); !slices.Equal(got, want) {
				t.Errorf("read %q, want %q", got, want)
			}
		})
	}
}
