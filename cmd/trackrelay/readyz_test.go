package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store/bolt"
)

type readyBody struct {
	Ready  bool `json:"ready"`
	Checks map[string]struct {
		OK     bool   `json:"ok"`
		Error  string `json:"error"`
		LastOK string `json:"last_ok"`
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
	other := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := withReadyz(other, rd)

	// Everything fine, no delivery attempted yet.
	code, b := getReadyz(t, h)
	if code != 200 || !b.Ready || !b.Checks["store"].OK || !b.Checks["spool"].OK || !b.Checks["upstream"].OK {
		t.Fatalf("healthy: %d %+v", code, b)
	}
	if left, _ := filepath.Glob(filepath.Join(spool, ".readyz-*")); len(left) != 0 {
		t.Errorf("probe files left in the spool: %v", left)
	}

	// The upstream failing for a short while is not an outage yet.
	lastOK = now.Add(-20 * time.Minute)
	failingSince = now.Add(-2 * time.Minute)
	code, b = getReadyz(t, h)
	if code != 200 || !b.Checks["upstream"].OK || b.Checks["upstream"].LastOK != "2026-01-02T02:44:05Z" {
		t.Fatalf("upstream failing for 2m: %d %+v", code, b)
	}
	// For longer than upstreamDownAfter, it is.
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
	rd.spoolDir = filepath.Join(dir, "missing")
	code, b = getReadyz(t, h)
	if code != 503 || b.Checks["spool"].OK || b.Checks["spool"].Error == "" {
		t.Fatalf("spool not writable: %d %+v", code, b)
	}
	rd.spoolDir = spool

	// A closed store.
	store.Close()
	code, b = getReadyz(t, h)
	if code != 503 || b.Checks["store"].OK || b.Checks["store"].Error == "" {
		t.Fatalf("store closed: %d %+v", code, b)
	}

	// Capture mode: no upstream check.
	rd.upstream = nil
	if _, b = getReadyz(t, h); b.Checks["upstream"] != (readyBody{}).Checks["upstream"] {
		t.Errorf("capture mode has an upstream check: %+v", b)
	}

	// Other paths go to the wrapped handler; only GET and HEAD are served.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusTeapot {
		t.Errorf("/healthz went to readyz: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/readyz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz: %d", rec.Code)
	}
}
