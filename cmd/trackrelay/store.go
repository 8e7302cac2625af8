package main

import (
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
	"github.com/trackrelay/trackrelay/tracker/geoip"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
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

// trackingStore is the tracking store with the webhook sender that reads
// its outbox.
type trackingStore struct {
	*bolt.Store
	sender *webhook.Sender
}

// openStore opens the tracking store and starts the webhook sender of the
// accounts that have one.
func openStore(cfg *Config, m *metrics, log *slog.Logger) (*trackingStore, error) {
	hooks, err := webhooks(cfg)
	if err != nil {
		return nil, err
	}
	opts := bolt.Options{Metrics: m.tracker.Store, Retention: cfg.Tracking.Retention.D(),
		MaxEventsPerRecipient: cfg.Tracking.MaxEventsPerRecipient, Logger: log.With("part", "store")}
	for _, h := range hooks {
		opts.WebhookAccounts = append(opts.WebhookAccounts, h.Account)
	}
	st, err := bolt.Open(filepath.Join(cfg.DataDir, "tracking.db"), opts)
	if err != nil {
		return nil, fmt.Errorf("tracking store: %w", err)
	}
	ts := &trackingStore{Store: st}
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
	s.Store.Close()
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
