package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"
)

// upstreamDownAfter is how long the upstream may fail without a single
// answer before /readyz reports the relay not ready.
const upstreamDownAfter = 10 * time.Minute

// readiness answers GET /readyz: 200 when the tracking store answers, the
// spool directory takes a write, and the upstream (if any) has not been
// unreachable for upstreamDownAfter; else 503. The body is JSON naming each
// check, for the operator.
type readiness struct {
	store    func(context.Context) error
	spoolDir string
	upstream func() (lastOK, failingSince time.Time) // nil: capture mode
	downFor  time.Duration
	now      func() time.Time
}

// pinger is a store that can tell whether it answers (bolt.Store).
type pinger interface {
	Ping(context.Context) error
}

func newReadiness(store pinger, spoolDir string, upstream func() (time.Time, time.Time)) *readiness {
	return &readiness{
		store:    store.Ping,
		spoolDir: spoolDir,
		upstream: upstream,
		downFor:  upstreamDownAfter,
		now:      time.Now,
	}
}

type readyCheck struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
	LastOK string `json:"last_ok,omitempty"`
}

func (rd *readiness) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	checks := map[string]readyCheck{}
	ready := true
	add := func(name string, err error) {
		c := readyCheck{OK: err == nil}
		if err != nil {
			c.Error = err.Error()
			ready = false
		}
		checks[name] = c
	}
	add("store", rd.store(ctx))
	add("spool", spoolWritable(rd.spoolDir))
	if rd.upstream != nil {
		lastOK, failingSince := rd.upstream()
		var err error
		if !failingSince.IsZero() && rd.now().Sub(failingSince) >= rd.downFor {
			err = fmt.Errorf("unreachable since %s", failingSince.UTC().Format(time.RFC3339))
		}
		add("upstream", err)
		if !lastOK.IsZero() {
			c := checks["upstream"]
			c.LastOK = lastOK.UTC().Format(time.RFC3339)
			checks["upstream"] = c
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(struct {
		Ready  bool                  `json:"ready"`
		Checks map[string]readyCheck `json:"checks"`
	}{ready, checks})
}

// spoolWritable creates, syncs and removes a small file in the spool
// directory: a full disk or a read-only file system fails it.
func spoolWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".readyz-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err = f.Write([]byte("ok\n")); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// withReadyz serves /readyz from rd and everything else from h.
func withReadyz(h http.Handler, rd http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			rd.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
