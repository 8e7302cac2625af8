package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/relay"
	"github.com/trackrelay/trackrelay/tracker"
	"github.com/trackrelay/trackrelay/tracker/console"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// servers are the process's listeners and what serves them: SMTP, the
// public HTTP (tracking and API), the metrics listener (when set) and the
// operator's admin socket.
type servers struct {
	smtp                    *relay.Server
	tracker                 *tracker.Handler // serves http
	console                 *console.Handler // serves http's /ui/
	http, metrics, admin    *http.Server
	smtpLn, httpLn, adminLn net.Listener
	metricsLn               net.Listener // nil without metrics.listen
}

// openServers builds every server and opens every listener. On error,
// what it opened is closed again (one close path: closeListeners).
func openServers(cfg *Config, spool *relay.Spool, d *relay.Deliverer, st *trackingStore, keys *token.Keyring,
	secrets [][]byte, geo tracker.GeoLocator, m *metrics, log *slog.Logger) (*servers, error) {
	scfg, err := serverConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &servers{smtp: relay.NewServer(scfg, spool, d, log.With("part", "smtp"), m.relay),
		tracker: tracker.NewHandler(trackerConfig(cfg, d, geo, m, log), keys, st)}
	if s.console, err = newConsole(cfg, st, secrets, log); err != nil {
		return nil, err
	}
	s.http = &http.Server{
		Handler:           httpHandler(s.tracker, s.console),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.With("part", "http").Handler(), slog.LevelWarn),
	}
	s.admin = &http.Server{Handler: adminHandler(spool, d), ReadHeaderTimeout: 10 * time.Second}
	if cfg.Metrics.Listen != "" {
		var upstreamHealth func() (time.Time, time.Time)
		if cfg.Upstream != nil {
			upstreamHealth = d.UpstreamHealth
		}
		ready := newReadiness(st, filepath.Join(cfg.DataDir, "spool"), upstreamHealth)
		ready.owed = d.OwedReports
		s.metrics = &http.Server{Handler: metricsHandler(m.reg, ready), ReadHeaderTimeout: 10 * time.Second}
	}
	if err := s.listen(cfg); err != nil {
		s.closeListeners()
		return nil, err
	}
	return s, nil
}

// listen opens the listeners, stopping at the first that fails.
func (s *servers) listen(cfg *Config) error {
	var err error
	if s.smtpLn, err = net.Listen("tcp", cfg.SMTP.Listen); err != nil {
		return fmt.Errorf("smtp.listen: %w", err)
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	if s.metrics != nil {
		if s.metricsLn, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
	}
	s.adminLn, err = listenAdmin(cfg.DataDir)
	return err
}

// closeListeners closes the listeners that are open.
func (s *servers) closeListeners() {
	for _, ln := range []net.Listener{s.smtpLn, s.httpLn, s.metricsLn, s.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// run serves every listener until ctx ends or one of them fails.
func (s *servers) run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	errc := make(chan error, 4)
	go func() { errc <- s.smtp.Serve(s.smtpLn) }()
	serveHTTP := func(srv *http.Server, ln net.Listener) {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}
	go serveHTTP(s.http, s.httpLn)
	go serveHTTP(s.admin, s.adminLn)
	if s.metrics != nil {
		go serveHTTP(s.metrics, s.metricsLn)
	}
	metricsAddr := ""
	if s.metricsLn != nil {
		metricsAddr = s.metricsLn.Addr().String()
	}
	log.Info("trackrelay started", "version", version, "smtp", s.smtpLn.Addr().String(),
		"http", s.httpLn.Addr().String(), "metrics", metricsAddr, "base_url", baseURL(cfg),
		"data_dir", cfg.DataDir, "accounts", len(cfg.Accounts))
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case err := <-errc:
		log.Error("listener failed; shutting down", "err", err)
		return err
	}
}

// shutdown stops taking mail, lets the deliveries under way finish (for at
// most delivery.shutdown_wait), then stops serving hits and the rest.
func (s *servers) shutdown(cfg *Config, d *relay.Deliverer, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Delivery.ShutdownWait.D())
	defer cancel()
	if err := s.smtp.Shutdown(ctx); err != nil {
		log.Warn("smtp shutdown", "err", err)
	}
	if err := d.Shutdown(ctx); err != nil {
		log.Warn("delivery shutdown", "err", err)
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	for _, srv := range []*http.Server{s.http, s.admin, s.metrics} {
		if srv != nil {
			srv.Shutdown(hctx)
		}
	}
}

// trackerConfig is the public HTTP handler's configuration.
func trackerConfig(cfg *Config, d *relay.Deliverer, geo tracker.GeoLocator, m *metrics, log *slog.Logger) tracker.Config {
	tcfg := tracker.Config{
		BaseURL:       baseURL(cfg),
		ScannerWindow: cfg.Tracking.ScannerWindow.D(),
		RecordRate:    cfg.Tracking.RecordRate,
		RecordBurst:   cfg.Tracking.RecordBurst,
		Logger:        log.With("part", "http"),
		Metrics:       m.tracker,
		IPMode:        cfg.Tracking.IPMode,
		Geo:           geo,
		Pending:       pendingMessages(d),
	}
	// Benchmark-only: serve hits without recording them, to measure the
	// ceiling that bench/tracking.sh compares recording with.
	if os.Getenv("TRACKRELAY_BENCH_NO_RECORD") == "1" {
		tcfg.NoRecord = true
		log.Warn("TRACKRELAY_BENCH_NO_RECORD=1: tracking hits are NOT recorded (benchmark only)")
	}
	for _, p := range cfg.Tracking.TrustedProxies {
		pfx, _ := parsePrefix(p)
		tcfg.TrustedProxies = append(tcfg.TrustedProxies, pfx)
	}
	tcfg.Accounts = trackerAccounts(cfg)
	return tcfg
}

// newConsole returns the web console over st.
func newConsole(cfg *Config, st *trackingStore, secrets [][]byte, log *slog.Logger) (*console.Handler, error) {
	ccfg := console.Config{BaseURL: baseURL(cfg), Accounts: consoleAccounts(cfg), Secrets: secrets,
		Logger: log.With("part", "console")}
	for _, p := range cfg.Tracking.TrustedProxies {
		pfx, _ := parsePrefix(p)
		ccfg.TrustedProxies = append(ccfg.TrustedProxies, pfx)
	}
	c, err := console.New(ccfg, st)
	if err != nil {
		return nil, fmt.Errorf("web console: %w", err)
	}
	return c, nil
}

// consoleAccounts are the accounts that may log in to the console: each
// with its API key and its SMTP password, either of which may be missing.
func consoleAccounts(cfg *Config) []console.Account {
	accounts := make([]console.Account, 0, len(cfg.Accounts))
	for _, a := range cfg.Accounts {
		accounts = append(accounts, console.Account{Name: a.Name, APIKeySHA256: strings.ToLower(a.APIKeySHA256), PasswordHash: a.PasswordHash})
	}
	return accounts
}

// httpHandler serves the http listener: the console under /ui/, the
// tracker everything else.
func httpHandler(tr *tracker.Handler, ui *console.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/ui" || strings.HasPrefix(p, console.Prefix) {
			ui.ServeHTTP(w, r)
			return
		}
		tr.ServeHTTP(w, r)
	})
}

// trackerAccounts are the accounts with an API key.
func trackerAccounts(cfg *Config) []tracker.Account {
	var accounts []tracker.Account
	for _, a := range cfg.Accounts {
		if a.APIKeySHA256 != "" {
			accounts = append(accounts, tracker.Account{Name: a.Name, APIKeySHA256: strings.ToLower(a.APIKeySHA256)})
		}
	}
	return accounts
}

// listenAdmin opens the operator's queue socket, readable by the owner only.
func listenAdmin(dataDir string) (net.Listener, error) {
	path := adminSocket(dataDir)
	// A socket left by a process that died; the spool's lock on queue.db
	// already guarantees no other server runs on this data dir.
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

func serverConfig(cfg *Config) (relay.ServerConfig, error) {
	sc := relay.ServerConfig{
		Hostname:            cfg.SMTP.Hostname,
		MaxMessageBytes:     cfg.SMTP.MaxMessageBytes,
		MaxRecipients:       cfg.SMTP.MaxRecipients,
		RequireTLS:          cfg.SMTP.RequireTLS,
		CommandTimeout:      cfg.SMTP.CommandTimeout.D(),
		DataTimeout:         cfg.SMTP.DataTimeout.D(),
		MaxConnections:      cfg.SMTP.MaxConnections,
		MaxConnectionsPerIP: cfg.SMTP.MaxConnectionsPerIP,
		DefaultMode:         cfg.Tracking.Mode,
	}
	if cfg.SMTP.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.SMTP.TLSCertFile, cfg.SMTP.TLSKeyFile)
		if err != nil {
			return sc, fmt.Errorf("smtp.tls_cert_file: %w", err)
		}
		sc.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var err error
	sc.Accounts, err = relayAccounts(cfg)
	return sc, err
}

// relayAccounts are the SMTP server's accounts.
func relayAccounts(cfg *Config) ([]relay.Account, error) {
	var accounts []relay.Account
	for _, a := range cfg.Accounts {
		acct := relay.Account{Name: a.Name, PasswordHash: []byte(a.PasswordHash), Mode: a.Mode, SelfAddresses: a.SelfAddresses}
		if a.Mode == "" {
			acct.Mode = cfg.Tracking.Mode
		}
		for _, n := range a.Networks {
			p, err := parsePrefix(n)
			if err != nil {
				return nil, fmt.Errorf("accounts %s networks: %w", a.Name, err)
			}
			acct.Networks = append(acct.Networks, p)
		}
		accounts = append(accounts, acct)
	}
	return accounts, nil
}
