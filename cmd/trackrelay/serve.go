package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"syscall"

	"github.com/trackrelay/trackrelay/internal/durable"
	"github.com/trackrelay/trackrelay/relay"
	"github.com/trackrelay/trackrelay/tracker/token"
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
	// Before the config is read: SIGHUP's default action ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
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
	if err := serveReloading(ctx, cfg, *path == "", *path, hup, stdout, stderr); err != nil {
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
// taking mail, let deliveries under way finish, stop serving hits. Each
// step is a function of its own; once delivery has started, any failure
// shuts it down before serve returns.
func serve(ctx context.Context, cfg *Config, embedded bool, stdout, stderr io.Writer) error {
	return serveReloading(ctx, cfg, embedded, "", nil, stdout, stderr)
}

// serveReloading is serve, reloading the accounts and secrets from the
// config file at path (cfg's; "": none) on each signal from reload
// (SIGHUP).
func serveReloading(ctx context.Context, cfg *Config, embedded bool, path string, reload <-chan os.Signal, stdout, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	if err := prepareDataDir(cfg, embedded, stdout, log); err != nil {
		return err
	}
	secrets, err := loadSecrets(cfg)
	if err != nil {
		return err
	}
	k, err := keyringOf(secrets)
	if err != nil {
		return err
	}
	var keys atomic.Pointer[token.Keyring]
	keys.Store(k)
	geo, err := openGeoIP(cfg, log)
	if err != nil {
		return err
	}
	if err := useIPLists(cfg, log); err != nil {
		return err
	}
	m := newMetrics()
	st, err := openStore(cfg, m, log)
	if err != nil {
		return err
	}
	defer st.close()
	spool, err := relay.OpenSpool(filepath.Join(cfg.DataDir, "spool"), log.With("part", "spool"))
	if err != nil {
		return err
	}
	defer spool.Close()
	deliverer, err := startDelivery(cfg, spool, st, &keys, m, log)
	if err != nil {
		return err
	}
	srv, err := openServers(cfg, spool, deliverer, st, k, secrets, geo, m, log)
	if err != nil {
		stopDelivery(cfg, deliverer, log)
		return err
	}
	rctx, stopReloads := context.WithCancel(ctx)
	defer stopReloads()
	go reloadOnSignal(rctx, reload, newReloader(path, cfg, srv, &keys, log))
	runErr := srv.run(ctx, cfg, log)
	srv.shutdown(cfg, deliverer, log)
	log.Info("stopped")
	return runErr
}

// reloadOnSignal reloads the config on each signal from reload until ctx
// ends, one reload at a time.
func reloadOnSignal(ctx context.Context, reload <-chan os.Signal, r *reloader) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			r.reload()
		}
	}
}

// prepareDataDir makes the data dir (durably: the secret and API key made
// on first start live in it) and, on the embedded defaults, the default
// account's API key.
func prepareDataDir(cfg *Config, embedded bool, stdout io.Writer, log *slog.Logger) error {
	if err := durable.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if embedded {
		return ensureDefaultAPIKey(cfg, stdout, log)
	}
	return nil
}
