package tracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/classify"
)

// injectPanic makes the job boundaries of component panic for item, the
// first times times (always, if times < 0), until the test ends. It
// returns how many panics it caused.
func injectPanic(t *testing.T, component, item string, times int32) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	t.Cleanup(guard.Inject(func(c, it string) bool {
		if c != component || it != item {
			return false
		}
		if times >= 0 && n.Load() >= times {
			return false
		}
		n.Add(1)
		return true
	}))
	return &n
}

func panicsOf(component string) float64 {
	return testutil.ToFloat64(guard.Panics.WithLabelValues(component))
}

// waitFor polls cond until it holds, failing the test after a generous
// while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A panic while the collector logs a batch is counted once; the batch's
// hit is served all the same and its loss counted as a store failure; the
// collector goes on with the next hits.
func TestPanic_collectorAnswersItsBatch(t *testing.T) {
	s := testStore(t, BoltOptions{})
	e := newTestEnv(t, s, nil)
	before := panicsOf(guard.Collector)
	injectPanic(t, guard.Collector, e.msg.ID, 1)

	if resp, body := e.do(t, http.MethodGet, e.mint.OpenURL(), nil); resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("pixel: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := panicsOf(guard.Collector) - before; got != 1 {
		t.Errorf("collector panics counted: %v, want 1", got)
	}
	if got := counterValue(t, e.reg, "trackrelay_tracking_events_lost_total"); got != 1 {
		t.Errorf("events_lost_total = %v, want 1", got)
	}
	if resp, _ := e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/a"), nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("click: %d", resp.StatusCode)
	}
	v := e.view(t)
	if len(v.Events) != 1 || v.Events[0].Type != EventClick {
		t.Errorf("events %+v, want the click after the panic only", v.Events)
	}
}

// The relay's report in a batch whose logging panics still reaches the
// store: reports never touch the hit log.
func TestPanic_collectorKeepsReportsOfItsBatch(t *testing.T) {
	// A report alone waits for company: the hit below joins its batch.
	s := testStore(t, BoltOptions{ReportDelay: time.Hour})
	injectPanic(t, guard.Collector, "POISON", -1)
	report := &eventReq{lazy: true, done: make(chan error, 1), fn: func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte("test-report"), []byte("kept"))
	}}
	s.reqs <- report
	err := s.AddEvent(context.Background(), openEvent("POISON", 0))
	var p *guard.Panic
	if !errors.As(err, &p) || p.Component != guard.Collector {
		t.Fatalf("hit in a panicking batch: %v", err)
	}
	if err := <-report.done; err != nil {
		t.Fatalf("report of the batch: %v", err)
	}
	var got []byte
	if err := s.db.View(func(tx *bolt.Tx) error {
		got = bytes.Clone(tx.Bucket(bucketMeta).Get([]byte("test-report")))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "kept" {
		t.Errorf("report not committed: %q", got)
	}
}

// A logged hit whose commit panics in the applier is set aside in the
// quarantine file with its log sequence, the hits around it are stored,
// and the log's applied sequence moves past it: a restart does not
// replay it.
func TestPanic_applierQuarantinesAHit(t *testing.T) {
	var logged bytes.Buffer
	metrics := NewMetrics(nil)
	s := testStore(t, BoltOptions{Metrics: metrics, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	ctx := context.Background()
	m := putTestMessage(t, s)
	before, beforeReplay := panicsOf(guard.Applier), panicsOf(guard.Replay)
	injectPanic(t, guard.Applier, "POISON", -1)

	for _, ev := range []Event{openEvent(m.ID, 0), openEvent("POISON", 1), openEvent(m.ID, 2)} {
		if err := s.AddEvent(ctx, ev); err != nil {
			t.Fatalf("%s: %v", ev.Message, err) // answered once logged
		}
	}
	if n, _ := countEvents(t, s, m.ID); n != 2 {
		t.Errorf("%d events of the message, want the 2 around the poisoned hit", n)
	}
	if err := s.AddEvent(ctx, openEvent(m.ID, 3)); err != nil {
		t.Fatal(err)
	}
	if n, _ := countEvents(t, s, m.ID); n != 3 {
		t.Errorf("%d events after the panic, want 3", n)
	}
	if got := panicsOf(guard.Applier) - before; got != 1 {
		t.Errorf("applier panics counted: %v, want 1", got)
	}
	if got := testutil.ToFloat64(metrics.eventsLost); got != 0 {
		t.Errorf("events_lost_total = %v: a quarantined hit is not lost", got)
	}
	if a, l := s.applied.Load(), s.logged.Load(); a != l {
		t.Errorf("applied %d, logged %d", a, l)
	}
	hits, err := ReadQuarantine(s.path + QuarantineSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 1 {
		t.Fatalf("quarantine: %+v, want the poisoned hit", hits)
	}
	q := hits[0]
	var se storedEvent
	if err := json.Unmarshal(q.Event, &se); err != nil {
		t.Fatal(err)
	}
	if q.Component != guard.Applier || q.Message != "POISON" || q.Seq != 2 || se.Type != EventOpen ||
		se.IP != "203.0.113.1" || !strings.Contains(q.Panic, "injected panic") || q.At.IsZero() {
		t.Errorf("quarantined %+v, event %+v", q, se)
	}
	if !strings.Contains(logged.String(), "set aside in the quarantine file") {
		t.Errorf("log: %q", logged.String())
	}

	// Not replayed: a replay would meet it again, and set it aside again.
	injectPanic(t, guard.Replay, "POISON", -1)
	path := crashCopy(t, s)
	r, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if hits, err := ReadQuarantine(path + QuarantineSuffix); err != nil || len(hits) != 0 {
		t.Errorf("after reopening: quarantine %+v, %v", hits, err)
	}
	if n, _ := countEvents(t, r, m.ID); n != 3 {
		t.Errorf("after reopening: %d events", n)
	}
	if got := panicsOf(guard.Applier) - before + panicsOf(guard.Replay) - beforeReplay; got != 1 {
		t.Errorf("panics after reopening: %v, want still 1", got)
	}
}

// A panic in a commit outside any one request fails the commit as a
// disk error does: the logged hits are committed on the next try.
func TestPanic_applierCommitPanicIsRetried(t *testing.T) {
	s := testStore(t, BoltOptions{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	before := panicsOf(guard.Applier)
	var once atomic.Bool
	panicky := func() error {
		if once.CompareAndSwap(false, true) {
			panic("commit")
		}
		return nil
	}
	commitFault.Store(&panicky)
	defer commitFault.Store(nil)
	if err := s.AddEvent(ctx, openEvent(m.ID, 0)); err != nil {
		t.Fatal(err)
	}
	if n, _ := countEvents(t, s, m.ID); n != 1 {
		t.Errorf("%d events, want the hit committed on the retry", n)
	}
	if got := panicsOf(guard.Applier) - before; got != 1 {
		t.Errorf("applier panics counted: %v, want 1", got)
	}
	if hits, _ := ReadQuarantine(s.path + QuarantineSuffix); len(hits) != 0 {
		t.Errorf("quarantined %+v: the panic was no one hit's", hits)
	}
}

// A hit-log record whose replay panics at open is set aside in the
// quarantine file and skipped: the store opens, replays the others and
// serves, and the next open does not meet the record again.
func TestPanic_replayQuarantinesAndOpens(t *testing.T) {
	s := testStore(t, BoltOptions{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	release := holdWriter(t, s)
	for _, ev := range []Event{openEvent(m.ID, 0), openEvent("POISON", 1), openEvent(m.ID, 2)} {
		if err := s.AddEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	path := crashCopy(t, s)
	release()

	before := panicsOf(guard.Replay)
	injectPanic(t, guard.Replay, "POISON", -1)
	r, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("open with a poisoned record in the log: %v", err)
	}
	if got := panicsOf(guard.Replay) - before; got != 1 {
		t.Errorf("replay panics counted: %v, want 1", got)
	}
	hits, err := ReadQuarantine(path + QuarantineSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 1 || hits[0].Component != guard.Replay || hits[0].Message != "POISON" || hits[0].Seq != 2 {
		t.Fatalf("quarantine: %+v", hits)
	}
	if n, _ := countEvents(t, r, m.ID); n != 2 {
		t.Errorf("%d events replayed, want the 2 others", n)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// The replay recorded the log past the record: the next open does not
	// meet it again.
	r, err = OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := panicsOf(guard.Replay) - before; got != 1 {
		t.Errorf("the record was replayed again: %v panics", got)
	}
	if hits, _ := ReadQuarantine(path + QuarantineSuffix); len(hits) != 1 {
		t.Errorf("quarantine after the second open: %d hits", len(hits))
	}
	if err := r.AddEvent(ctx, openEvent(m.ID, 3)); err != nil {
		t.Fatal(err)
	}
	if n, _ := countEvents(t, r, m.ID); n != 3 {
		t.Errorf("%d events after serving one more, want 3", n)
	}
}

// A line cut short by a crash is skipped by the reader and does not run
// into the next one.
func TestQuarantine_tornLine(t *testing.T) {
	s := testStore(t, BoltOptions{})
	path := s.path + QuarantineSuffix
	if err := appendSynced(path, []byte(`{"component":"applier","message":"A","event":{"t":"open"},"panic":"x"}`+"\n")); err != nil {
		t.Fatal(err)
	}
	if err := appendSynced(path, []byte(`{"component":"applier","mess`)); err != nil {
		t.Fatal(err)
	}
	v, _ := encodeEvent(&storedEvent{Type: EventClick, At: testAccepted, Link: 1, Class: classify.Human})
	s.quarantine(guard.Replay, &eventReq{ev: Event{Message: "B"}, value: v, seq: 7}, &guard.Panic{Value: "boom"})
	hits, err := ReadQuarantine(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 2 || hits[0].Message != "A" || hits[1].Message != "B" || hits[1].Seq != 7 ||
		hits[1].Panic != "boom" || string(hits[1].Event) != string(v) {
		t.Errorf("read %+v", hits)
	}
}

// A retention sweep that panics is counted, and the next sweep runs and
// deletes what is old.
func TestPanic_retentionSweepRunsAgain(t *testing.T) {
	metrics := NewMetrics(nil)
	before := panicsOf(guard.Retention)
	injectPanic(t, guard.Retention, "1", -1) // the first sweep, at open
	s := testStore(t, BoltOptions{Retention: time.Millisecond, RetentionInterval: 10 * time.Millisecond, Metrics: metrics})
	m := putTestMessage(t, s)
	for i := range 2 {
		if err := s.AddEvent(context.Background(), openEvent(m.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a later sweep deletes the events", func() bool {
		return testutil.ToFloat64(metrics.eventsExpired) == 2
	})
	if got := panicsOf(guard.Retention) - before; got != 1 {
		t.Errorf("retention panics counted: %v, want 1", got)
	}
	if n, _ := countEvents(t, s, m.ID); n != 0 {
		t.Errorf("%d events left", n)
	}
}

// webhookEnv is a store with alice's webhook, an open and a click in its
// outbox, and a receiver on loopback.
func webhookEnv(t *testing.T) (*BoltStore, *receiver, *httptest.Server, []FeedEntry) {
	t.Helper()
	rc := &receiver{secret: []byte("whsec-0123456789abcdef"), got: map[string]FeedEntry{}}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	s := testStore(t, BoltOptions{WebhookAccounts: []string{"alice"}})
	e := newTestEnv(t, s, nil)
	e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/a"), nil)
	entries := e.feed(t, "", 0).Events
	if len(entries) != 2 || s.outboxN.Load() != 2 {
		t.Fatalf("feed %+v, outbox %d", entries, s.outboxN.Load())
	}
	return s, rc, srv, entries
}

func (rc *receiver) received() map[string]FeedEntry {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string]FeedEntry, len(rc.got))
	for k, v := range rc.got {
		out[k] = v
	}
	return out
}

// A webhook send that panics is a failed attempt: counted as a panic and
// a failure, retried with backoff, and delivered when it goes through;
// the other event is sent meanwhile.
func TestPanic_webhookSendIsAFailedAttempt(t *testing.T) {
	s, rc, srv, entries := webhookEnv(t)
	open := entries[0].ID
	before := panicsOf(guard.Webhook)
	injectPanic(t, guard.Webhook, open, 1)
	metrics := NewMetrics(nil)
	ws := StartWebhooks(s, WebhookOptions{Hooks: []Webhook{{Account: "alice", URL: srv.URL, Secret: rc.secret}},
		BackoffMin: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Metrics: metrics})
	defer ws.Close()
	waitFor(t, "both entries delivered", func() bool { return len(rc.received()) == 2 && s.outboxN.Load() == 0 })
	if got := panicsOf(guard.Webhook) - before; got != 1 {
		t.Errorf("webhook panics counted: %v, want 1", got)
	}
	failures := testutil.ToFloat64(metrics.webhookAttempts.WithLabelValues("failure"))
	successes := testutil.ToFloat64(metrics.webhookAttempts.WithLabelValues("success"))
	if failures != 1 || successes != 2 {
		t.Errorf("attempts: %v failures, %v successes; want the panic as 1 failure", failures, successes)
	}
	if _, ok := rc.received()[open]; !ok {
		t.Errorf("the entry whose send panicked was not retried")
	}
}

// A send that panics every time is given up after MaxAge, like any
// failure, and the sender goes on.
func TestPanic_webhookSendGivenUp(t *testing.T) {
	s, rc, srv, entries := webhookEnv(t)
	open := entries[0].ID
	before := panicsOf(guard.Webhook)
	injected := injectPanic(t, guard.Webhook, open, -1)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	metrics := NewMetrics(nil)
	ws := StartWebhooks(s, WebhookOptions{Hooks: []Webhook{{Account: "alice", URL: srv.URL, Secret: rc.secret}},
		BackoffMin: time.Millisecond, BackoffMax: time.Millisecond, Now: clock, Metrics: metrics})
	defer ws.Close()
	waitFor(t, "the click delivered and the open tried", func() bool {
		return len(rc.received()) == 1 && injected.Load() >= 1
	})
	mu.Lock()
	now = now.Add(DefaultWebhookMaxAge + time.Minute)
	mu.Unlock()
	waitFor(t, "the open given up", func() bool {
		s.wakeOutbox()
		return s.outboxN.Load() == 0
	})
	if got := testutil.ToFloat64(metrics.webhookExpired); got != 1 {
		t.Errorf("expired_total = %v, want 1", got)
	}
	if _, ok := rc.received()[open]; ok {
		t.Error("the entry whose send panics was delivered")
	}
	panics := panicsOf(guard.Webhook) - before
	if failures := testutil.ToFloat64(metrics.webhookAttempts.WithLabelValues("failure")); panics != float64(injected.Load()) || failures != panics {
		t.Errorf("%v panics counted, %d injected, %v failed attempts", panics, injected.Load(), failures)
	}
}

// A panic in a round outside any one send (here while removing the
// delivered entries) ends that round only: the sender's next round sends
// the entries again (at least once) and removes them.
func TestPanic_webhookRoundGoesOn(t *testing.T) {
	s, rc, srv, _ := webhookEnv(t)
	before := panicsOf(guard.Webhook)
	var once atomic.Bool
	panicky := func() error {
		if once.CompareAndSwap(false, true) {
			panic("outbox transaction")
		}
		return nil
	}
	outboxFault.Store(&panicky)
	defer outboxFault.Store(nil)
	ws := StartWebhooks(s, WebhookOptions{Hooks: []Webhook{{Account: "alice", URL: srv.URL, Secret: rc.secret}}})
	defer ws.Close()
	waitFor(t, "the outbox emptied", func() bool { return s.outboxN.Load() == 0 })
	if got := panicsOf(guard.Webhook) - before; got != 1 {
		t.Errorf("webhook panics counted: %v, want 1", got)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.got) != 2 || rc.tries != 4 {
		t.Errorf("%d entries in %d tries, want 2 sent twice", len(rc.got), rc.tries)
	}
}
