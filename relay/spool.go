package relay

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/internal/durable"
)

// Delivery states of one recipient copy, as the API shows them: the
// relay's names for the shared set of internal/delivery.
const (
	StatusQueued    = delivery.Queued
	StatusDeferred  = delivery.Deferred
	StatusDelivered = delivery.Delivered
	StatusBounced   = delivery.Bounced
	// StatusHeld is a copy whose job panicked (see delivery.Held).
	StatusHeld = delivery.Held
)

// heldResponse is the last response of a held copy. What went wrong is in
// the log only: the API shows this text to the app.
const heldResponse = "held after an internal error of the relay; waiting for the operator to retry it"

// Envelope is the spool record of one accepted message: who sent it, to
// whom, and where each recipient's copy stands.
type Envelope struct {
	ID        string `json:"id"`
	Account   string `json:"account"`
	From      string `json:"from"`
	MessageID string `json:"message_id"`
	// Subject is the message's Subject, decoded (RFC 2047) and bounded
	// (package subject); "" when it has none, or in a spool written before
	// it was kept.
	Subject    string      `json:"subject,omitempty"`
	Mode       string      `json:"mode"`
	SubmitIP   string      `json:"submit_ip"`
	AcceptedAt time.Time   `json:"accepted_at"`
	Size       int64       `json:"size"`
	Recipients []Recipient `json:"recipients"`
	// Bounce marks a delivery status notification made by the relay: it is
	// sent with an empty envelope sender and never bounced itself.
	Bounce bool `json:"bounce,omitempty"`
	// SMTPUTF8: the client gave the SMTPUTF8 parameter on MAIL (RFC 6531),
	// so the envelope and the header fields, at any level of the MIME
	// structure, may be UTF-8. Each copy is sent with SMTPUTF8 to an
	// upstream that offers it; to one that does not, only a copy with
	// nothing non-ASCII in them goes (a domain in A-label form), and any
	// other bounces. It is kept because nothing else tells it once the
	// session is over: what needs the parameter is read from the copy.
	SMTPUTF8 bool `json:"smtputf8,omitempty"`
	// Owed are the reports the ledger had not acknowledged when the record
	// was written (see owed.go): given again after a restart.
	Owed []LedgerReport `json:"owed,omitempty"`
}

// Recipient is the state of one recipient's copy: a delivery job of its own.
type Recipient struct {
	Address      string          `json:"address"`
	Tracked      bool            `json:"tracked"`
	Status       delivery.Status `json:"status"`
	Attempts     int             `json:"attempts"`
	NextAttempt  time.Time       `json:"next_attempt"`
	LastResponse string          `json:"last_response,omitempty"`
	UpdatedAt    time.Time       `json:"updated_at"`
	// Warned records that a "delayed" notice went to the sender.
	Warned bool `json:"warned,omitempty"`
}

// Held reports whether the copy waits for the operator (see StatusHeld).
func (r *Recipient) Held() bool { return r.Status == StatusHeld }

// Final reports whether the copy needs no more attempts.
func (r *Recipient) Final() bool { return r.Status.Final() }

// Done reports whether every copy of the message is final.
func (e *Envelope) Done() bool {
	for i := range e.Recipients {
		if !e.Recipients[i].Final() {
			return false
		}
	}
	return true
}

var queueBucket = []byte("queue")

// ledgerBucket keeps the records of messages that left the queue with
// reports owed to the ledger, until they are given (Settle).
var ledgerBucket = []byte("ledger")

// ErrNoSuchMessage is returned for a queue id the spool does not hold.
var ErrNoSuchMessage = errors.New("relay: no such message in the spool")

// Spool is the durable queue: one file per message under msg/, and one
// bbolt record per message in queue.db. A message is durable once its file
// and the directory are fsynced and its record is committed, in that order;
// a file without a record is an orphan of a crash and removed at start-up.
type Spool struct {
	dir    string
	msgDir string
	db     *bolt.DB
	log    *slog.Logger
	group  *groupCommitter // concurrent writers share commits

	// mu serialises read-modify-write of records within this process.
	mu sync.Mutex

	// writeFault, when set, fails every message write: the tests' stand-in
	// for a full or failing disk.
	writeFault error
}

// OpenSpool opens (creating if needed) the spool in dir.
func OpenSpool(dir string, log *slog.Logger) (*Spool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	msgDir := filepath.Join(dir, "msg")
	if err := durable.MkdirAll(msgDir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "queue.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second,
		// The freelist is rebuilt at open instead of written at every commit:
		// the queue deletes as much as it adds, and commits are on the path
		// of every 250.
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("spool: open queue.db: %w (is another trackrelay running on this data_dir?)", err)
	}
	// bbolt syncs the file, not its name.
	if err := durable.SyncDir(dir); err != nil {
		db.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(queueBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(ledgerBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	return &Spool{dir: dir, msgDir: msgDir, db: db, log: log,
		group: &groupCommitter{db: db, dir: msgDir, lazyDelay: recordDelay, log: log}}, nil
}

// Close closes the record store.
func (s *Spool) Close() error { return s.db.Close() }

// NewID returns a fresh queue id: sortable by time, 16 characters of
// base32hex, unique without coordination.
func NewID() string {
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMicro())<<8)
	if _, err := rand.Read(b[7:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}

func (s *Spool) path(id string) string { return filepath.Join(s.msgDir, id+".eml") }

// Incoming is a message being received: its bytes go straight to its spool
// file, which becomes durable with Commit or disappears with Abort.
type Incoming struct {
	s    *Spool
	id   string
	f    *os.File
	w    *bufio.Writer // header fields arrive a few bytes at a time
	size int64
	done bool
}

// Create starts a new message file.
func (s *Spool) Create() (*Incoming, error) {
	id := NewID()
	f, err := os.OpenFile(s.path(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: create message file: %w", err)
	}
	return &Incoming{s: s, id: id, f: f, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

// ID is the queue id the message will have.
func (in *Incoming) ID() string { return in.id }

// Write appends message bytes.
func (in *Incoming) Write(p []byte) (int, error) {
	if in.s.writeFault != nil {
		return 0, in.s.writeFault
	}
	n, err := in.w.Write(p)
	in.size += int64(n)
	return n, err
}

// Size is the number of bytes written so far.
func (in *Incoming) Size() int64 { return in.size }

// Abort discards the message.
func (in *Incoming) Abort() {
	if in.done {
		return
	}
	in.done = true
	in.f.Close()
	os.Remove(in.f.Name())
}

// Commit makes the message durable: fsync the file, fsync the directory,
// then commit the record; concurrent sessions share the last two. Only
// after Commit returns nil may the relay say 250.
func (in *Incoming) Commit(env *Envelope) error {
	if in.done {
		return errors.New("spool: message already committed or aborted")
	}
	env.ID = in.id
	env.Size = in.size
	err := in.w.Flush()
	if err == nil {
		err = in.f.Sync()
	}
	if cerr := in.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = in.s.putNew(env)
	}
	in.done = true
	if err != nil {
		os.Remove(in.f.Name())
		return fmt.Errorf("spool: commit %s: %w", in.id, err)
	}
	return nil
}

// Enqueue stores a message made by the relay itself (a bounce) durably.
func (s *Spool) Enqueue(env *Envelope, body []byte) error {
	in, err := s.Create()
	if err != nil {
		return err
	}
	if _, err := in.Write(body); err != nil {
		in.Abort()
		return fmt.Errorf("spool: write: %w", err)
	}
	return in.Commit(env)
}

func (s *Spool) put(env *Envelope) error {
	v, err := json.Marshal(env)
	if err != nil {
		return err
	}
	return s.group.update(env.ID, func(tx *bolt.Tx) error { return tx.Bucket(queueBucket).Put([]byte(env.ID), v) })
}

// putNew commits the record of a message whose file was just written: the
// directory's fsync, shared by the group, comes first.
func (s *Spool) putNew(env *Envelope) error {
	v, err := json.Marshal(env)
	if err != nil {
		return err
	}
	return s.group.updateNewFile(env.ID, func(tx *bolt.Tx) error { return tx.Bucket(queueBucket).Put([]byte(env.ID), v) })
}

// Get returns the record of a queued message.
func (s *Spool) Get(id string) (*Envelope, error) {
	var env *Envelope
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(queueBucket).Get([]byte(id))
		if v == nil {
			return ErrNoSuchMessage
		}
		env = new(Envelope)
		return json.Unmarshal(v, env)
	})
	return env, err
}

// List returns every message in the spool, oldest first.
func (s *Spool) List() ([]*Envelope, error) {
	var envs []*Envelope
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(queueBucket).ForEach(func(k, v []byte) error {
			env := new(Envelope)
			if err := json.Unmarshal(v, env); err != nil {
				return nil // set aside at the next start; Load logs it
			}
			envs = append(envs, env)
			return nil
		})
	})
	sort.Slice(envs, func(i, j int) bool { return envs[i].AcceptedAt.Before(envs[j].AcceptedAt) })
	return envs, err
}

// Update applies fn to the record of id and stores the result durably.
func (s *Spool) Update(id string, fn func(*Envelope) error) (*Envelope, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	env, err := s.Get(id)
	if err != nil {
		return nil, err
	}
	if err := fn(env); err != nil {
		return nil, err
	}
	return env, s.put(env)
}

// recordDelay is how long the outcome of a delivery attempt may wait for
// the commit of another write (a newly accepted message) before it
// commits alone: a few milliseconds more per delivery, against two
// fdatasyncs of queue.db per delivered copy on a busy relay.
const recordDelay = 10 * time.Millisecond

// Record stores the state of copy idx of id durably, in a grouped commit
// that may wait up to recordDelay for company, with the reports owed to
// the ledger that owed returns (nil: none). When every copy is then final,
// the record is deleted in the same transaction and the message file
// removed after it: done reports that; and owing that the record went to
// the ledger bucket instead, with the owed reports, until Settle.
func (s *Spool) Record(id string, idx int, rc Recipient, owed func() []LedgerReport) (done, owing bool, err error) {
	err = s.group.updateLazy(id, func(tx *bolt.Tx) error {
		owing = false // a group's write may run twice
		b := tx.Bucket(queueBucket)
		v := b.Get([]byte(id))
		if v == nil {
			return ErrNoSuchMessage
		}
		env := new(Envelope)
		if err := json.Unmarshal(v, env); err != nil {
			return err
		}
		if idx >= len(env.Recipients) {
			return fmt.Errorf("spool: %s has no recipient %d", id, idx)
		}
		env.Recipients[idx] = rc
		if owed != nil {
			env.Owed = owed()
		}
		done = env.Done()
		nv, err := json.Marshal(env)
		if err != nil {
			return err
		}
		if !done {
			return b.Put([]byte(id), nv)
		}
		if len(env.Owed) > 0 {
			owing = true
			if err := tx.Bucket(ledgerBucket).Put([]byte(id), nv); err != nil {
				return err
			}
		}
		return b.Delete([]byte(id))
	})
	if err != nil || !done {
		return done, owing, err
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return true, owing, err
	}
	return true, owing, nil
}

// Settle forgets the kept record of a message that left the queue once
// the ledger has taken its owed reports.
func (s *Spool) Settle(id string) error {
	return s.group.updateLazy(id, func(tx *bolt.Tx) error { return tx.Bucket(ledgerBucket).Delete([]byte(id)) })
}

// LoadOwed returns the kept records of messages that left the queue with
// reports owed to the ledger (their Owed), oldest first.
func (s *Spool) LoadOwed() ([]*Envelope, error) {
	var envs []*Envelope
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(ledgerBucket).ForEach(func(k, v []byte) error {
			env := new(Envelope)
			if err := json.Unmarshal(v, env); err != nil || env.ID != string(k) {
				s.log.Error("spool: unreadable record of reports owed to the ledger; skipped", "key", string(k), "err", err)
				return nil
			}
			envs = append(envs, env)
			return nil
		})
	})
	sort.Slice(envs, func(i, j int) bool { return envs[i].AcceptedAt.Before(envs[j].AcceptedAt) })
	return envs, err
}

// Hold sets the copies idxs of id (nil: all of them) that are neither
// final nor held yet to held, and returns the record as written and the
// copies it held. It changes the stored record within the transaction, so
// that an outcome recorded meanwhile for another copy is kept, and a copy
// that became final meanwhile stays final.
func (s *Spool) Hold(id string, idxs []int, at time.Time) (*Envelope, []int, error) {
	return s.updateCopies(id, func(i int, r *Recipient) bool {
		if r.Final() || r.Held() || (idxs != nil && !slices.Contains(idxs, i)) {
			return false
		}
		r.Status, r.LastResponse, r.UpdatedAt, r.NextAttempt = StatusHeld, heldResponse, at, time.Time{}
		return true
	})
}

// Release puts the held copies of id back in the queue, due at at, and
// returns the record as written and the copies it released.
func (s *Spool) Release(id string, at time.Time) (*Envelope, []int, error) {
	return s.updateCopies(id, func(_ int, r *Recipient) bool {
		if !r.Held() {
			return false
		}
		r.Status, r.UpdatedAt, r.NextAttempt = StatusQueued, at, at
		return true
	})
}

// updateCopies applies change to each copy of id in one transaction and
// returns the record and the copies that change reports it changed.
func (s *Spool) updateCopies(id string, change func(i int, r *Recipient) bool) (*Envelope, []int, error) {
	var env *Envelope
	var changed []int
	err := s.group.update(id, func(tx *bolt.Tx) error {
		env, changed = nil, nil // a group's write may run twice
		b := tx.Bucket(queueBucket)
		v := b.Get([]byte(id))
		if v == nil {
			return ErrNoSuchMessage
		}
		e := new(Envelope)
		if err := json.Unmarshal(v, e); err != nil {
			return err
		}
		for i := range e.Recipients {
			if change(i, &e.Recipients[i]) {
				changed = append(changed, i)
			}
		}
		env = e
		if len(changed) == 0 {
			return nil
		}
		nv, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), nv)
	})
	if err != nil {
		return nil, nil, err
	}
	return env, changed, nil
}

// Open opens the message file of id for reading.
func (s *Spool) Open(id string) (*os.File, error) {
	return os.Open(s.path(id))
}

// Remove deletes a message whose copies are all final: record first, so that
// a crash in between leaves an orphan file (removed at start-up), never a
// record without its message.
func (s *Spool) Remove(id string) error {
	_, err := s.RemoveOwing(id, nil)
	return err
}

// RemoveOwing is Remove for a message with the reports owed (nil: none)
// to the ledger: its record goes to the ledger bucket with them, in the
// same transaction, until Settle; owing reports that.
func (s *Spool) RemoveOwing(id string, owed []LedgerReport) (owing bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.group.update(id, func(tx *bolt.Tx) error {
		owing = false
		b := tx.Bucket(queueBucket)
		if len(owed) > 0 {
			if v := b.Get([]byte(id)); v != nil {
				env := new(Envelope)
				if err := json.Unmarshal(v, env); err == nil {
					env.Owed = owed
					nv, err := json.Marshal(env)
					if err != nil {
						return err
					}
					if err := tx.Bucket(ledgerBucket).Put([]byte(id), nv); err != nil {
						return err
					}
					owing = true
				}
			}
		}
		return b.Delete([]byte(id))
	}); err != nil {
		return false, err
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return owing, err
	}
	return owing, nil
}

// Load returns every queued message, removes orphan files left by a crash
// between writing a file and committing its record, and sets aside records
// that cannot be read (their message file is kept under corrupt/).
func (s *Spool) Load() ([]*Envelope, error) {
	var envs []*Envelope
	var bad [][]byte
	known := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(queueBucket).ForEach(func(k, v []byte) error {
			env := new(Envelope)
			if err := json.Unmarshal(v, env); err != nil || env.ID != string(k) {
				bad = append(bad, bytes.Clone(k))
				return nil
			}
			if _, err := os.Stat(s.path(env.ID)); err != nil {
				s.log.Error("spool record without message file; set aside", "queue_id", env.ID, "err", err)
				bad = append(bad, bytes.Clone(k))
				return nil
			}
			known[env.ID] = true
			envs = append(envs, env)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if len(bad) > 0 {
		if err := s.setAside(bad); err != nil {
			return nil, err
		}
	}
	entries, err := os.ReadDir(s.msgDir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".eml")
		if !ok || known[id] {
			continue
		}
		s.log.Warn("removing orphan spool file (never acknowledged)", "file", e.Name())
		if err := os.Remove(filepath.Join(s.msgDir, e.Name())); err != nil {
			return nil, err
		}
	}
	return envs, nil
}

// setAside moves unreadable records and their files to corrupt/ for the
// operator: never silently dropped. The copies are durable before the
// records are deleted, so a power loss cannot lose both.
func (s *Spool) setAside(keys [][]byte) error {
	dir := filepath.Join(s.dir, "corrupt")
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(queueBucket)
		for _, k := range keys {
			id := string(k)
			if err := durable.WriteFile(filepath.Join(dir, sanitizeName(id)+".record"), b.Get(k), 0o600); err != nil {
				return err
			}
			if err := os.Rename(s.path(id), filepath.Join(dir, sanitizeName(id)+".eml")); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		// The moved message files: their new names, then their old ones.
		if err := durable.SyncDir(dir); err != nil {
			return err
		}
		return durable.SyncDir(s.msgDir)
	})
}

func sanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}
