package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/hitlog"
)

// The fallback: a hit is answered after its batch commits in PostgreSQL,
// unless that commit fails or the hit has waited FallbackAfter for it;
// then the hit is appended to the node's hit log (package hitlog, in
// HitLogDir) and answered once that append is fdatasynced. A failed
// commit also opens the circuit: while it is open, hits go straight to the
// log, without waiting for a database that is not there. The shipper
// commits the log to PostgreSQL in order, in batches written exactly as
// direct ones (classification, feed entries, outbox rows, erased messages
// skipped), each hit with the id minted when it arrived, so that a hit
// both committed late and logged is stored once. A batch's segments are
// removed only after it commits; the shipper closes the circuit once the
// log is empty. At Open, the log left by the last run is the backlog.

// Defaults of the fallback's Options.
const (
	// DefaultFallbackAfter is how long a hit waits for its batch's commit
	// before it goes to the hit log instead.
	DefaultFallbackAfter = 200 * time.Millisecond
	// DefaultProbeInterval is how often the shipper tries the database
	// while it is unreachable or the log has hits.
	DefaultProbeInterval = time.Second
	// shipTimeout bounds one shipped batch's commit.
	shipTimeout = 30 * time.Second
)

// Causes of a hit taking the fallback, the values of the metric's label.
const (
	CauseError       = "error"       // its batch's commit failed
	CauseSlow        = "slow"        // its batch's commit took longer than FallbackAfter
	CauseUnreachable = "unreachable" // the circuit was open: a commit had failed
)

// errNotConnected fails what needs the database before the store has
// connected once (a node that started while PostgreSQL was down).
var errNotConnected = errors.New("postgres store: not connected yet (the database was unreachable at start)")

// initKey marks the context of connect, whose connections the pool lets
// through before the store is ready.
type initKey struct{}

// loggedHit is a hit as the hit log keeps it.
type loggedHit struct {
	Hit       string    `json:"h"`
	Type      string    `json:"t"`
	At        time.Time `json:"at"`
	Message   string    `json:"m"`
	Recipient int       `json:"r"`
	Link      int       `json:"l"`
	URL       string    `json:"u,omitempty"`
	IP        string    `json:"ip,omitempty"`
	UserAgent string    `json:"ua,omitempty"`
	Client    string    `json:"cl,omitempty"`
	Country   string    `json:"co,omitempty"`
	City      string    `json:"ci,omitempty"`
	Class     string    `json:"c,omitempty"`
	Reasons   []string  `json:"rs,omitempty"`
	// Classified without the message, and the client's full address
	// for the submitter rule (store.Event.WithoutMessage, ClientIP).
	WithoutMessage bool   `json:"wm,omitempty"`
	ClientIP       string `json:"cip,omitempty"`
}

func encodeHit(r *eventReq) ([]byte, error) {
	e := r.ev
	return json.Marshal(loggedHit{Hit: r.hit, Type: e.Type, At: e.At, Message: e.Message, Recipient: e.Recipient,
		Link: e.Link, URL: e.URL, IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Country: e.Country,
		City: e.City, Class: e.Class, Reasons: e.Reasons, WithoutMessage: e.WithoutMessage, ClientIP: e.ClientIP})
}

func decodeHit(p []byte) (*eventReq, error) {
	var h loggedHit
	if err := json.Unmarshal(p, &h); err != nil {
		return nil, err
	}
	return &eventReq{hit: h.Hit, fromLog: true, ev: store.Event{Type: h.Type, At: h.At, Message: h.Message, Recipient: h.Recipient,
		Link: h.Link, URL: h.URL, IP: h.IP, UserAgent: h.UserAgent, Client: h.Client, Country: h.Country,
		City: h.City, Class: h.Class, Reasons: h.Reasons, WithoutMessage: h.WithoutMessage, ClientIP: h.ClientIP}}, nil
}

// fallback is the hit log side of a Store; nil when Options.HitLogDir is
// unset.
type fallback struct {
	log    *hitlog.Log
	spills chan *eventReq
	wake   chan struct{} // the shipper's
	quit   chan struct{}
	wg     sync.WaitGroup

	open atomic.Bool // the circuit, as down, read by every hit

	mu         sync.Mutex
	down       bool // the circuit: a commit failed, the log is not yet shipped
	lastErr    error
	downLogged bool
	logErr     error // of the last append

	shipped uint64 // sequence shipped up to; the shipper's only
}

// unreachable reports whether err is the database being out of reach
// (network, server starting or stopping, too many connections) rather than
// a mistake of configuration (wrong password, unknown database) that no
// wait will mend.
func unreachable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "53", "57", "58":
			return true
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || pgconn.SafeToRetry(err) ||
		errors.As(err, new(*pgconn.ConnectError))
}

// connect pings the database, migrates its schema and reads the store id,
// once; until then the pool refuses every other use.
func (s *Store) connect(ctx context.Context) error {
	s.initMu.Lock()
	defer s.initMu.Unlock()
	if s.ready.Load() {
		return nil
	}
	ctx = context.WithValue(ctx, initKey{}, true)
	cctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
	defer cancel()
	if err := s.pool.Ping(cctx); err != nil {
		return fmt.Errorf("postgres store %s: connect: %w", s.where, err)
	}
	indexed, err := migrate(ctx, s.pool)
	if err != nil {
		return fmt.Errorf("postgres store %s: schema: %w", s.where, err)
	}
	s.searchIndexed.Store(indexed)
	if !indexed {
		s.opts.Logger.Warn("the pg_trgm extension could not be created (not installed, or the role lacks CREATE on the database): the console's search reads each account's messages in order")
	}
	if err := s.pool.QueryRow(ctx, "SELECT id FROM store_meta").Scan(&s.storeID); err != nil {
		return fmt.Errorf("postgres store %s: read store id: %w", s.where, err)
	}
	s.ready.Store(true)
	return nil
}

// startFallback opens the hit log and starts the spiller and the shipper.
func (s *Store) startFallback() error {
	l, err := hitlog.Open(s.opts.HitLogDir, 0)
	if err != nil {
		return fmt.Errorf("postgres store: hit log: %w", err)
	}
	fb := &fallback{log: l, spills: make(chan *eventReq, 4*s.opts.MaxBatch), wake: make(chan struct{}, 1),
		quit: make(chan struct{})}
	s.fb = fb
	if n, _ := l.Backlog(); n > 0 {
		s.opts.Logger.Info("hit log: hits of the last run to ship to PostgreSQL", "hits", n, "dir", s.opts.HitLogDir)
	}
	fb.wg.Add(2)
	go s.spillLoop()
	go s.shipLoop()
	return nil
}

// spill appends r to the hit log (with the hits spilling at the same
// time: one fdatasync) and returns once it is durable.
func (s *Store) spill(ctx context.Context, r *eventReq, cause string) error {
	r.cause = cause
	r.logged = make(chan error, 1)
	s.mu.RLock()
	if s.spillClosed {
		s.mu.RUnlock()
		return store.ErrClosed
	}
	s.fb.spills <- r
	s.mu.RUnlock()
	select {
	case err := <-r.logged:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// spillLoop appends the hits that spill, in batches.
func (s *Store) spillLoop() {
	fb := s.fb
	defer fb.wg.Done()
	for first := range fb.spills {
		s.logSpills(gather(first, fb.spills, s.opts.MaxBatch, nil))
	}
}

// logSpills appends the hits of batch to the hit log, with one fdatasync,
// and answers each.
func (s *Store) logSpills(batch []*eventReq) {
	fb := s.fb
	// A hit the log cannot take fails alone, not its batch.
	payloads := make([][]byte, 0, len(batch))
	kept := make([]*eventReq, 0, len(batch))
	for _, r := range batch {
		p, err := encodeHit(r)
		if err == nil && len(p) > hitlog.MaxPayload {
			err = fmt.Errorf("hit of %d bytes, more than the hit log takes (%d)", len(p), hitlog.MaxPayload)
		}
		if err != nil {
			r.logged <- fmt.Errorf("postgres store: hit log: %w", err)
			continue
		}
		payloads = append(payloads, p)
		kept = append(kept, r)
	}
	batch = kept
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	_, err := fb.log.Append(payloads)
	s.opts.Metrics.LogSynced(time.Since(start))
	fb.mu.Lock()
	fb.logErr = err
	fb.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("postgres store: hit log: %w", err)
		s.opts.Logger.Error("hits not recorded: neither PostgreSQL nor the hit log took them", "hits", len(batch), "err", err)
	} else {
		for _, r := range batch {
			s.opts.Metrics.Fallback(r.cause)
		}
		s.wakeShipper()
	}
	for _, r := range batch {
		r.logged <- err
	}
}

func (s *Store) wakeShipper() {
	select {
	case s.fb.wake <- struct{}{}:
	default:
	}
}

// isDown reports whether the circuit is open.
func (s *Store) isDown() bool { return s.fb.open.Load() }

// setDown opens the circuit after err, a failed commit or connection.
func (s *Store) setDown(err error) {
	fb := s.fb
	fb.mu.Lock()
	fb.down, fb.lastErr = true, err
	fb.open.Store(true)
	first := !fb.downLogged
	fb.downLogged = true
	fb.mu.Unlock()
	if first {
		s.opts.Logger.Error("PostgreSQL fails: hits go to the hit log until it is back", "err", err)
	}
}

// setUp closes the circuit: the log is shipped and the database answers.
func (s *Store) setUp() {
	fb := s.fb
	fb.mu.Lock()
	was := fb.down
	fb.down, fb.lastErr, fb.downLogged = false, nil, false
	fb.open.Store(false)
	fb.mu.Unlock()
	if was {
		s.opts.Logger.Info("PostgreSQL is back: hit log shipped")
	}
}

// shipLoop ships the hit log when woken by a spill, and every
// ProbeInterval.
func (s *Store) shipLoop() {
	fb := s.fb
	defer fb.wg.Done()
	t := time.NewTicker(s.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-fb.quit:
			return
		case <-fb.wake:
		case <-t.C:
		}
		s.ship()
	}
}

// ship connects if the store never has, then commits the log's hits in
// order, a batch at a time, removing each batch's segments once it has
// committed. With the log empty it closes the circuit, if the database
// answers.
func (s *Store) ship() {
	fb := s.fb
	if !s.ready.Load() {
		if err := s.connect(context.Background()); err != nil {
			s.setDown(err)
			return
		}
		s.opts.Logger.Info("PostgreSQL store connected", "schema_version", SchemaVersion())
	}
	for {
		select {
		case <-fb.quit:
			return
		default:
		}
		recs, err := fb.log.Read(fb.shipped, s.opts.MaxBatch)
		if err != nil {
			s.opts.Logger.Error("hit log: read", "err", err)
			return
		}
		if len(recs) == 0 {
			if s.isDown() {
				ctx, cancel := context.WithTimeout(context.Background(), s.opts.ConnectTimeout)
				err := s.pool.Ping(ctx)
				cancel()
				if err != nil {
					s.setDown(err)
					return
				}
				s.setUp()
			}
			return
		}
		batch := make([]*eventReq, 0, len(recs))
		for _, rec := range recs {
			r, err := decodeHit(rec.Payload)
			if err != nil {
				// Its checksum matched what was written: a record this
				// build cannot read is a bug, not a torn write.
				s.opts.Logger.Error("hit log: record skipped", "seq", rec.Seq, "err", err)
				s.opts.Metrics.Lost()
				continue
			}
			batch = append(batch, r)
		}
		if len(batch) > 0 {
			err = s.shipBatch(batch)
			if err != nil && rejected(err) {
				err = s.shipEach(batch)
			}
			if err != nil {
				s.setDown(fmt.Errorf("postgres store: ship %d hits from the hit log: %w", len(batch), err))
				return
			}
		}
		last := recs[len(recs)-1].Seq
		if err := fb.log.Release(last); err != nil {
			// Shipped: shipping them again would store nothing twice.
			s.opts.Logger.Warn("hit log: remove shipped segments", "err", err)
		}
		fb.shipped = last
		s.opts.Metrics.Shipped(len(batch))
	}
}

// shipBatch commits batch as the committers would.
func (s *Store) shipBatch(batch []*eventReq) error {
	ctx, cancel := context.WithTimeout(context.Background(), shipTimeout)
	defer cancel()
	start := time.Now()
	err := s.commitEvents(ctx, batch)
	s.opts.Metrics.Committed(time.Since(start), len(batch))
	return err
}

// shipEach commits batch a hit at a time, after the database rejected it
// whole, and drops (logs and counts as lost) each hit it rejects alone:
// one hit it can never take must not keep the rest of the log from it.
// Any other error stops it; shipping again later stores nothing twice.
func (s *Store) shipEach(batch []*eventReq) error {
	for _, r := range batch {
		err := s.shipBatch([]*eventReq{r})
		if err == nil {
			continue
		}
		if !rejected(err) {
			return err
		}
		s.opts.Logger.Error("hit log: hit dropped: the database rejects it", "msg", r.ev.Message, "rcpt", r.ev.Recipient,
			"type", r.ev.Type, "at", r.ev.At, "err", err)
		s.opts.Metrics.Lost()
	}
	return nil
}

// rejected reports an error of the data itself (SQLSTATE classes 22, data
// exception, and 23, integrity constraint violation), which no retry mends.
func rejected(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// hitReadContext bounds a read of the hit path (Message and Delivery,
// which the tracker reads to classify a hit) by FallbackAfter while the
// circuit is open: a database that does not answer then costs a pixel or
// a redirect that long at most, not the handler's whole timeout.
func (s *Store) hitReadContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.fb == nil || !s.isDown() {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.FallbackAfter)
}

// Health is what readiness checks need of the store.
type Health struct {
	// Closed: the store was closed.
	Closed bool
	// Database is nil when PostgreSQL answers and takes commits, else why
	// not: hits then go to the hit log.
	Database error
	// Backlog is the number of hits in the hit log not yet shipped, and
	// Oldest when the oldest of them was logged (at the latest).
	Backlog int
	Oldest  time.Time
	// HitLog is the error of the hit log's last append, nil once one
	// succeeds: while it fails, a hit that PostgreSQL cannot take is lost.
	HitLog error
}

// Health reports the database and the hit log's backlog.
func (s *Store) Health(ctx context.Context) Health {
	h := Health{Closed: s.isClosed()}
	if s.fb != nil {
		h.Backlog, h.Oldest = s.fb.log.Backlog()
		s.fb.mu.Lock()
		down, last := s.fb.down, s.fb.lastErr
		h.HitLog = s.fb.logErr
		s.fb.mu.Unlock()
		if down && last != nil {
			h.Database = last
			return h
		}
	}
	h.Database = s.Ping(ctx)
	return h
}

// dbStats is the database's part of the store's metrics.
func (s *Store) dbStats() store.DatabaseStats {
	st := s.pool.Stat()
	d := store.DatabaseStats{Up: s.ready.Load(), Acquired: st.AcquiredConns(), Idle: st.IdleConns(),
		Total: st.TotalConns(), Max: st.MaxConns()}
	if s.fb != nil {
		d.Up = d.Up && !s.isDown()
		d.Backlog, d.Oldest = s.fb.log.Backlog()
	}
	return d
}
