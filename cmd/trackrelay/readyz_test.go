package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
)

type readyBody struct {
	Ready    bool `json:"ready"`
	Degraded bool `json:"degraded"`
	Checks   map[string]struct {
		OK       bool   `json:"ok"`
		Error    string `json:"error"`
		LastOK   string `json:"last_ok"`
		Degraded bool   `json:"degraded"`
		Backlog  *int   `json:"backlog"`
		Oldest   string `json:"oldest"`
	} `json:"checks"`
}

func getReadyz(t *testing.T, h http.Handler) (int, readyBody) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	var b readyBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatalf("readyz body %q: %v", rec.Body.String(), err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return rec.Code, b
}

func TestReadyz(t *testing.T) {
	dir := t.TempDir()
	store, err := bolt.Open(filepath.Join(dir, "tracking.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var lastOK, failingSince time.Time
	rd := newReadiness(store, spool, func() (time.Time, time.Time) { return lastOK, failingSince })
	rd.now = func() time.Time { return now }
	h := metricsHandler(prometheus.NewRegistry(), rd)
	// later moves the clock past the cached result.
	later := func() { now = now.Add(readyCacheFor) }

	// Everything fine, no delivery attempted yet.
	code, b := getReadyz(t, h)
	if code != 200 || !b.Ready || !b.Checks["store"].OK || !b.Checks["spool"].OK || !b.Checks["upstream"].OK {
		t.Fatalf("healthy: %d %+v", code, b)
	}
	if left, _ := filepath.Glob(filepath.Join(spool, ".readyz-*")); len(left) != 0 {
		t.Errorf("probe files left in the spool: %v", left)
	}

	// The upstream failing for a short while is not an outage yet.
	later()
	lastOK = now.Add(-20 * time.Minute)
	failingSince = now.Add(-2 * time.Minute)
	code, b = getReadyz(t, h)
	if code != 200 || !b.Checks["upstream"].OK || b.Checks["upstream"].LastOK != lastOK.Format(time.RFC3339) {
		t.Fatalf("upstream failing for 2m: %d %+v", code, b)
	}
	// For longer than upstreamDownAfter, it is.
	later()
	failingSince = now.Add(-upstreamDownAfter - time.Second)
	code, b = getReadyz(t, h)
	if code != 503 || b.Ready || b.Checks["upstream"].OK || !strings.Contains(b.Checks["upstream"].Error, "unreachable since") {
		t.Fatalf("upstream down: %d %+v", code, b)
	}
	if !b.Checks["store"].OK || !b.Checks["spool"].OK {
		t.Errorf("upstream down: other checks failed too: %+v", b)
	}
	lastOK, failingSince = now, time.Time{}

	// An unwritable spool.
	later()
	rd.spool = func() error { return spoolWritable(filepath.Join(dir, "missing")) }
	code, b = getReadyz(t, h)
	if code != 503 || b.Checks["spool"].OK || b.Checks["spool"].Error == "" {
		t.Fatalf("spool not writable: %d %+v", code, b)
	}
	rd.spool = func() error { return spoolWritable(spool) }

	// A closed store.
	later()
	store.Close()
	code, b = getReadyz(t, h)
	if code != 503 || b.Checks["store"].OK || b.Checks["store"].Error == "" {
		t.Fatalf("store closed: %d %+v", code, b)
	}

	// Capture mode: no upstream check.
	later()
	rd.upstream = nil
	if _, b = getReadyz(t, h); b.Checks["upstream"] != (readyBody{}).Checks["upstream"] {
		t.Errorf("capture mode has an upstream check: %+v", b)
	}

	// Only GET and HEAD are served; /healthz is served beside it.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/readyz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "ok" {
		t.Errorf("GET /healthz: %d %q", rec.Code, rec.Body)
	}
}

// Probes within readyCacheFor share one round of checks: a flood of
// requests makes no disk I/O per request.
func TestReadyz_cached(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var storeChecks, spoolChecks int
	storeErr := errors.New("store down")
	rd := &readiness{
		store:    func(context.Context) error { storeChecks++; return storeErr },
		spool:    func() error { spoolChecks++; return spoolWritable(dir) },
		cacheFor: readyCacheFor,
		now:      func() time.Time { return now },
	}
	h := metricsHandler(prometheus.NewRegistry(), rd)
	for i := range 50 {
		now = now.Add(readyCacheFor / 100)
		if code, b := getReadyz(t, h); code != 503 || b.Checks["store"].Error != "store down" {
			t.Fatalf("request %d: %d %+v", i, code, b)
		}
	}
	if storeChecks != 1 || spoolChecks != 1 {
		t.Fatalf("50 requests within %v made %d store and %d spool checks, want 1 each", readyCacheFor, storeChecks, spoolChecks)
	}
	// Once the result is older than readyCacheFor, it is made again.
	now = now.Add(readyCacheFor)
	storeErr = nil
	if code, b := getReadyz(t, h); code != 200 || !b.Ready {
		t.Fatalf("after the cache: %d %+v", code, b)
	}
	if storeChecks != 2 || spoolChecks != 2 {
		t.Errorf("after the cache: %d store and %d spool checks, want 2 each", storeChecks, spoolChecks)
	}
	// Concurrent probes of an expired result make one round between them.
	now = now.Add(readyCacheFor)
	var wg sync.WaitGroup
	var mu sync.Mutex
	rd.store = func(context.Context) error { mu.Lock(); storeChecks++; mu.Unlock(); return nil }
	for range 20 {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		})
	}
	wg.Wait()
	if storeChecks != 3 {
		t.Errorf("20 concurrent probes made %d store checks, want one more", storeChecks-2)
	}
}

// apiGet GETs u with the API key and returns the status and body.
func apiGet(t *testing.T, u, apiKey string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// The public listener tells the internet nothing of the host: /readyz (with
// its checks' errors) is served on the metrics listener only, /healthz on
// both, and a copy that fails on this host is reported in the API and the
// feed with a generic text whose ref leads to the log, never with the path
// it failed on.
func TestServe_publicListenerShowsNoInternals(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	smtpAddr, httpAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	const apiKey = "public-listener-test-key"
	sum := sha256.Sum256([]byte(apiKey))
	cfgPath := filepath.Join(dir, "trackrelay.yaml")
	cfgText := fmt.Sprintf(`data_dir: %s
smtp: {listen: %q, hostname: relay.test}
http: {listen: %q}
metrics: {listen: %q}
tracking: {base_url: "http://%s"}
accounts:
  - {name: app, networks: [127.0.0.0/8], api_key_sha256: %s}
`, data, smtpAddr, httpAddr, metricsAddr, httpAddr, hex.EncodeToString(sum[:]))
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logBuf bytes.Buffer
	logs := &lockedWriter{w: &logBuf}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, false, io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitListening(t, smtpAddr)
	waitListening(t, httpAddr)
	waitListening(t, metricsAddr)

	if code, body := apiGet(t, "http://"+httpAddr+"/readyz", ""); code != http.StatusNotFound || strings.Contains(body, "ready") {
		t.Errorf("public GET /readyz: %d %s", code, body)
	}
	if code, body := apiGet(t, "http://"+metricsAddr+"/readyz", ""); code != http.StatusOK || !strings.Contains(body, `"ready":true`) {
		t.Errorf("metrics GET /readyz: %d %s", code, body)
	}
	for _, addr := range []string{httpAddr, metricsAddr} {
		if code, body := apiGet(t, "http://"+addr+"/healthz", ""); code != http.StatusOK || body != "ok" {
			t.Errorf("GET %s/healthz: %d %q", addr, code, body)
		}
	}

	// A file where the outbox was: every capture fails on this host.
	outbox := filepath.Join(data, "outbox")
	if err := os.RemoveAll(outbox); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(outbox, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	msg := "From: a@example.com\r\nTo: c@example.net\r\nSubject: hi\r\nMessage-ID: <pub-1@example.com>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello</p></body></html>\r\n"
	if err := smtp.SendMail(smtpAddr, nil, "a@example.com", []string{"c@example.net"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	var view struct {
		Recipients []struct {
			Delivery struct {
				Status       string `json:"status"`
				LastResponse string `json:"last_response"`
			} `json:"delivery"`
		} `json:"recipients"`
	}
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var code int
		code, body = apiGet(t, "http://"+httpAddr+"/api/v1/messages/pub-1@example.com", apiKey)
		if code == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &view); err != nil {
				t.Fatal(err)
			}
			if len(view.Recipients) == 1 && view.Recipients[0].Delivery.Status == "deferred" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the copy was never deferred: %d %s", code, body)
		}
	}
	resp := view.Recipients[0].Delivery.LastResponse
	m := regexp.MustCompile(`^local error \(ref ([0-9a-f]{8})\)$`).FindStringSubmatch(resp)
	if m == nil {
		t.Fatalf("last_response %q", resp)
	}
	_, feed := apiGet(t, "http://"+httpAddr+"/api/v1/events", apiKey)
	if !strings.Contains(feed, resp) {
		t.Errorf("the feed does not give the delivery status: %s", feed)
	}
	for what, b := range map[string]string{"API": body, "feed": feed} {
		for _, leak := range []string{dir, "outbox", "not a directory"} {
			if strings.Contains(b, leak) {
				t.Errorf("the %s carries %q: %s", what, leak, b)
			}
		}
	}
	// The operator finds the whole error under the ref.
	logs.mu.Lock()
	logText := logBuf.String()
	logs.mu.Unlock()
	var line string
	for l := range strings.Lines(logText) {
		if strings.Contains(l, "ref="+m[1]) {
			line = l
		}
	}
	if !strings.Contains(line, outbox) {
		t.Errorf("no log line with ref %s holds the error:\n%s", m[1], logText)
	}
}
