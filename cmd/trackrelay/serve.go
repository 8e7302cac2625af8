package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/trackrelay/trackrelay/internal/durable"
	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/relay"
	"github.com/trackrelay/trackrelay/tracker"
	"github.com/trackrelay/trackrelay/tracker/geoip"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/webhook"
)

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default: embedded defaults)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (for bench/pgo.sh)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "trackrelay: -cpuprofile:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "trackrelay: -cpuprofile:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	var cfg *Config
	if *path == "" {
		cfg = defaultConfig()
		cfg.Accounts = []AccountConfig{defaultAccount()}
	} else {
		c, err := loadConfig(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		cfg = c
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, *path == "", stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "trackrelay:", err)
		return 1
	}
	return 0
}

// newLogger builds the process logger from the log section.
func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs every part until ctx ends, then shuts down in order: stop
// taking mail, let deliveries under way finish, stop serving hits.
func serve(ctx context.Context, cfg *Config, embedded bool, stdout, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	// Durable: the secret and API key made on first start live in it.
	if err := durable.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if embedded {
		if err := ensureDefaultAPIKey(cfg, stdout, log); err != nil {
			return err
		}
	}
	keys, err := loadKeyring(cfg)
	if err != nil {
		return err
	}
	var geo tracker.GeoLocator
	if path := cfg.Tracking.GeoIPDB; path != "" {
		// Never closed: a hit still in flight after a timed-out HTTP
		// shutdown may look up; the mapping is released with the reader.
		db, err := geoip.Open(path)
		if err != nil {
			return fmt.Errorf("tracking.geoip_db: %w", err)
		}
		geo = db
		log.Info("geoip database loaded", "path", path, "type", db.DatabaseType())
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), guard.Panics)
	tm := tracker.NewMetrics(reg)
	wm := webhook.NewMetrics(reg)
	rm := relay.NewMetrics(reg)

	hooks, err := webhooks(cfg)
	if err != nil {
		return err
	}
	bopts := bolt.Options{Metrics: tm.Store, Retention: cfg.Tracking.Retention.D(),
		MaxEventsPerRecipient: cfg.Tracking.MaxEventsPerRecipient, Logger: log.With("part", "store")}
	for _, h := range hooks {
		bopts.WebhookAccounts = append(bopts.WebhookAccounts, h.Account)
	}
	st, err := bolt.Open(filepath.Join(cfg.DataDir, "tracking.db"), bopts)
	if err != nil {
		return fmt.Errorf("tracking store: %w", err)
	}
	defer st.Close()
	if len(hooks) > 0 {
		sender := webhook.Start(st, webhook.Options{Hooks: hooks, Logger: log.With("part", "webhook"), Metrics: wm})
		defer sender.Close()
	}

	spool, err := relay.OpenSpool(filepath.Join(cfg.DataDir, "spool"), log.With("part", "spool"))
	if err != nil {
		return err
	}
	defer spool.Close()

	dcfg := relay.DeliveryConfig{
		Hostname:     cfg.SMTP.Hostname,
		RetryInitial: cfg.Delivery.RetryInitial.D(),
		RetryMax:     cfg.Delivery.RetryMax.D(),
		Lifetime:     cfg.Delivery.Lifetime.D(),
		DelayWarning: cfg.Delivery.DelayWarning.D(),
		BaseURL:      strings.TrimRight(cfg.Tracking.BaseURL, "/"),
	}
	if u := cfg.Upstream; u != nil {
		up, err := upstreamConfig(cfg)
		if err != nil {
			return err
		}
		dcfg.Upstream = up
		log.Info("delivering upstream", "address", u.Address, "tls", up.TLS)
	} else {
		dcfg.CaptureDir = filepath.Join(cfg.DataDir, "outbox")
		log.Info("capture mode: no upstream; delivered copies are written to the outbox", "dir", dcfg.CaptureDir)
	}
	if dcfg.DKIM, err = dkimSigner(cfg, log); err != nil {
		return err
	}
	ledger := storeLedger{store: st}
	mint := keyMinters{keys: keys, baseURL: dcfg.BaseURL}
	deliverer := relay.NewDeliverer(dcfg, spool, ledger, mint, log.With("part", "delivery"), rm)
	if err := deliverer.Start(); err != nil {
		return err
	}

	scfg, err := serverConfig(cfg)
	if err != nil {
		return err
	}
	smtpSrv := relay.NewServer(scfg, spool, deliverer, log.With("part", "smtp"), rm)

	tcfg := tracker.Config{
		BaseURL:       dcfg.BaseURL,
		ScannerWindow: cfg.Tracking.ScannerWindow.D(),
		RecordRate:    cfg.Tracking.RecordRate,
		RecordBurst:   cfg.Tracking.RecordBurst,
		Logger:        log.With("part", "http"),
		Metrics:       tm,
		IPMode:        cfg.Tracking.IPMode,
		Geo:           geo,
		Pending:       pendingMessages(deliverer),
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
	for _, a := range cfg.Accounts {
		if a.APIKeySHA256 != "" {
			tcfg.Accounts = append(tcfg.Accounts, tracker.Account{Name: a.Name, APIKeySHA256: strings.ToLower(a.APIKeySHA256)})
		}
	}
	var upstreamHealth func() (time.Time, time.Time)
	if cfg.Upstream != nil {
		upstreamHealth = deliverer.UpstreamHealth
	}
	ready := newReadiness(st, filepath.Join(cfg.DataDir, "spool"), upstreamHealth)
	httpSrv := &http.Server{
		Handler:           tracker.NewHandler(tcfg, keys, st),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.With("part", "http").Handler(), slog.LevelWarn),
	}

	smtpLn, err := net.Listen("tcp", cfg.SMTP.Listen)
	if err != nil {
		return fmt.Errorf("smtp.listen: %w", err)
	}
	httpLn, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		smtpLn.Close()
		return fmt.Errorf("http.listen: %w", err)
	}
	var metricsSrv *http.Server
	var metricsLn net.Listener
	if cfg.Metrics.Listen != "" {
		metricsLn, err = net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			smtpLn.Close()
			httpLn.Close()
			return fmt.Errorf("metrics.listen: %w", err)
		}
		metricsSrv = &http.Server{Handler: metricsHandler(reg, ready), ReadHeaderTimeout: 10 * time.Second}
	}

	adminLn, err := listenAdmin(cfg.DataDir)
	if err != nil {
		smtpLn.Close()
		httpLn.Close()
		if metricsLn != nil {
			metricsLn.Close()
		}
		return err
	}
	adminSrv := &http.Server{Handler: deliverer.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go adminSrv.Serve(adminLn)

	errc := make(chan error, 3)
	go func() { errc <- smtpSrv.Serve(smtpLn) }()
	go func() {
		if err := httpSrv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	if metricsSrv != nil {
		go func() {
			if err := metricsSrv.Serve(metricsLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	log.Info("trackrelay started", "version", version, "smtp", smtpLn.Addr().String(),
		"http", httpLn.Addr().String(), "metrics", cfg.Metrics.Listen, "base_url", dcfg.BaseURL,
		"data_dir", cfg.DataDir, "accounts", len(cfg.Accounts))

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("listener failed; shutting down", "err", runErr)
	}
	grace := cfg.Delivery.ShutdownWait.D()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := smtpSrv.Shutdown(sctx); err != nil {
		log.Warn("smtp shutdown", "err", err)
	}
	if err := deliverer.Shutdown(sctx); err != nil {
		log.Warn("delivery shutdown", "err", err)
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	httpSrv.Shutdown(hctx)
	adminSrv.Shutdown(hctx)
	if metricsSrv != nil {
		metricsSrv.Shutdown(hctx)
	}
	log.Info("stopped")
	return runErr
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
	for _, a := range cfg.Accounts {
		acct := relay.Account{Name: a.Name, PasswordHash: []byte(a.PasswordHash), Mode: a.Mode, SelfAddresses: a.SelfAddresses}
		if a.Mode == "" {
			acct.Mode = cfg.Tracking.Mode
		}
		for _, n := range a.Networks {
			p, err := parsePrefix(n)
			if err != nil {
				return sc, fmt.Errorf("accounts %s networks: %w", a.Name, err)
			}
			acct.Networks = append(acct.Networks, p)
		}
		sc.Accounts = append(sc.Accounts, acct)
	}
	return sc, nil
}

func upstreamConfig(cfg *Config) (*relay.UpstreamConfig, error) {
	u := cfg.Upstream
	up := &relay.UpstreamConfig{
		Address:        u.Address,
		TLS:            u.TLS,
		Username:       u.Username,
		Hostname:       cfg.SMTP.Hostname,
		MaxConnections: u.MaxConnections,
		DialTimeout:    u.ConnectTimeout.D(),
		CommandTimeout: u.CommandTimeout.D(),
		DataTimeout:    u.DataTimeout.D(),
	}
	if up.TLS == "" {
		up.TLS = relay.TLSStartTLS
	}
	pass, err := upstreamPassword(u)
	if err != nil {
		return nil, err
	}
	up.Password = pass
	if u.InsecureSkipVerify {
		host, _, _ := net.SplitHostPort(u.Address)
		up.TLSConfig = &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	}
	return up, nil
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

// loadSecret reads tracking.secret_file, or the secret kept in the data
// dir, generating it on first start.
func loadSecret(cfg *Config) ([]byte, error) {
	path := cfg.Tracking.SecretFile
	if path == "" {
		path = filepath.Join(cfg.DataDir, "tracking-secret")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			raw := make([]byte, 32)
			rand.Read(raw)
			// Every link sent depends on it: durable before the first token
			// is signed, and never replaced (another process starting on the
			// same data dir may have made it first).
			err := durable.CreateFile(path, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600)
			if err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("generating tracking secret: %w", err)
			}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tracking.secret_file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < 32 {
		return nil, fmt.Errorf("tracking.secret_file: %s holds %d bytes; at least 32 are needed", path, len(secret))
	}
	return secret, nil
}

// keyID names a secret by its hash, so that the id of a key does not depend
// on the order keys are listed in when they rotate.
func keyID(secret []byte) byte {
	h := sha256.Sum256(append([]byte("trackrelay key id\x00"), secret...))
	return h[0]
}

// ensureDefaultAPIKey gives the embedded defaults' account its API key: made
// and printed once on first start, kept in the data dir.
func ensureDefaultAPIKey(cfg *Config, stdout io.Writer, log *slog.Logger) error {
	path := filepath.Join(cfg.DataDir, "api-key-default")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		raw := make([]byte, 24)
		rand.Read(raw)
		key := "trk_" + base64.RawURLEncoding.EncodeToString(raw)
		err = durable.CreateFile(path, []byte(key+"\n"), 0o600)
		switch {
		case err == nil:
			fmt.Fprintf(stdout, "API key of account \"default\" (shown once; also kept in %s):\n%s\n", path, key)
			b = []byte(key)
		case errors.Is(err, fs.ErrExist): // made meanwhile by another start
			b, err = os.ReadFile(path)
		default:
			return fmt.Errorf("writing API key: %w", err)
		}
	} else if err == nil {
		log.Info("API key of account default is kept in the data dir", "file", path)
	}
	if err != nil {
		return fmt.Errorf("reading API key: %w", err)
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(string(b))))
	for i := range cfg.Accounts {
		if cfg.Accounts[i].Name == "default" && cfg.Accounts[i].APIKeySHA256 == "" {
			cfg.Accounts[i].APIKeySHA256 = hex.EncodeToString(sum[:])
		}
	}
	return nil
}
