package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres"
)

// upstreamDownAfter is how long the upstream may fail without a single
// answer before /readyz reports the relay not ready.
const upstreamDownAfter = 10 * time.Minute

// readyCacheFor is how long /readyz answers from its last checks: probing
// it often costs no disk I/O per request.
const readyCacheFor = time.Second

// readiness answers GET /readyz on the metrics listener: 200 when the
// tracking store answers, the spool directory takes a write, and the
// upstream (if any) has not been unreachable for upstreamDownAfter; else
// 503. The body is JSON naming each check, with its error for the
// operator: it is never served on the public listener, whose clients must
// not learn file paths or make the relay write to disk.
//
// With the PostgreSQL store, "store" is the store being open, and two more
// checks say how the fleet's ledger fares: "database" (PostgreSQL answers
// and takes commits) and "hit_log" (no hit waits in the node's hit log to
// be shipped, and the log takes appends). They only degrade: the node
// still serves hits (from the log) and accepts mail while they fail, so
// the answer stays 200, with "degraded": true.
type readiness struct {
	store    func(context.Context) error
	fleet    func(context.Context) postgres.Health // nil: bbolt
	spool    func() error
	upstream func() (lastOK, failingSince time.Time) // nil: capture mode
	downFor  time.Duration
	cacheFor time.Duration
	now      func() time.Time

	mu        sync.Mutex // held while checking, so that checks never overlap
	checkedAt time.Time
	last      readyResult
}

// pinger is a store that can tell whether it answers (bolt.Store).
type pinger interface {
	Ping(context.Context) error
}

// fleetStore is a store with a database and a hit log (postgres.Store).
type fleetStore interface {
	Health(context.Context) postgres.Health
}

func newReadiness(st pinger, spoolDir string, upstream func() (time.Time, time.Time)) *readiness {
	rd := &readiness{
		store:    st.Ping,
		spool:    func() error { return spoolWritable(spoolDir) },
		upstream: upstream,
		downFor:  upstreamDownAfter,
		cacheFor: readyCacheFor,
		now:      time.Now,
	}
	if ts, ok := st.(*trackingStore); ok {
		st = ts.backend
	}
	if f, ok := st.(fleetStore); ok {
		rd.fleet = f.Health
	}
	return rd
}

type readyCheck struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
	LastOK string `json:"last_ok,omitempty"`
	// Degraded: this check failing does not make the node not ready.
	Degraded bool `json:"degraded,omitempty"`
	// Backlog and Oldest: the hit log's hits waiting to be shipped, and
	// when the oldest was logged.
	Backlog *int   `json:"backlog,omitempty"`
	Oldest  string `json:"oldest,omitempty"`
}

type readyResult struct {
	Ready bool `json:"ready"`
	// Degraded: ready, but a degrading check fails.
	Degraded bool                  `json:"degraded"`
	Checks   map[string]readyCheck `json:"checks"`
}

func (rd *readiness) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	res := rd.result()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !res.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(res)
}

// result returns the checks made within cacheFor, or makes them again.
func (rd *readiness) result() readyResult {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	now := rd.now()
	if !rd.checkedAt.IsZero() && !now.Before(rd.checkedAt) && now.Sub(rd.checkedAt) < rd.cacheFor {
		return rd.last
	}
	// Not the request's context: the result is shared with the requests
	// that come after, whose client may still be there.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res := readyResult{Ready: true, Checks: map[string]readyCheck{}}
	add := func(name string, err error) {
		c := readyCheck{OK: err == nil}
		if err != nil {
			c.Error = err.Error()
			res.Ready = false
		}
		res.Checks[name] = c
	}
	if rd.fleet != nil {
		rd.addFleet(ctx, &res, add)
	} else {
		add("store", rd.store(ctx))
	}
	add("spool", rd.spool())
	if rd.upstream != nil {
		lastOK, failingSince := rd.upstream()
		var err error
		if !failingSince.IsZero() && now.Sub(failingSince) >= rd.downFor {
			err = fmt.Errorf("unreachable since %s", failingSince.UTC().Format(time.RFC3339))
		}
		add("upstream", err)
		if !lastOK.IsZero() {
			c := res.Checks["upstream"]
			c.LastOK = lastOK.UTC().Format(time.RFC3339)
			res.Checks["upstream"] = c
		}
	}
	rd.checkedAt, rd.last = now, res
	return res
}

// addFleet adds the checks of a store with a database and a hit log.
func (rd *readiness) addFleet(ctx context.Context, res *readyResult, add func(string, error)) {
	h := rd.fleet(ctx)
	var err error
	if h.Closed {
		err = store.ErrClosed
	}
	add("store", err)
	degrade := func(name string, err error) readyCheck {
		c := readyCheck{OK: err == nil}
		if err != nil {
			c.Error, c.Degraded = err.Error(), true
			res.Degraded = true
		}
		return c
	}
	res.Checks["database"] = degrade("database", h.Database)
	err = h.HitLog
	if err == nil && h.Backlog > 0 {
		err = fmt.Errorf("%d hits not yet shipped to PostgreSQL", h.Backlog)
	}
	c := degrade("hit_log", err)
	c.Backlog = &h.Backlog
	if h.Backlog > 0 && !h.Oldest.IsZero() {
		c.Oldest = h.Oldest.UTC().Format(time.RFC3339)
	}
	res.Checks["hit_log"] = c
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

// healthz answers GET /healthz on the metrics listener as the tracker does
// on the public one: the process serves.
func healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodGet {
		w.Write([]byte("ok"))
	}
}

// metricsHandler serves the operator's listener: /metrics from reg,
// /readyz from ready, and /healthz.
func metricsHandler(reg *prometheus.Registry, ready http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/readyz", ready)
	mux.HandleFunc("/healthz", healthz)
	return mux
}
