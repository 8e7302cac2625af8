package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/trackrelay/trackrelay/relay"
	"github.com/trackrelay/trackrelay/tracker/store/postgres"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// startDelivery starts the deliverer over the spool: upstream, or capture
// mode without one, reporting to the tracking store and minting each
// copy's URLs with keys.
func startDelivery(cfg *Config, spool *relay.Spool, st *trackingStore, keys *atomic.Pointer[token.Keyring], m *metrics, log *slog.Logger) (*relay.Deliverer, error) {
	dcfg := relay.DeliveryConfig{
		Hostname:     cfg.SMTP.Hostname,
		RetryInitial: cfg.Delivery.RetryInitial.D(),
		RetryMax:     cfg.Delivery.RetryMax.D(),
		Lifetime:     cfg.Delivery.Lifetime.D(),
		DelayWarning: cfg.Delivery.DelayWarning.D(),
		Honeypot:     cfg.Tracking.Honeypot,
	}
	if u := cfg.Upstream; u != nil {
		up, err := upstreamConfig(cfg)
		if err != nil {
			return nil, err
		}
		dcfg.Upstream = up
		log.Info("delivering upstream", "address", u.Address, "tls", up.TLS)
	} else {
		dcfg.CaptureDir = filepath.Join(cfg.DataDir, "outbox")
		log.Info("capture mode: no upstream; delivered copies are written to the outbox", "dir", dcfg.CaptureDir)
	}
	if _, shared := st.backend.(*postgres.Store); shared {
		// A fleet: any node's API must find a message once its 250 is sent.
		dcfg.ReportWait = postgresReportWait
	}
	var err error
	if dcfg.DKIM, err = dkimSigner(cfg, log); err != nil {
		return nil, err
	}
	mint := keyMinters{keys: keys, baseURL: baseURL(cfg)}
	d := relay.NewDeliverer(dcfg, spool, storeLedger{store: st}, mint, log.With("part", "delivery"), m.relay)
	if err := d.Start(); err != nil {
		return nil, err
	}
	return d, nil
}

// postgresReportWait bounds how long a 250 waits for the message's record
// in PostgreSQL: a slower or absent database costs the client no more,
// and the record follows (relay.DeliveryConfig.ReportWait).
var postgresReportWait = 200 * time.Millisecond // a variable for tests only

// stopDelivery lets the deliveries under way finish, for at most
// delivery.shutdown_wait.
func stopDelivery(cfg *Config, d *relay.Deliverer, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Delivery.ShutdownWait.D())
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		log.Warn("delivery shutdown", "err", err)
	}
}

// baseURL is tracking.base_url without its trailing slash.
func baseURL(cfg *Config) string { return strings.TrimRight(cfg.Tracking.BaseURL, "/") }

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
