package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/relay"
	"github.com/trackrelay/trackrelay/tracker"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/geoip"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/store/postgres"
	"github.com/trackrelay/trackrelay/tracker/webhook"
)

// metrics are the registry /metrics serves and each part's metrics on it.
type metrics struct {
	reg     *prometheus.Registry
	tracker *tracker.Metrics
	webhook *webhook.Metrics
	relay   *relay.Metrics
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), guard.Panics)
	return &metrics{reg: reg, tracker: tracker.NewMetrics(reg), webhook: webhook.NewMetrics(reg), relay: relay.NewMetrics(reg)}
}

// openGeoIP loads tracking.geoip_db when set (nil otherwise).
func openGeoIP(cfg *Config, log *slog.Logger) (tracker.GeoLocator, error) {
	path := cfg.Tracking.GeoIPDB
	if path == "" {
		return nil, nil
	}
	// Never closed: a hit still in flight after a timed-out HTTP shutdown
	// may look up; the mapping is released with the reader.
	db, err := geoip.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tracking.geoip_db: %w", err)
	}
	log.Info("geoip database loaded", "path", path, "type", db.DatabaseType())
	return db, nil
}

// backend is what serve needs of a tracking store; bolt's and postgres's
// are.
type backend interface {
	store.Store
	store.DeliveryReader
	store.Outbox
	store.Browser // the web console's list and overview
	Ping(context.Context) error
}

var (
	_ backend = (*bolt.Store)(nil)
	_ backend = (*postgres.Store)(nil)
)

// loadIPLists reads the classifier's range tables with the lists of dir
// in place of the shipped ones of the same name.
func loadIPLists(dir string) (*classify.Tables, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	return classify.LoadTables(os.DirFS(dir))
}

// useIPLists loads the classifier's range tables at start, so that no hit
// waits on them (parsing the shipped lists takes some milliseconds): the
// shipped lists, with tracking.ip_lists_dir's in place of those of the
// same name when set.
func useIPLists(cfg *Config, log *slog.Logger) error {
	dir := cfg.Tracking.IPListsDir
	if dir == "" {
		t, err := classify.LoadTables(nil)
		if err != nil {
			return err
		}
		classify.Use(t)
		return nil
	}
	t, err := loadIPLists(dir)
	if err != nil {
		return fmt.Errorf("tracking.ip_lists_dir: %w", err)
	}
	classify.Use(t)
	log.Info("ip range lists loaded", "dir", dir)
	return nil
}

// postgresHitLogDir is the PostgreSQL store's hit log, under data_dir.
const postgresHitLogDir = "postgres-hitlog"

// trackingStore is the tracking store with the webhook sender that reads
// its outbox.
type trackingStore struct {
	backend
	sender *webhook.Sender
}

// The handler reads hits' messages through HitMessage, which the embedded
// interface would hide.
var _ store.HitReader = (*trackingStore)(nil)

// HitMessage implements store.HitReader: the backend's when it has one
// (PostgreSQL's remembers messages for a moment), else its Message.
func (s *trackingStore) HitMessage(ctx context.Context, id string) (*store.Message, error) {
	if hr, ok := s.backend.(store.HitReader); ok {
		return hr.HitMessage(ctx, id)
	}
	return s.backend.Message(ctx, id)
}

// openStore opens the tracking store and starts the webhook sender of the
// accounts that have one.
func openStore(cfg *Config, m *metrics, log *slog.Logger) (*trackingStore, error) {
	hooks, err := webhooks(cfg)
	if err != nil {
		return nil, err
	}
	var accounts []string
	for _, h := range hooks {
		accounts = append(accounts, h.Account)
	}
	dsn, err := postgresDSN(cfg)
	if err != nil {
		return nil, err
	}
	var st backend
	if dsn != "" {
		// The hit log lives in data_dir: what it holds is this node's until
		// shipped, so data_dir must be on durable storage.
		ps, err := postgres.Open(context.Background(), dsn, postgres.Options{
			MaxConnections: int32(cfg.Store.Postgres.MaxConnections), Metrics: m.tracker.Store,
			MaxEventsPerRecipient: cfg.Tracking.MaxEventsPerRecipient, WebhookAccounts: accounts,
			ScannerWindow: cfg.Tracking.ScannerWindow.D(), Retention: cfg.Tracking.Retention.D(),
			HitLogDir: filepath.Join(cfg.DataDir, postgresHitLogDir), FallbackAfter: cfg.Store.Postgres.FallbackAfter.D(),
			Logger: log.With("part", "store")})
		if err != nil {
			return nil, fmt.Errorf("tracking store: %w", err)
		}
		st = ps
		log.Info("tracking store: PostgreSQL", "schema_version", postgres.SchemaVersion())
	} else {
		st, err = bolt.Open(filepath.Join(cfg.DataDir, "tracking.db"), bolt.Options{Metrics: m.tracker.Store,
			Retention: cfg.Tracking.Retention.D(), MaxEventsPerRecipient: cfg.Tracking.MaxEventsPerRecipient,
			ScannerWindow: cfg.Tracking.ScannerWindow.D(), Logger: log.With("part", "store"), WebhookAccounts: accounts})
		if err != nil {
			return nil, fmt.Errorf("tracking store: %w", err)
		}
	}
	ts := &trackingStore{backend: st}
	if len(hooks) > 0 {
		ts.sender = webhook.Start(st, webhook.Options{Hooks: hooks, Logger: log.With("part", "webhook"), Metrics: m.webhook})
	}
	return ts, nil
}

// close stops the webhook sender, then closes the store.
func (s *trackingStore) close() {
	if s.sender != nil {
		s.sender.Close()
	}
	s.backend.Close()
}

// webhooks reads the accounts' webhook secrets.
func webhooks(cfg *Config) ([]webhook.Hook, error) {
	var hooks []webhook.Hook
	for i, a := range cfg.Accounts {
		if a.WebhookURL == "" {
			continue
		}
		b, err := os.ReadFile(a.WebhookSecretFile)
		if err != nil {
			return nil, fmt.Errorf("accounts[%d].webhook_secret_file: %w", i, err)
		}
		hooks = append(hooks, webhook.Hook{Account: a.Name, URL: a.WebhookURL, Secret: []byte(strings.TrimSpace(string(b)))})
	}
	return hooks, nil
}
