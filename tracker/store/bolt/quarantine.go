package bolt

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/trackrelay/trackrelay/internal/durable"
	"github.com/trackrelay/trackrelay/internal/guard"
)

// A hit whose commit to bbolt panics (a bug that this one record sets off)
// is set aside in the quarantine file, beside the hit log, and skipped: the
// store opens and goes on, and the commit that follows records the log's
// sequence past the hit, so a restart does not replay it again. The hit
// is appended and fsynced before that commit, so a crash in between
// replays it and sets it aside again, never loses it.
//
// The file is JSON lines, one QuarantinedHit each, only ever appended to;
// trackrelay never reads it. A line cut short by a crash is ended with a
// newline before the next one is written, and ReadQuarantine skips it.

// QuarantineSuffix is added to the store's path to name its quarantine
// file: tracking.db-quarantine.jsonl beside tracking.db and its hit log
// tracking.db-wal.
const QuarantineSuffix = "-quarantine.jsonl"

// QuarantinedHit is one line of the quarantine file.
type QuarantinedHit struct {
	// At is when the hit was set aside.
	At time.Time `json:"quarantined_at"`
	// Component is where its commit panicked: "applier" (while serving) or
	// "replay" (replaying the hit log at start).
	Component string `json:"component"`
	// Seq is the hit's sequence in the hit log; 0 when it was not logged
	// (the log had failed and the hit went to the store directly).
	Seq uint64 `json:"seq,omitempty"`
	// Message is the queue id of the message hit.
	Message string `json:"message"`
	// Event is the hit as the store keeps it, the same JSON as in the hit
	// log: t type, at time, r recipient index, l link index (-1 for an
	// open), u destination, ip, ua user agent, cl client, cc country,
	// ci city, c class, why reasons.
	Event json.RawMessage `json:"event"`
	// Panic is the panic's value; its stack is in the error log line
	// "recovered a panic" of the same moment.
	Panic string `json:"panic"`
}

// ReadQuarantine returns the hits of the quarantine file at path, in the
// order they were set aside. A missing file holds none; a line cut short
// by a crash is skipped (its hit was replayed and set aside again).
func ReadQuarantine(path string) ([]QuarantinedHit, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var hits []QuarantinedHit
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4*logMaxRecord)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var q QuarantinedHit
		if json.Unmarshal(line, &q) != nil {
			continue
		}
		hits = append(hits, q)
	}
	return hits, sc.Err()
}

// quarantine sets r, an event whose commit panicked, aside in the
// quarantine file. If the file cannot be written, the hit is logged in
// full and counted as lost. Only the applier (and the replay at open,
// before it starts) calls it.
func (s *Store) quarantine(component string, r *eventReq, p *guard.Panic) {
	ev := json.RawMessage(r.value)
	if !json.Valid(ev) {
		ev, _ = json.Marshal(string(r.value))
	}
	line, err := json.Marshal(QuarantinedHit{At: time.Now().UTC(), Component: component, Seq: r.seq,
		Message: r.ev.Message, Event: ev, Panic: fmt.Sprint(p.Value)})
	if err == nil {
		err = appendSynced(s.path+QuarantineSuffix, append(line, '\n'))
	}
	if err != nil {
		s.opts.Metrics.Lost()
		if s.opts.Logger != nil {
			s.opts.Logger.Error("tracker: hit whose commit panicked is lost: the quarantine file cannot be written",
				"file", s.path+QuarantineSuffix, "hit", string(line), "err", err)
		}
		return
	}
	if s.opts.Logger != nil {
		s.opts.Logger.Error("tracker: hit whose commit panicked is set aside in the quarantine file",
			"file", s.path+QuarantineSuffix, "msg", r.ev.Message, "seq", r.seq)
	}
}

// appendSynced appends b to the file at path, creating it, and syncs it
// (and the directory, when it creates the file). If the file does not end
// with a newline (a crash cut its last line short), one goes first.
func appendSynced(path string, b []byte) (err error) {
	_, serr := os.Stat(path)
	created := errors.Is(serr, fs.ErrNotExist)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err != nil {
			return err
		}
		if last[0] != '\n' {
			b = append([]byte{'\n'}, b...)
		}
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if created {
		return durable.SyncDir(filepath.Dir(path))
	}
	return nil
}

// panicLogger returns the store's logger for guard: the Logger itself when
// it is a *slog.Logger (as cmd's is), slog's default logger for another
// kind, and a discarding one for none, as the option says.
func panicLogger(l any) *slog.Logger {
	switch l := l.(type) {
	case *slog.Logger:
		if l != nil {
			return l
		}
	case nil:
	default:
		return slog.Default()
	}
	return slog.New(slog.DiscardHandler)
}
