package bolt

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/trackrelay/trackrelay/internal/durable"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/hitlog"
)

// The hit log is a write-ahead log in front of the bbolt file: a batch of
// hits is durable, and answered, once it is appended to the log with one
// fdatasync. Committing to bbolt costs two fdatasyncs and a dozen page
// writes per transaction, and on the hit path its time was most of a hit's
// wait while the CPU sat idle. The collector appends; the applier commits
// what was logged to bbolt in bigger transactions, each recording the last
// log sequence it holds (meta key "log"), and Open replays what a crash
// left unapplied.
//
// The file holds two segments of logSegment bytes, written in turns, each
// from its start. The collector moves to the other segment when the
// current one is full, once everything in the other has been applied
// (long since, normally: the applier lags by a fraction of a second), so
// the file stays small and neither of them is ever overwritten before it is
// in bbolt. The file grows in zero-filled steps, so that the fdatasync of
// an append writes data only: no block allocation, no size change.
//
// Records are package hitlog's; a payload is the message id's length (one
// byte), the id, and the event as stored (JSON). Sequences only grow,
// across segments and restarts. Reading a segment stops at the first
// record that does not follow the one before: a torn append, the zeros
// past the end, or older records left from the segment's previous turn
// (those were all applied).
const (
	logHeader    = hitlog.HeaderSize
	logGrow      = hitlog.GrowStep // the file grows in zero-filled steps of this
	logMaxRecord = hitlog.MaxPayload
)

// logSegment is the size of each of the two segments (a variable for the
// tests).
var logSegment int64 = 8 << 20

// hitLog is the append side of the log; only the collector uses it after
// Open.
type hitLog struct {
	f    *os.File
	src  io.ReaderAt // f, read at open
	seg  int64       // segment size
	cur  int64       // the segment being written: 0 or 1
	off  int64       // where the next record goes in it
	last [2]uint64   // sequence of the last record written to each segment
	size int64       // bytes of the file that exist (records or zeros)
	seq  uint64      // sequence of the last record appended
	buf  []byte
	// broken: a write or sync failed, after which the file's state is
	// unknown; the log is not used again until the store reopens.
	broken bool
	// free waits, briefly, until the log is applied up to seq, and says
	// whether it is.
	free func(seq uint64) bool
}

// logRecord is an event read back from the log.
type logRecord struct {
	seq uint64
	req *eventReq
}

// openHitLog opens (creating if needed) the log at path and returns the
// records after applied, in order.
func openHitLog(path string, applied uint64) (*hitLog, []logRecord, error) {
	_, err := os.Stat(path)
	created := errors.Is(err, fs.ErrNotExist)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, err
	}
	if created {
		// The new name must survive a power loss as the records will.
		if err := durable.SyncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	l := &hitLog{f: f, src: f, seg: logSegment, size: fi.Size(), seq: applied}
	recs, err := l.read(applied)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if n := len(recs); n > 0 {
		l.seq = recs[n-1].seq
	}
	return l, recs, nil
}

// read returns the records after applied, in order: from applied+1 on,
// as far as they follow one another.
func (l *hitLog) read(applied uint64) ([]logRecord, error) {
	var all []logRecord
	for seg := range int64(2) {
		recs, err := l.readSegment(seg, applied)
		if err != nil {
			return nil, err
		}
		all = append(all, recs...)
	}
	slices.SortFunc(all, func(a, b logRecord) int { return cmp.Compare(a.seq, b.seq) })
	for i := range all {
		if all[i].seq != applied+1+uint64(i) {
			return all[:i], nil
		}
	}
	return all, nil
}

// readSegment returns the records of a segment past applied, as far as
// each one follows the one before.
func (l *hitLog) readSegment(seg int64, applied uint64) ([]logRecord, error) {
	var recs []logRecord
	base := seg * l.seg
	_, err := hitlog.ReadRun(l.src, base, min(base+l.seg, l.size), func(seq uint64, p []byte) error {
		if seq <= applied {
			return nil
		}
		r, err := decodeLogPayload(p)
		if err != nil {
			// The checksum matched what was written: a record this build
			// cannot read is a bug, not a torn write.
			return fmt.Errorf("log record %d: %w", seq, err)
		}
		recs = append(recs, logRecord{seq: seq, req: r})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return recs, nil
}

func decodeLogPayload(p []byte) (*eventReq, error) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return nil, errors.New("short record")
	}
	id := string(p[1 : 1+p[0]])
	value := p[1+p[0]:]
	var se storedEvent
	if err := json.Unmarshal(value, &se); err != nil {
		return nil, err
	}
	return &eventReq{
		ev: store.Event{Type: se.Type, At: se.At, Message: id, Recipient: se.Recipient, Link: se.Link, URL: se.URL,
			IP: se.IP, UserAgent: se.UserAgent, Client: se.Client, Country: se.Country, City: se.City,
			Class: se.Class, Reasons: se.Reasons},
		value: value,
	}, nil
}

// append writes the events of reqs (the requests without fn) as records,
// moving to the other segment when the current one is full, and syncs
// them; it returns the sequence of the last one. It writes nothing, and
// returns 0 and an error, if it cannot move to the other segment (not yet
// applied), or if the batch would need a third. If a write or the sync
// fails, the log is broken: append returns the sequence the records were
// given (never to be used again, and to be recorded by the commit that
// stores these events instead) with the error, and fails from then on.
func (l *hitLog) append(reqs []*eventReq) (uint64, error) {
	if l.broken {
		return 0, errors.New("hit log unusable since an earlier write failed")
	}
	b := l.buf[:0]
	from, seq := l.seq, l.seq
	cur, off := l.cur, l.off
	split, splitSeq := -1, uint64(0) // where in b the other segment starts
	for _, r := range reqs {
		if r.fn != nil {
			continue
		}
		id, value := r.ev.Message, r.value
		n := int64(logHeader + 1 + len(id) + len(value))
		if len(id) > 255 || n-logHeader > logMaxRecord {
			return 0, fmt.Errorf("event too large for the log (%d bytes)", len(value))
		}
		if off+n > l.seg {
			if split >= 0 || !l.free(l.last[1-cur]) {
				return 0, errors.New("hit log full: its other segment is not yet in the store")
			}
			split, splitSeq = len(b), seq
			cur, off = 1-cur, 0
		}
		seq++
		var start int
		b, start = hitlog.BeginRecord(b, seq)
		b = append(b, byte(len(id)))
		b = append(b, id...)
		b = append(b, value...)
		b = hitlog.EndRecord(b, start)
		off += n
	}
	l.buf = b
	if seq == l.seq {
		return seq, nil
	}
	first, rest := b, []byte(nil)
	if split >= 0 {
		first, rest = b[:split], b[split:]
	}
	err := l.writeAt(first, l.cur*l.seg+l.off)
	if err == nil && rest != nil {
		err = l.writeAt(rest, cur*l.seg)
	}
	if f := syncFault.Load(); err == nil && f != nil {
		err = (*f)()
	}
	if err == nil {
		err = hitlog.Datasync(l.f)
	}
	if err != nil {
		l.broken, l.seq = true, seq
		return seq, err
	}
	if split >= 0 {
		l.last[l.cur] = splitSeq
	}
	l.cur, l.off, l.seq = cur, off, seq
	l.last[cur] = seq
	for _, r := range reqs {
		if r.fn == nil {
			from++
			r.seq = from
		}
	}
	if cap(l.buf) > 4*logGrow {
		l.buf = nil // a burst's buffer is not kept
	}
	return seq, nil
}

func (l *hitLog) writeAt(b []byte, at int64) error {
	if len(b) == 0 {
		return nil
	}
	if err := l.grow(at + int64(len(b))); err != nil {
		return err
	}
	_, err := l.f.WriteAt(b, at)
	return err
}

// grow makes the file at least end bytes long (hitlog.Grow).
func (l *hitLog) grow(end int64) error {
	size, err := hitlog.Grow(l.f, l.size, end)
	l.size = size
	return err
}

func (l *hitLog) close() error { return l.f.Close() }
