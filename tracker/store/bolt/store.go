package bolt

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/internal/durable"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Defaults of Options.
const (
	DefaultMaxBatch                 = 1024
	DefaultLockTimeout              = 5 * time.Second
	DefaultReportDelay              = 10 * time.Millisecond
	DefaultMaxCommitDelay           = 2 * time.Millisecond
	commitSiblings                  = 4 // the last batch's size that means "under load"
	DefaultMaxEventsPerRecipient    = 100
	DefaultRetentionInterval        = time.Hour
	defaultQueueLen                 = 4096
	retentionChunk                  = 2000
	retentionScan                   = 50000
	feedKindOpen, feedKindClick     = store.EventOpen, store.EventClick
	feedKindDelivery, feedKindRecls = store.EventDelivery, store.EventReclassified
)

// Options tunes a Store. Zero fields take the defaults.
type Options struct {
	// MaxBatch is the most events committed in one transaction.
	MaxBatch int
	// MaxCommitDelay bounds how long the collector, under load, waits for
	// hits to join a batch before it logs them: twice as long as the last
	// append took, at most this. It waits only when the last batch had
	// commitSiblings writes or more, so a lone hit is logged at once.
	// Negative: never.
	MaxCommitDelay time.Duration
	// ReportDelay is how long the relay's reports (PutMessage, SetLinks,
	// SetDelivery), when no hit is waiting, wait for more writes to share
	// their commit. Negative: none.
	ReportDelay time.Duration
	// MaxEventsPerRecipient is how many events are kept in detail per
	// recipient copy; later ones only increase its counters, so that a
	// script hammering one pixel cannot fill the disk.
	MaxEventsPerRecipient int
	// CacheSize is the number of messages kept in memory for classifying
	// hits without a read transaction.
	CacheSize int
	// Retention, when positive, deletes events (and feed entries) older
	// than this, checking every RetentionInterval. Counters stay.
	Retention         time.Duration
	RetentionInterval time.Duration
	// WebhookAccounts are the accounts whose feed entries are also queued
	// in the durable webhook outbox.
	WebhookAccounts []string
	// Metrics receives commit latency and batch size; nil records nothing.
	Metrics *store.Metrics
	// LockTimeout bounds the wait for the database file lock, held by any
	// other process that has the file open.
	LockTimeout time.Duration
	// Logger receives background errors (retention, the hit log, events
	// lost after they were answered, panics recovered with their stacks,
	// hits set aside in the quarantine file) and, at info level, how many
	// hits a start replayed from the hit log; nil discards. A Logger that
	// is not a *slog.Logger gets everything but the recovered panics, which
	// go to slog's default logger.
	Logger interface {
		Error(msg string, args ...any)
		Info(msg string, args ...any)
	}
}

// Store is the embedded store.Store, in one bbolt file and its hit log
// (path + "-wal"). Events, and the relay's reports of messages and
// deliveries, are taken by one collector goroutine in batches (group
// commit): the events of a batch are appended to the log with one
// fdatasync and answered; the applier then commits batches to bbolt in
// order, events every 20 ms and reports at once (see apply). A hit whose
// commit panics is set aside in the quarantine file (path +
// QuarantineSuffix) and skipped.
type Store struct {
	db       *bbolt.DB
	opts     Options
	storeID  string // hex, in event and feed ids
	cache    *metaCache
	webhooks map[string]bool
	reqs     chan *eventReq
	closing  chan struct{}
	stopped  chan struct{}
	bg       sync.WaitGroup
	closeErr error
	once     sync.Once
	commits  atomic.Int64
	outboxN  atomic.Int64
	path     string
	alloc    int64         // bytes of the file known to be preallocated
	wake     chan struct{} // an outbox entry was added
	panicLog *slog.Logger  // where guard logs a recovered panic

	log         *hitLog         // the hit log, appended by the collector
	applyCh     chan applyBatch // collector -> applier, in order
	applierDone chan struct{}   // closed when the applier has committed everything
	kick        chan struct{}   // asks the applier to commit now
	logged      atomic.Uint64   // last log sequence appended and answered
	applied     atomic.Uint64   // last log sequence committed to bbolt
	appliedMu   sync.Mutex      // guards appliedCh
	appliedCh   chan struct{}   // closed, and replaced, when applied moves
}

var _ store.Store = (*Store)(nil)
var _ store.DeliveryReader = (*Store)(nil)

// Open opens (creating if needed) the bbolt store at path and starts its
// event collector. It fails if another process holds the file for longer
// than opts.LockTimeout.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.ReportDelay == 0 {
		opts.ReportDelay = DefaultReportDelay
	}
	if opts.MaxCommitDelay == 0 {
		opts.MaxCommitDelay = DefaultMaxCommitDelay
	}
	if opts.MaxEventsPerRecipient <= 0 {
		opts.MaxEventsPerRecipient = DefaultMaxEventsPerRecipient
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.RetentionInterval <= 0 {
		opts.RetentionInterval = DefaultRetentionInterval
	}
	// The freelist is rebuilt on open rather than written by every commit.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.LockTimeout, NoFreelistSync: true,
		FreelistType: bbolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("tracker: open store %s: %w", path, err)
	}
	// bbolt syncs the file, not its name: a store made now must survive a
	// power loss as its commits will.
	if err := durable.SyncDir(filepath.Dir(path)); err != nil {
		db.Close()
		return nil, fmt.Errorf("tracker: open store %s: %w", path, err)
	}
	var storeID []byte
	var outboxN int
	var logApplied uint64
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if storeID = bytes.Clone(meta.Get([]byte("id"))); storeID == nil {
			storeID = make([]byte, 8)
			if _, err := rand.Read(storeID); err != nil {
				return err
			}
			if err := meta.Put([]byte("id"), storeID); err != nil {
				return err
			}
		}
		if err := buildBrowse(tx); err != nil {
			return err
		}
		outboxN = tx.Bucket(bucketOutbox).Stats().KeyN
		if v := meta.Get(metaLogKey); len(v) == 8 {
			logApplied = binary.BigEndian.Uint64(v)
		}
		return putMark(tx, time.Now())
	})
	if err != nil {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("tracker: init store %s: %w", path, err)
	}
	s := &Store{
		db:       db,
		opts:     opts,
		storeID:  hex.EncodeToString(storeID),
		cache:    newMetaCache(opts.CacheSize),
		webhooks: map[string]bool{},
		reqs:     make(chan *eventReq, defaultQueueLen),
		closing:  make(chan struct{}),
		stopped:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
		path:     path,
		panicLog: panicLogger(opts.Logger),

		applyCh:     make(chan applyBatch, applyQueueLen),
		applierDone: make(chan struct{}),
		kick:        make(chan struct{}, 1),
		appliedCh:   make(chan struct{}),
	}
	s.preallocate(0)
	s.outboxN.Store(int64(outboxN))
	for _, a := range opts.WebhookAccounts {
		s.webhooks[a] = true
	}
	// After the webhooks: replayed hits go to the outbox like live ones.
	if err := s.openLog(path+"-wal", logApplied); err != nil {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("tracker: hit log of %s: %w", path, err)
	}
	opts.Metrics.SetOutboxFunc(func() float64 { return float64(s.outboxN.Load()) })
	go s.collect()
	go s.apply()
	if opts.Retention > 0 {
		s.bg.Add(1)
		go s.retentionLoop()
	}
	return s, nil
}

// Preallocation of the database file, ahead of its use.
const (
	preallocAhead = 64 << 20
	preallocMin   = 16 << 20
)

// preallocate keeps at least preallocMin bytes allocated past used; only
// the collector calls it after Open. Failing is harmless (commits are
// slower), so it is only logged.
func (s *Store) preallocate(used int64) {
	if used+preallocMin <= s.alloc {
		return
	}
	want := used + preallocAhead
	if fi, err := os.Stat(s.path); err == nil && fi.Size() > want {
		want = fi.Size()
	}
	if err := preallocate(s.path, want); err != nil {
		if s.opts.Logger != nil {
			s.opts.Logger.Error("tracker: preallocate store file", "err", err)
		}
		s.alloc = 1 << 62 // do not retry
		return
	}
	s.alloc = want
}

// Close stops the collector, after committing the events it has been
// given, stops the background sweep and closes the database. Later calls
// return the first call's result.
func (s *Store) Close() error {
	s.once.Do(func() {
		close(s.closing)
		<-s.stopped
		<-s.applierDone
		s.bg.Wait()
		s.closeErr = errors.Join(s.db.Close(), s.log.close())
	})
	return s.closeErr
}

// Commits returns how many bbolt write transactions the store has run since
// it opened: set against the writes it took, how well commits are shared.
func (s *Store) Commits() int64 { return s.commits.Load() }
