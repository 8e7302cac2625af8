package hitlog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/internal/durable"
)

// DefaultSegmentSize is the size past which Log starts a new segment file.
const DefaultSegmentSize = 8 << 20

// Log is a log of records in segment files of one directory, named by the
// sequence of their first record (0000000000000001.log). It grows as long
// as its records are not released: it is for a backlog of unknown length,
// such as the hits a store keeps while its database is unreachable.
//
// Appends go to the newest segment, which is never one found at Open: a
// file read back may end in a torn record, so it is only read and, once
// released, removed. A record is durable when Append returns (write and
// fdatasync). Release(seq) removes the segments whose records are all at
// or before seq; records after the last release are the backlog, which
// Read returns in order. Log is safe for concurrent use.
type Log struct {
	dir     string
	segSize int64

	mu       sync.Mutex
	segs     []*segment // oldest first; the last may be cur's
	cur      *os.File   // the segment appends go to; nil: start a new one
	seq      uint64     // of the last record given a sequence
	released uint64
	marks    []mark // first sequence of each append, and when, for Oldest
	buf      []byte
	// The read cursor: where Read stopped, so that reading a backlog in
	// order costs one pass over the files.
	rseg *segment
	roff int64
	rseq uint64
}

// segment is one file of the log.
type segment struct {
	path        string
	first, last uint64 // last < first: empty
	off, size   int64  // where the next record goes; bytes in the file
}

type mark struct {
	seq uint64
	at  time.Time
}

// Record is a record read back from a Log.
type Record struct {
	Seq     uint64
	Payload []byte
}

// Open opens the log in dir, creating the directory if needed, and reads
// the segments there: their records, as far as each is whole, are the
// backlog. segSize <= 0 means DefaultSegmentSize.
func Open(dir string, segSize int64) (*Log, error) {
	if segSize <= 0 {
		segSize = DefaultSegmentSize
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l := &Log{dir: dir, segSize: segSize}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	removed := false
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		first, err := strconv.ParseUint(name, 16, 64)
		if !ok || err != nil || len(name) != 16 || !e.Type().IsRegular() {
			continue
		}
		sg, err := l.readSegment(filepath.Join(dir, e.Name()), first)
		if err != nil {
			return nil, err
		}
		if sg.last < sg.first {
			// Nothing whole in it: a segment created as its first append
			// failed or was cut short.
			if err := os.Remove(sg.path); err != nil {
				return nil, err
			}
			removed = true
			continue
		}
		fi, _ := e.Info()
		at := time.Now()
		if fi != nil {
			at = fi.ModTime()
		}
		l.segs = append(l.segs, sg)
		l.marks = append(l.marks, mark{seq: sg.first, at: at})
		l.seq = max(l.seq, sg.last)
	}
	if removed {
		if err := durable.SyncDir(dir); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(l.segs, func(a, b *segment) int { return compare(a.first, b.first) })
	slices.SortFunc(l.marks, func(a, b mark) int { return compare(a.seq, b.seq) })
	if len(l.segs) > 0 {
		l.released = l.segs[0].first - 1
	}
	return l, nil
}

func compare(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readSegment finds the records of the file at path, which must start at
// sequence first.
func (l *Log) readSegment(path string, first uint64) (*segment, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	sg := &segment{path: path, first: first, last: first - 1, size: fi.Size()}
	sg.off, err = ReadRun(f, 0, fi.Size(), func(seq uint64, _ []byte) error {
		if seq != sg.last+1 {
			return errStop
		}
		sg.last = seq
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("hit log %s: %w", path, err)
	}
	return sg, nil
}

var errStop = errors.New("stop")

// Append writes payloads as records and syncs them; it returns the
// sequence of the last one (the others precede it by one each). After an
// error none of them is to be counted on, and the next Append starts a new
// segment.
func (l *Log) Append(payloads [][]byte) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(payloads) == 0 {
		return l.seq, nil
	}
	var total int64
	for _, p := range payloads {
		if len(p) == 0 || len(p) > MaxPayload {
			return 0, fmt.Errorf("hit log: record of %d bytes (1 to %d)", len(p), MaxPayload)
		}
		total += HeaderSize + int64(len(p))
	}
	sg := l.current()
	if sg != nil && sg.off > 0 && sg.off+total > l.segSize {
		if err := l.cur.Close(); err != nil {
			return 0, l.fail(err)
		}
		l.cur, sg = nil, nil
	}
	if sg == nil {
		var err error
		if sg, err = l.newSegment(); err != nil {
			return 0, err
		}
	}
	b := l.buf[:0]
	first := l.seq + 1
	for _, p := range payloads {
		l.seq++
		b = AppendRecord(b, l.seq, p)
	}
	if cap(b) <= 4*GrowStep {
		l.buf = b
	} else {
		l.buf = nil // a burst's buffer is not kept
	}
	size, err := Grow(l.cur, sg.size, sg.off+int64(len(b)))
	sg.size = size
	if err == nil {
		_, err = l.cur.WriteAt(b, sg.off)
	}
	if err == nil {
		err = Datasync(l.cur)
	}
	if err != nil {
		return 0, l.fail(err)
	}
	sg.off += int64(len(b))
	sg.last = l.seq
	l.marks = append(l.marks, mark{seq: first, at: time.Now()})
	return l.seq, nil
}

// current returns the segment appends go to, or nil.
func (l *Log) current() *segment {
	if l.cur == nil {
		return nil
	}
	return l.segs[len(l.segs)-1]
}

// fail abandons the current segment after a failed write: what it holds
// past its last good record is unknown, so nothing is appended to it again.
func (l *Log) fail(err error) error {
	if l.cur != nil {
		l.cur.Close()
		l.cur = nil
	}
	return fmt.Errorf("hit log %s: %w", l.dir, err)
}

// newSegment creates the segment of the next sequence and makes its name
// durable.
func (l *Log) newSegment() (*segment, error) {
	first := l.seq + 1
	path := filepath.Join(l.dir, fmt.Sprintf("%016x.log", first))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("hit log: %w", err)
	}
	if err := durable.SyncDir(l.dir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("hit log: %w", err)
	}
	sg := &segment{path: path, first: first, last: first - 1}
	l.segs = append(l.segs, sg)
	l.cur = f
	return sg, nil
}

// Read returns up to max records of the backlog after sequence after, in
// order.
func (l *Log) Read(after uint64, max int) ([]Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	for _, sg := range l.segs {
		if len(out) >= max {
			break
		}
		if sg.last <= after {
			continue
		}
		pos := int64(0)
		if l.rseg == sg && l.rseq <= after {
			pos = l.roff // continue where the last Read stopped
		}
		f, err := os.Open(sg.path)
		if err != nil {
			return nil, fmt.Errorf("hit log: %w", err)
		}
		_, err = ReadRun(f, pos, sg.off, func(seq uint64, p []byte) error {
			if len(out) >= max {
				return errStop
			}
			if seq > after {
				out = append(out, Record{Seq: seq, Payload: p})
			}
			pos += HeaderSize + int64(len(p))
			l.rseg, l.roff, l.rseq = sg, pos, seq
			return nil
		})
		f.Close()
		if err != nil && !errors.Is(err, errStop) {
			return nil, fmt.Errorf("hit log %s: %w", sg.path, err)
		}
	}
	return out, nil
}

// Release removes the segments whose records are all at or before seq
// (the newest too, if so; the next Append starts another): they are
// stored elsewhere now.
func (l *Log) Release(seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = max(l.released, seq)
	n := 0
	for n < len(l.segs) && l.segs[n].last <= l.released {
		n++
	}
	if n == 0 {
		return nil
	}
	if n == len(l.segs) && l.cur != nil {
		if err := l.cur.Close(); err != nil {
			return err
		}
		l.cur = nil
	}
	for _, sg := range l.segs[:n] {
		if err := os.Remove(sg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("hit log: %w", err)
		}
		if l.rseg == sg {
			l.rseg = nil
		}
	}
	l.segs = slices.Delete(l.segs, 0, n)
	i := 0
	for i+1 < len(l.marks) && l.marks[i+1].seq <= l.released+1 {
		i++
	}
	l.marks = slices.Delete(l.marks, 0, i)
	return durable.SyncDir(l.dir)
}

// Backlog returns how many records follow the last release, and when the
// oldest of them was appended (zero when none).
func (l *Log) Backlog() (int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := uint64(0)
	for _, sg := range l.segs {
		if sg.last > l.released {
			n += sg.last - max(sg.first, l.released+1) + 1
		}
	}
	if n == 0 {
		return 0, time.Time{}
	}
	var at time.Time
	for _, m := range l.marks {
		if m.seq > l.released+1 {
			break
		}
		at = m.at
	}
	if at.IsZero() && len(l.marks) > 0 {
		at = l.marks[0].at
	}
	return int(n), at
}

// Close closes the segment being written. The log's records stay for the
// next Open.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	err := l.cur.Close()
	l.cur = nil
	return err
}
