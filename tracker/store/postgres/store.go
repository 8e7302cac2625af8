package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Defaults of Options.
const (
	DefaultMaxConnections = 16
	DefaultMaxBatch       = 512
	// DefaultCommitters is 2: fewer committers make bigger batches, and
	// a batch's round trips and per-statement work cost more than its
	// rows (BenchmarkAddEvent: 34 events a batch and +36 % events/s
	// against 4; docs/performance.md).
	DefaultCommitters            = 2
	DefaultMaxEventsPerRecipient = 100
	DefaultConnectTimeout        = 10 * time.Second
	// DefaultFeedWait bounds how long Feed waits for the transactions
	// running when it is called to end, so that it shows what this node
	// committed before (see Feed).
	DefaultFeedWait = 2 * time.Second
	// DefaultOutboxLease is how long OutboxDue claims the webhook
	// deliveries it returns.
	DefaultOutboxLease = 5 * time.Minute
	// commitTimeout bounds a batch's commit: a database that stopped
	// answering (a network partition, a hung server) fails it, which
	// sends the hits to the hit log and opens the circuit.
	commitTimeout = 10 * time.Second
)

// Options tunes a Store. Zero fields take the defaults.
type Options struct {
	// MaxConnections is the size of the connection pool; at least 2
	// (smaller values are raised), as the maintenance leader holds one.
	MaxConnections int32
	// MaxBatch is the most events committed in one transaction.
	MaxBatch int
	// Committers is how many batches of events may be committing at once.
	Committers int
	// MaxEventsPerRecipient is how many events of one copy are kept in
	// detail; later ones only add to its counts.
	MaxEventsPerRecipient int
	// WebhookAccounts are the accounts whose feed entries are also queued
	// in the webhook outbox.
	WebhookAccounts []string
	// ScannerWindow is tracking.scanner_window: the copy's hits from the
	// address of a hit on its honeypot link within this of it are the same
	// machine's (classify.NearHoneypot). Zero means
	// classify.DefaultScannerWindow; negative marks none.
	ScannerWindow time.Duration
	// Metrics receives commit latency and batch size; nil records nothing.
	Metrics *store.Metrics
	// ConnectTimeout bounds the first connection at Open.
	ConnectTimeout time.Duration
	// FeedWait: see DefaultFeedWait.
	FeedWait time.Duration
	// OutboxLease: see DefaultOutboxLease.
	OutboxLease time.Duration
	// Retention, when positive, deletes events and feed entries older
	// than this (tracking.retention); their counts stay (maintenance.go).
	Retention time.Duration
	// MaintenanceInterval is how often the fleet's maintenance leader runs
	// the maintenance tasks: DefaultMaintenanceInterval when zero.
	MaintenanceInterval time.Duration
	// LeaderPoll is how often a node tries to become the maintenance
	// leader, and the leader checks that it still is: DefaultLeaderPoll
	// when zero.
	LeaderPoll time.Duration
	// OutboxPurgeAfter: see DefaultOutboxPurgeAfter.
	OutboxPurgeAfter time.Duration
	// Logger receives maintenance errors, leadership changes and the
	// fallback's state changes; nil discards.
	// HitLogDir is the directory of the node's hit log, where hits go
	// when their commit fails or is slow (see FallbackAfter) and while
	// the database is unreachable, to be shipped when it is back. Set, a
	// database unreachable at Open is no error: the store opens, its hits
	// go to the log, and it connects in the background. Unset, AddEvent
	// returns its commit's error and Open fails without a database.
	HitLogDir string
	// FallbackAfter: see DefaultFallbackAfter.
	FallbackAfter time.Duration
	// ProbeInterval: see DefaultProbeInterval.
	ProbeInterval time.Duration
	Logger        *slog.Logger
}

// Store is the PostgreSQL store.Store, shared by the nodes of a fleet.
// Hits are taken by committer goroutines in batches (group commit): the
// hits waiting when a committer is free are classified against the
// copies' history read from the database and written in one transaction,
// and each AddEvent returns once its batch has committed.
type Store struct {
	pool    *pgxpool.Pool
	opts    Options
	where   string // host:port/database, in errors
	storeID string // hex, in event and feed ids; the same on every node
	// ready: connect has succeeded (schema checked, storeID read); until
	// then the pool serves connect only.
	ready    atomic.Bool
	initMu   sync.Mutex
	fb       *fallback // nil without Options.HitLogDir
	webhooks map[string]bool
	webhookL []string

	mu          sync.RWMutex // guards closed and spillClosed against sends on reqs and fb.spills
	closed      bool
	spillClosed bool
	reqs        []chan *eventReq // a committer's each: a message's hits go to one (committerOf)
	recs        chan *recordReq  // PutMessage and SetLinks (records.go)
	hitReads    chan *readReq    // Message and Delivery (hitreads.go)
	hitMessages messageMemory    // HitMessage's (hitreads.go)
	workers     sync.WaitGroup
	once        sync.Once
	wake        chan struct{}

	lastXid atomic.Uint64 // newest transaction of this store that wrote feed entries
	seqHint atomic.Int64  // highest value of events_seq seen (locks.go)
	atCap   capMemory     // copies seen at the cap (locks.go)
	// exclusiveRetries counts batches committed again with exclusive
	// locks (locks.go).
	exclusiveRetries atomic.Int64

	log       *slog.Logger
	leader    atomic.Bool        // this store holds the maintenance lock
	maintStop context.CancelFunc // ends the maintenance goroutine
	maintDone sync.WaitGroup

	searchIndexed atomic.Bool // messages have their trigram index (migrate)

	// beforeCommit, set by tests only, runs in an event batch's
	// transaction just before its commit.
	beforeCommit atomic.Pointer[func()]
	// beforeRecordCommit, likewise, in a batch of records.
	beforeRecordCommit atomic.Pointer[func()]
	// beforeReadGroup, set by tests only, runs before a group of hits'
	// reads goes to the database, with the group's size.
	beforeReadGroup atomic.Pointer[func(int)]
}

var (
	_ store.Store          = (*Store)(nil)
	_ store.DeliveryReader = (*Store)(nil)
	_ store.HitReader      = (*Store)(nil)
	_ store.Outbox         = (*Store)(nil)
)

// eventReq is one AddEvent waiting for its batch.
type eventReq struct {
	ev   store.Event
	hit  string // uuid minted for the hit
	done chan error
	// spilled: the hit went to the hit log; a committer that has not
	// taken it yet leaves it to the shipper.
	spilled atomic.Bool
	cause   string     // why it spilled
	logged  chan error // the hit log's answer
	fromLog bool       // shipped from the hit log: it may be stored already
}

// Open connects to the database named by dsn (a PostgreSQL connection URI
// or keyword/value string), migrates its schema under an advisory lock,
// and starts the committers. A database whose schema is newer than this
// build's is refused (ErrSchemaNewer). With Options.HitLogDir set, it
// opens the hit log and starts shipping what it holds; a database that
// cannot be reached then (network, server starting or stopping) is no
// error: the store opens without it, logs hits, and connects in the
// background. A database that answers with an error (wrong password,
// unknown database, newer schema) always fails Open.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	// The maintenance lock holds a connection: hits need another.
	opts.MaxConnections = max(opts.MaxConnections, 2)
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Committers <= 0 {
		opts.Committers = DefaultCommitters
	}
	if opts.MaxEventsPerRecipient <= 0 {
		opts.MaxEventsPerRecipient = DefaultMaxEventsPerRecipient
	}
	if opts.ScannerWindow == 0 {
		opts.ScannerWindow = classify.DefaultScannerWindow
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.FeedWait <= 0 {
		opts.FeedWait = DefaultFeedWait
	}
	if opts.OutboxLease <= 0 {
		opts.OutboxLease = DefaultOutboxLease
	}
	if opts.FallbackAfter <= 0 {
		opts.FallbackAfter = DefaultFallbackAfter
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = DefaultProbeInterval
	}
	if opts.MaintenanceInterval <= 0 {
		opts.MaintenanceInterval = DefaultMaintenanceInterval
	}
	if opts.LeaderPoll <= 0 {
		opts.LeaderPoll = DefaultLeaderPoll
	}
	if opts.OutboxPurgeAfter <= 0 {
		opts.OutboxPurgeAfter = DefaultOutboxPurgeAfter
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger
	}
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = opts.MaxConnections
	s := &Store{
		opts:     opts,
		where:    fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database),
		webhooks: map[string]bool{},
		recs:     make(chan *recordReq, 4*opts.MaxBatch),
		hitReads: make(chan *readReq, 4*maxReadGroup),
		wake:     make(chan struct{}, 1),
		log:      opts.Logger,
	}
	cfg.PrepareConn = func(ctx context.Context, _ *pgx.Conn) (bool, error) {
		if s.ready.Load() || ctx.Value(initKey{}) != nil {
			return true, nil
		}
		return true, errNotConnected
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", s.where, err)
	}
	startErr := s.connect(ctx)
	if startErr != nil {
		if opts.HitLogDir == "" || !unreachable(startErr) {
			s.pool.Close()
			return nil, startErr
		}
	}
	for _, a := range opts.WebhookAccounts {
		if !s.webhooks[a] {
			s.webhooks[a] = true
			s.webhookL = append(s.webhookL, a)
		}
	}
	if s.webhookL == nil {
		s.webhookL = []string{}
	}
	if opts.HitLogDir != "" {
		if err := s.startFallback(); err != nil {
			s.pool.Close()
			return nil, err
		}
		if startErr != nil {
			s.setDown(fmt.Errorf("unreachable at start: %w", startErr))
		}
	}
	opts.Metrics.SetOutboxFunc(s.outboxLen)
	opts.Metrics.SetDatabaseFunc(s.dbStats)
	for range opts.Committers {
		reqs := make(chan *eventReq, 4*opts.MaxBatch)
		s.reqs = append(s.reqs, reqs)
		s.workers.Add(1)
		go s.commitLoop(reqs)
	}
	for range recordCommitters {
		s.workers.Add(1)
		go s.recordLoop()
	}
	for range hitReaders {
		s.workers.Add(1)
		go s.readLoop()
	}
	mctx, stop := context.WithCancel(context.Background())
	s.maintStop = stop
	s.maintDone.Add(1)
	go s.maintain(mctx)
	return s, nil
}

// SearchIndexed reports whether the database has the trigram index that
// speeds up Messages' search (the pg_trgm extension could be created).
// Without it a search reads the account's messages in order.
func (s *Store) SearchIndexed() bool { return s.searchIndexed.Load() }

// ParseDSN checks and parses a connection string, without connecting. Its
// error does not repeat the string, which may hold a password.
func ParseDSN(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres store: invalid DSN: %w", err)
	}
	return cfg, nil
}

// Close stops the committers, after committing the events and records they were given,
// then the hit log's spiller (after appending what it was given) and
// shipper, and closes the pool. What the log holds is shipped after the
// next Open. Later calls return nil.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		// The maintenance lock is given back first, for another node.
		s.maintStop()
		s.maintDone.Wait()
		s.mu.Lock()
		s.closed = true
		for _, reqs := range s.reqs {
			close(reqs)
		}
		close(s.recs)
		close(s.hitReads)
		s.mu.Unlock()
		s.workers.Wait()
		if s.fb != nil {
			s.mu.Lock()
			s.spillClosed = true
			close(s.fb.spills)
			s.mu.Unlock()
			close(s.fb.quit)
			s.fb.wg.Wait()
			err = s.fb.log.Close()
		}
		s.pool.Close()
	})
	return err
}

func (s *Store) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// AddEvent implements store.Store: it returns once the event's batch has
// committed, or, with a hit log (Options.HitLogDir), once the event is in
// the log because that commit failed or took FallbackAfter, or because the
// database is unreachable.
func (s *Store) AddEvent(ctx context.Context, e store.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validID(e.Message); err != nil {
		return err
	}
	if e.Recipient < 0 || int64(e.Recipient) > int64(^uint32(0)>>1) {
		return fmt.Errorf("postgres store: message %s: invalid recipient %d", e.Message, e.Recipient)
	}
	r := &eventReq{ev: e, hit: newUUID(), done: make(chan error, 1)}
	if s.fb != nil && s.isDown() {
		if s.isClosed() {
			return store.ErrClosed
		}
		r.spilled.Store(true)
		return s.spill(ctx, r, CauseUnreachable)
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return store.ErrClosed
	}
	select {
	case s.reqs[s.committerOf(e.Message)] <- r:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	var bound <-chan time.Time
	if s.fb != nil {
		t := time.NewTimer(s.opts.FallbackAfter)
		defer t.Stop()
		bound = t.C
	}
	select {
	case err := <-r.done:
		if err == nil || s.fb == nil {
			return err
		}
		return s.spill(ctx, r, CauseError)
	case <-bound:
		// The commit may still succeed: the shipper then finds the hit
		// stored, by its id, and stores nothing twice.
		r.spilled.Store(true)
		return s.spill(ctx, r, CauseSlow)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// committerOf is the committer of message's hits. Each message has one, so
// that the batches of a node's committers hold different messages and
// never wait for each other's locks (a batch of clicks or of copies under
// the cap locks its messages exclusively, locks.go); the batches of a busy
// message are serial on a node either way.
func (s *Store) committerOf(message string) int {
	return int(uint64(lockKey(message)) % uint64(len(s.reqs)))
}

// commitLoop is a committer: it takes the events waiting on reqs, up to
// MaxBatch, and commits them together. A failed commit opens the
// fallback's circuit.
func (s *Store) commitLoop(reqs chan *eventReq) {
	defer s.workers.Done()
	for first := range reqs {
		// A hit spilled already is the shipper's.
		batch := gather(first, reqs, s.opts.MaxBatch, func(r *eventReq) bool { return !r.spilled.Load() })
		if len(batch) == 0 {
			continue
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		err := s.commitEvents(ctx, batch)
		cancel()
		s.opts.Metrics.Committed(time.Since(start), len(batch))
		if err != nil {
			err = fmt.Errorf("postgres store: commit %d events: %w", len(batch), err)
			if s.fb != nil {
				s.setDown(err)
			}
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// gather returns first and the values waiting on ch, those keep accepts
// (all when keep is nil), up to limit of them: the group a committer, a
// reader or the spiller takes when it is free, so that work arriving
// while it was busy goes together, and an idle one takes one at once.
func gather[T any](first T, ch <-chan T, limit int, keep func(T) bool) []T {
	var group []T
	for v, ok := first, true; ok && len(group) < limit; {
		if keep == nil || keep(v) {
			group = append(group, v)
		}
		select {
		case v, ok = <-ch:
		default:
			ok = false
		}
	}
	return group
}

// newUUID returns a time-ordered UUID (version 7, RFC 9562: the unix time
// in milliseconds, then 74 random bits). Hits' ids are the key of a unique
// index: ids in time order are inserted at its right edge, where random
// ones (version 4) land on any page of it (a fifth of a bulk insert's time
// in a table of 100,000 events, more once the index outgrows memory).
func newUUID() string {
	var b [16]byte
	rand.Read(b[6:])
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (40 - 8*i))
	}
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// lockKey is the advisory lock of a message's writes: a batch of events, a
// report of the relay and an erasure of one message never interleave,
// on any node.
func lockKey(message string) int64 {
	h := fnv.New64a()
	h.Write([]byte("trackrelay message "))
	h.Write([]byte(message))
	return int64(h.Sum64())
}

// lockMessages takes the advisory locks of ids in one statement, in key
// order, so that two transactions never wait for each other's locks.
func lockMessages(ctx context.Context, tx pgx.Tx, ids ...string) error {
	_, err := tx.Exec(ctx, lockSQL, lockKeys(ids))
	return err
}

// lockSQL takes the advisory locks of its argument, lockKeys' keys.
const lockSQL = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) k"

// lockKeys returns the lock keys of ids, sorted and without repeats.
func lockKeys(ids []string) []int64 {
	keys := make([]int64, 0, len(ids))
	for _, id := range ids {
		keys = append(keys, lockKey(id))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// noteXid records that transaction xid (text) of this store wrote feed
// entries.
func (s *Store) noteXid(xid string) {
	x, err := strconv.ParseUint(xid, 10, 64)
	if err != nil {
		return
	}
	for {
		old := s.lastXid.Load()
		if x <= old || s.lastXid.CompareAndSwap(old, x) {
			return
		}
	}
}

// eventID and entryID name events and feed entries like bbolt's, with the
// database's id: every node names them the same.
func (s *Store) eventID(seq int64) string {
	return "ev_" + s.storeID + fmt.Sprintf("%016x", seq)
}

func (s *Store) entryID(prefix string, seq int64) string {
	return prefix + s.storeID + fmt.Sprintf("%016x", seq)
}

func (s *Store) wakeOutbox() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// OutboxAdded implements store.Outbox. It is woken by this node's writes;
// other nodes' entries are found by the sender's poll.
func (s *Store) OutboxAdded() <-chan struct{} { return s.wake }

func (s *Store) outboxLen() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var n int64
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		return 0
	}
	return float64(n)
}

func validID(id string) error {
	if id == "" || len(id) > 512 || strings.IndexByte(id, 0) >= 0 || !utf8.ValidString(id) {
		return fmt.Errorf("postgres store: invalid queue id %q", id)
	}
	return nil
}

// inTx runs fn in a transaction, committing it if fn returns nil.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	if s.isClosed() {
		return store.ErrClosed
	}
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// errorsIsNoRows reports a query that returned no row.
func errorsIsNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// Ping reports whether the store is open and the database answers, for
// readiness checks.
func (s *Store) Ping(ctx context.Context) error {
	if s.isClosed() {
		return store.ErrClosed
	}
	return s.pool.Ping(ctx)
}
