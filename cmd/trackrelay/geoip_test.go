package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trackrelay/trackrelay/tracker/geoip/geoiptest"
)

func TestConfig_geoipDB(t *testing.T) {
	db := geoiptest.WriteCity(t)
	cfg, err := parseConfig([]byte("tracking: {geoip_db: " + db + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tracking.GeoIPDB != db {
		t.Errorf("geoip_db = %q", cfg.Tracking.GeoIPDB)
	}
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.mmdb")
	if err := os.WriteFile(junk, []byte("GIF89a not a MaxMind DB"), 0o600); err != nil {
		t.Fatal(err)
	}
	asn := geoiptest.Write(t, "GeoLite2-ASN", []geoiptest.Network{{CIDR: "81.2.69.0/24"}})
	for _, path := range []string{junk, filepath.Join(dir, "missing.mmdb"), asn} {
		_, err := parseConfig([]byte("tracking: {geoip_db: " + path + "}\n"))
		if err == nil || !strings.Contains(err.Error(), "tracking.geoip_db") {
			t.Errorf("%s: error %v does not name tracking.geoip_db", filepath.Base(path), err)
		}
	}
}

// TestServe_geoip runs the server in-process with tracking.geoip_db set and
// a trusted proxy on loopback: a pixel hit forwarded for 81.2.69.160 is
// recorded with country GB and city London.
func TestServe_geoip(t *testing.T) {
	dir := t.TempDir()
	smtpAddr, httpAddr := freeAddr(t), freeAddr(t)
	const apiKey = "geoip-test-api-key"
	sum := sha256.Sum256([]byte(apiKey))
	cfgPath := filepath.Join(dir, "trackrelay.yaml")
	cfgText := fmt.Sprintf(`data_dir: %s
smtp: {listen: %q, hostname: relay.test}
http: {listen: %q}
metrics: {listen: ""}
tracking:
  base_url: "http://%s"
  trusted_proxies: [127.0.0.0/8]
  ip_mode: none
  geoip_db: %s
log: {level: warn}
accounts:
  - {name: geo, networks: [127.0.0.0/8], api_key_sha256: %s}
`, filepath.Join(dir, "data"), smtpAddr, httpAddr, httpAddr, geoiptest.WriteCity(t), hex.EncodeToString(sum[:]))
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, false, io.Discard, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitListening(t, smtpAddr)
	waitListening(t, httpAddr)

	msg := "From: a@example.com\r\nTo: c@example.net\r\nSubject: geo\r\nMessage-ID: <geo-1@example.com>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello</p></body></html>\r\n"
	if err := smtp.SendMail(smtpAddr, nil, "a@example.com", []string{"c@example.net"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	pixel, _ := outboxPixel(t, filepath.Join(dir, "data", "outbox"))
	req, _ := http.NewRequest(http.MethodGet, pixel, nil)
	req.Header.Set("X-Forwarded-For", "81.2.69.160")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pixel: %s", resp.Status)
	}

	req, _ = http.NewRequest(http.MethodGet, "http://"+httpAddr+"/api/v1/messages/geo-1@example.com", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("API: %s", resp.Status)
	}
	var view struct {
		Events []map[string]any `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		t.Fatal(err)
	}
	if len(view.Events) != 1 {
		t.Fatalf("events = %v", view.Events)
	}
	ev := view.Events[0]
	if ev["country"] != "GB" || ev["city"] != "London" || ev["ip"] != "" {
		t.Errorf("event = %v; want country GB, city London, ip \"\" (ip_mode none)", ev)
	}
}
