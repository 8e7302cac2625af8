package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/store/postgres"
)

// migrateLockTimeout is how long migrate-store waits for tracking.db's
// lock, held by a running trackrelay.
const migrateLockTimeout = 2 * time.Second

// migrateOptions tune migrateStore.
type migrateOptions struct {
	batch    int           // messages (or feed entries) per transaction
	every    time.Duration // a progress line at most this often
	progress io.Writer     // progress lines and the summary
	// afterBatch, set by tests, runs after each committed batch.
	afterBatch func()
}

// migrateTotals count what a migration read and what it inserted.
type migrateTotals struct {
	read     postgres.ImportCounts // rows read from bbolt, by kind
	inserted postgres.ImportCounts // rows new in PostgreSQL
}

func cmdMigrateStore(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("migrate-store", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file: data_dir holds tracking.db, store.postgres names the database")
	batch := fs.Int("batch", 500, "messages or feed entries per transaction")
	every := fs.Duration("progress", 5*time.Second, "interval between progress lines")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || *batch <= 0 {
		fmt.Fprintln(stderr, "trackrelay migrate-store: -config FILE is required, -batch positive")
		return 2
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := migrateStore(ctx, cfg, migrateOptions{batch: *batch, every: *every, progress: stderr}); err != nil {
		fmt.Fprintln(stderr, "trackrelay migrate-store:", err)
		return 1
	}
	return 0
}

// migrateStore copies the bbolt store of cfg.DataDir into the PostgreSQL
// database of cfg: messages with their links, deliveries and events (with
// their classes, not classified again), the feed, the webhook outbox and
// the erasure tombstones, keeping the ids of events and feed entries.
// Every row is inserted with ON CONFLICT DO NOTHING and named by the
// bbolt store, so that a run interrupted and run again ends with the same
// content, and a run after a complete one inserts nothing.
func migrateStore(ctx context.Context, cfg *Config, o migrateOptions) (*migrateTotals, error) {
	dsn, err := postgresDSN(cfg)
	if err != nil {
		return nil, err
	}
	if dsn == "" {
		return nil, fmt.Errorf("no PostgreSQL database: set store.postgres.dsn_file or %s", envPostgresDSN)
	}
	hooks, err := webhooks(cfg)
	if err != nil {
		return nil, err
	}
	var accounts []string
	for _, h := range hooks {
		accounts = append(accounts, h.Account)
	}
	dbPath := filepath.Join(cfg.DataDir, "tracking.db")
	if _, err := os.Stat(dbPath); err != nil {
		return nil, fmt.Errorf("bbolt store: %w", err)
	}
	log := slog.New(slog.NewTextHandler(o.progress, nil))
	// Opening the store applies the hits its log holds; nothing else
	// writes to it.
	src, err := bolt.Open(dbPath, bolt.Options{LockTimeout: migrateLockTimeout, WebhookAccounts: accounts,
		MaxEventsPerRecipient: cfg.Tracking.MaxEventsPerRecipient, Logger: log})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("%s is locked by a running trackrelay: stop the relay before migrating its store", dbPath)
	}
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, dsn, postgres.Options{MaxConnections: 2,
		MaxEventsPerRecipient: cfg.Tracking.MaxEventsPerRecipient, WebhookAccounts: accounts})
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	if err := dst.AdoptID(ctx, src.ID()); err != nil {
		return nil, err
	}
	m := &migration{dst: dst, o: o, start: time.Now(), last: time.Now(), t: &migrateTotals{}}
	if err := m.run(ctx, src); err != nil {
		m.report("interrupted")
		return m.t, fmt.Errorf("%w (run migrate-store again to resume)", err)
	}
	m.report("done")
	return m.t, nil
}

// migration is one run of migrateStore.
type migration struct {
	dst         *postgres.Store
	o           migrateOptions
	t           *migrateTotals
	b           postgres.ImportBatch
	start, last time.Time
}

func (m *migration) run(ctx context.Context, src *bolt.Store) error {
	err := src.ExportErased(ctx, func(id string, at time.Time) error {
		m.b.Erased = append(m.b.Erased, postgres.ImportErased{Message: id, At: at})
		m.t.read.Erased++
		return m.flushAt(ctx, len(m.b.Erased))
	})
	if err != nil {
		return err
	}
	err = src.ExportMessages(ctx, func(e *bolt.ExportMessage) error {
		im := &postgres.ImportMessage{Message: e.Message, Links: e.Links, Deliveries: e.Deliveries, Tallies: e.Tallies}
		for _, ev := range e.Events {
			im.Events = append(im.Events, postgres.ImportEvent{Seq: int64(ev.Seq), Event: ev.Event})
		}
		m.b.Messages = append(m.b.Messages, im)
		m.t.read.Messages++
		m.t.read.Events += int64(len(e.Events))
		for _, t := range e.Tallies {
			m.t.read.Events += int64(t.Events) // copied as events past the cap
		}
		m.t.read.Deliveries += int64(len(e.Deliveries))
		return m.flushAt(ctx, len(m.b.Messages))
	})
	if err != nil {
		return err
	}
	if err := m.flush(ctx); err != nil {
		return err
	}
	// The feed after the events its entries name, in order.
	err = src.ExportFeed(ctx, func(e *bolt.ExportFeedEntry) error {
		m.b.Feed = append(m.b.Feed, &postgres.ImportFeedEntry{Seq: int64(e.Seq), Account: e.Account, Kind: e.Kind,
			Message: e.Message, Recipient: e.Recipient, Event: int64(e.Event), At: e.At, Class: e.Class, Prev: e.Prev,
			Reasons: e.Reasons, Delivery: e.Delivery})
		m.t.read.Feed++
		return m.flushAt(ctx, len(m.b.Feed))
	})
	if err != nil {
		return err
	}
	if err := m.flush(ctx); err != nil {
		return err
	}
	err = src.ExportOutbox(ctx, func(e *bolt.ExportOutbox) error {
		m.b.Outbox = append(m.b.Outbox, &postgres.ImportOutbox{Entry: int64(e.Entry), Account: e.Account, Due: e.Due,
			Attempts: e.Attempts, First: e.First})
		m.t.read.Outbox++
		return m.flushAt(ctx, len(m.b.Outbox))
	})
	if err != nil {
		return err
	}
	return m.flush(ctx)
}

func (m *migration) flushAt(ctx context.Context, n int) error {
	if n < m.o.batch {
		return nil
	}
	return m.flush(ctx)
}

// flush imports the batch in one transaction.
func (m *migration) flush(ctx context.Context) error {
	if len(m.b.Messages)+len(m.b.Feed)+len(m.b.Outbox)+len(m.b.Erased) == 0 {
		return nil
	}
	n, err := m.dst.Import(ctx, &m.b)
	if err != nil {
		return err
	}
	m.b = postgres.ImportBatch{}
	in := &m.t.inserted
	in.Messages += n.Messages
	in.Events += n.Events
	in.Deliveries += n.Deliveries
	in.Feed += n.Feed
	in.Outbox += n.Outbox
	in.Erased += n.Erased
	if m.o.afterBatch != nil {
		m.o.afterBatch()
	}
	if time.Since(m.last) >= m.o.every {
		m.report("progress")
	}
	return nil
}

// report writes a progress line: what was read from bbolt, what of it was
// new in PostgreSQL, and the rate.
func (m *migration) report(what string) {
	m.last = time.Now()
	el := time.Since(m.start)
	r, in := m.t.read, m.t.inserted
	rate := float64(r.Messages) / max(el.Seconds(), 1e-3)
	fmt.Fprintf(m.o.progress, "migrate-store: %s after %s: %d messages (%d new), %d events (%d new), %d deliveries (%d new), "+
		"%d feed entries (%d new), %d webhook deliveries (%d new), %d erased (%d new); %.0f messages/s\n",
		what, el.Round(time.Millisecond), r.Messages, in.Messages, r.Events, in.Events, r.Deliveries, in.Deliveries,
		r.Feed, in.Feed, r.Outbox, in.Outbox, r.Erased, in.Erased, rate)
}
