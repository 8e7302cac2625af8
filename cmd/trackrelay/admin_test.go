package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/relay"
)

// The admin socket's routes answer for the relay's queue methods, in the
// JSON `trackrelay queue` reads: the list oldest first, one message, 404
// for an id not queued, retry of one message or all, and delete with or
// without a bounce to the sender.
func TestAdminHandler_routes(t *testing.T) {
	spool, err := relay.OpenSpool(filepath.Join(t.TempDir(), "spool"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	// Never started: the copies stay in its schedule, where each command
	// leaves them.
	d := relay.NewDeliverer(relay.DeliveryConfig{Hostname: "relay.test"}, spool, nil, nil, nil, nil)
	h := adminHandler(spool, d)

	accepted := time.Now().UTC().Add(-time.Hour)
	ids := make([]string, 3)
	for i := range ids {
		env := &relay.Envelope{
			Account: "alice", From: "alice@example.com", AcceptedAt: accepted.Add(time.Duration(i) * time.Minute),
			Recipients: []relay.Recipient{{Address: "bob@example.net", Status: relay.StatusDeferred, Attempts: 1, NextAttempt: time.Now().Add(time.Hour)}},
		}
		if err := spool.Enqueue(env, []byte("From: alice@example.com\r\nSubject: hi\r\n\r\nhello\r\n")); err != nil {
			t.Fatal(err)
		}
		d.Submit(env, true)
		ids[i] = env.ID
	}

	call := func(method, path string, wantCode int, into any) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "http://admin"+path, nil))
		if rec.Code != wantCode {
			t.Fatalf("%s %s: %d %s, want %d", method, path, rec.Code, rec.Body, wantCode)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: content type %q", method, path, ct)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), into); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, rec.Body)
		}
	}

	var list []queueEntry
	call("GET", "/queue", http.StatusOK, &list)
	if len(list) != 3 || list[0].ID != ids[0] || list[2].ID != ids[2] || list[1].Recipients[0].Status != relay.StatusDeferred {
		t.Fatalf("queue list %+v, want %v oldest first", list, ids)
	}
	var one relay.Envelope
	call("GET", "/queue/"+ids[1], http.StatusOK, &one)
	if one.ID != ids[1] || one.From != "alice@example.com" {
		t.Errorf("show: %+v", one)
	}
	var problem map[string]string
	call("GET", "/queue/NOPE", http.StatusNotFound, &problem)
	if problem["error"] != "no such message in the queue" {
		t.Errorf("show unknown: %v", problem)
	}
	call("POST", "/queue/NOPE/retry", http.StatusNotFound, &problem)

	var counts map[string]int
	call("POST", "/queue/"+ids[0]+"/retry", http.StatusOK, &counts)
	if counts["rescheduled"] != 1 || counts["released"] != 0 {
		t.Errorf("retry one: %v", counts)
	}
	call("POST", "/queue/retry", http.StatusOK, &counts)
	if counts["rescheduled"] != 3 || counts["released"] != 0 {
		t.Errorf("retry all: %v", counts)
	}

	var deleted map[string]string
	call("POST", "/queue/"+ids[0]+"/delete", http.StatusOK, &deleted)
	if deleted["deleted"] != ids[0] || deleted["result"] != "dropped" {
		t.Errorf("delete: %v", deleted)
	}
	call("POST", "/queue/"+ids[1]+"/delete?bounce=true", http.StatusOK, &deleted)
	if deleted["deleted"] != ids[1] || deleted["result"] != "bounced" {
		t.Errorf("delete with a bounce: %v", deleted)
	}
	for _, id := range ids[:2] {
		if _, err := spool.Get(id); !errors.Is(err, relay.ErrNoSuchMessage) {
			t.Errorf("%s still queued after delete: %v", id, err)
		}
	}
	// Left: the third message and the one bounce, to alice, about the
	// copy deleted with a bounce.
	call("GET", "/queue", http.StatusOK, &list)
	var notices int
	for _, e := range list {
		if e.ID != ids[2] && e.From == "" && e.Recipients[0].Address == "alice@example.com" {
			notices++
		}
	}
	if len(list) != 2 || notices != 1 {
		t.Errorf("queue after the deletes: %+v, want the third message and one notice", list)
	}
	call("POST", "/queue/"+ids[0]+"/delete", http.StatusNotFound, &problem)
	if !strings.Contains(problem["error"], "no such message") {
		t.Errorf("delete unknown: %v", problem)
	}
}
