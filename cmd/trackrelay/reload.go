package main

import (
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/trackrelay/trackrelay/relay"
	"github.com/trackrelay/trackrelay/tracker"
	"github.com/trackrelay/trackrelay/tracker/console"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// reloader applies the config file to a running node on SIGHUP: the
// accounts (SMTP logins, networks, modes, self addresses, API keys) and the
// tracking secrets change at once, without dropping a connection; every
// other key keeps the value the node started with until a restart.
type reloader struct {
	path     string  // "": no config file (the embedded defaults)
	started  *Config // what the parts that are read once were built from
	upstream string  // the upstream password at start
	smtp     *relay.Server
	http     *tracker.Handler
	console  *console.Handler               // nil: no console
	keys     *atomic.Pointer[token.Keyring] // the delivery's minters read it
	log      *slog.Logger
}

func newReloader(path string, cfg *Config, s *servers, keys *atomic.Pointer[token.Keyring], log *slog.Logger) *reloader {
	r := &reloader{path: path, started: cfg, smtp: s.smtp, http: s.tracker, console: s.console, keys: keys, log: log}
	if cfg.Upstream != nil {
		r.upstream, _ = upstreamPassword(cfg.Upstream)
	}
	return r
}

// reload reads and checks the whole file as check-config does, then swaps
// the new accounts and keys in; a file that fails any check changes
// nothing, and the node goes on with what it had.
func (r *reloader) reload() {
	if r.path == "" {
		r.log.Warn("SIGHUP: serve has no -config file (embedded defaults); nothing to reload")
		return
	}
	next, err := loadConfig(r.path)
	if err == nil {
		err = r.apply(next)
	}
	if err != nil {
		r.log.Error("config reload refused; still serving the previous config", "file", r.path, "err", err)
		return
	}
	r.log.Info("config reloaded", "file", r.path, "accounts", len(next.Accounts),
		"tracking_secrets", 1+len(next.Tracking.PreviousSecretFiles))
	if keys := r.restartKeys(next); len(keys) > 0 {
		r.log.Warn("config keys changed that take effect only at restart; their old values stay in use",
			"keys", strings.Join(keys, ", "))
	}
}

// apply builds everything the reload replaces before replacing any of it,
// so that a failure leaves the node as it was.
func (r *reloader) apply(next *Config) error {
	// An account without a mode takes tracking.mode, and the secret made
	// on first start is in data_dir: both keep their values from the start,
	// like every key a reload does not apply.
	applied := *next
	applied.Tracking.Mode = r.started.Tracking.Mode
	applied.DataDir = r.started.DataDir
	smtpAccounts, err := relayAccounts(&applied)
	if err != nil {
		return err
	}
	secrets, err := loadSecrets(&applied)
	if err != nil {
		return err
	}
	keys, err := keyringOf(secrets)
	if err != nil {
		return err
	}
	// It fails only on no secret, which loadSecrets never returns: first,
	// so that a failure would change nothing.
	if err := r.console.SetSecrets(secrets); err != nil {
		return err
	}
	r.smtp.SetAccounts(smtpAccounts)
	r.http.SetAccounts(trackerAccounts(next))
	r.keys.Store(keys)
	r.http.SetKeyring(keys)
	// Sessions of accounts whose key or password changed end here.
	r.console.SetAccounts(consoleAccounts(next))
	return nil
}

// restartKeys names the keys of next that differ from the running node's
// and that only a restart applies.
func (r *reloader) restartKeys(next *Config) []string {
	a, b := *r.started, *next
	a.Accounts, b.Accounts = nil, nil
	a.Tracking.SecretFile, b.Tracking.SecretFile = "", ""
	a.Tracking.PreviousSecretFiles, b.Tracking.PreviousSecretFiles = nil, nil
	keys := diffKeys("", reflect.ValueOf(a), reflect.ValueOf(b))
	if !slices.Equal(webhookTargets(r.started), webhookTargets(next)) {
		keys = append(keys, "accounts[].webhook_url", "accounts[].webhook_secret_file")
	}
	if next.Upstream != nil && r.started.Upstream != nil && !slices.Contains(keys, "upstream.password_file") {
		if pass, err := upstreamPassword(next.Upstream); err == nil && pass != r.upstream {
			keys = append(keys, "upstream password")
		}
	}
	return keys
}

// diffKeys names the yaml keys whose values differ between the structs a
// and b, one level into each section.
func diffKeys(prefix string, a, b reflect.Value) []string {
	var keys []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fa, fb := a.Field(i), b.Field(i)
		if reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			continue
		}
		if prefix == "" && fa.Kind() == reflect.Pointer && !fa.IsNil() && !fb.IsNil() {
			fa, fb = fa.Elem(), fb.Elem()
		}
		if prefix == "" && fa.Kind() == reflect.Struct {
			keys = append(keys, diffKeys(name+".", fa, fb)...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

// webhookTargets lists the accounts' webhook settings, which the webhook
// sender reads at start only.
func webhookTargets(cfg *Config) []string {
	var out []string
	for _, a := range cfg.Accounts {
		if a.WebhookURL != "" {
			out = append(out, a.Name+"\x00"+a.WebhookURL+"\x00"+a.WebhookSecretFile)
		}
	}
	slices.Sort(out)
	return out
}
