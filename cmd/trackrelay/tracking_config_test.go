package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfig_trackingPrivacyAndWebhooks(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig([]byte(`
tracking:
  retention: 90d
  ip_mode: truncate
  max_events_per_recipient: 50
accounts:
  - name: alice
    networks: [192.0.2.10/32]
    webhook_url: https://app.example.com/hook
    webhook_secret_file: ` + secret + `
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tracking.Retention.D() != 90*24*time.Hour || cfg.Tracking.IPMode != "truncate" || cfg.Tracking.MaxEventsPerRecipient != 50 {
		t.Errorf("tracking = %+v", cfg.Tracking)
	}
	hooks, err := webhooks(cfg)
	if err != nil || len(hooks) != 1 || hooks[0].Account != "alice" || string(hooks[0].Secret) != "0123456789abcdef0123" {
		t.Errorf("webhooks = %+v, %v", hooks, err)
	}
	if d := defaultConfig(); d.Tracking.IPMode != "full" || d.Tracking.MaxEventsPerRecipient != 100 || d.Tracking.Retention != 0 {
		t.Errorf("defaults = %+v", d.Tracking)
	}
	for _, tc := range []struct{ yaml, key string }{
		{"tracking: {ip_mode: partial}", "tracking.ip_mode"},
		{"tracking: {max_events_per_recipient: 0}", "tracking.max_events_per_recipient"},
		{"tracking: {retention: 5m}", "tracking.retention"},
		{"accounts: [{name: a, networks: [127.0.0.1], webhook_url: 'ftp://x'}]", "accounts[0].webhook_url"},
		{"accounts: [{name: a, networks: [127.0.0.1], webhook_url: 'https://x'}]", "accounts[0].webhook_secret_file"},
		{"accounts: [{name: a, networks: [127.0.0.1], webhook_secret_file: " + secret + "}]", "accounts[0].webhook_secret_file"},
	} {
		_, err := parseConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: error %v does not name %s", tc.yaml, err, tc.key)
		}
	}
}
