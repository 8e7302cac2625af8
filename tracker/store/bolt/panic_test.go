package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	bbolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
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

// The relay's report in a batch whose logging panics still reaches the
// store: reports never touch the hit log.
func TestPanic_collectorKeepsReportsOfItsBatch(t *testing.T) {
	// A report alone waits for company: the hit below joins its batch.
	s := testStore(t, Options{ReportDelay: time.Hour})
	injectPanic(t, guard.Collector, "POISON", -1)
	report := &eventReq{lazy: true, done: make(chan error, 1), fn: func(tx *bbolt.Tx) error {
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
	if err := s.db.View(func(tx *bbolt.Tx) error {
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
	metrics, reg := testMetrics()
	s := testStore(t, Options{Metrics: metrics, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	ctx := context.Background()
	m := putTestMessage(t, s)
	before, beforeReplay := panicsOf(guard.Applier), panicsOf(guard.Replay)
	injectPanic(t, guard.Applier, "POISON", -1)

	for _, ev := range []store.Event{openEvent(m.ID, 0), openEvent("POISON", 1), openEvent(m.ID, 2)} {
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
	if got := metricValue(t, reg, "trackrelay_tracking_events_lost_total"); got != 0 {
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
	if q.Component != guard.Applier || q.Message != "POISON" || q.Seq != 2 || se.Type != store.EventOpen ||
		se.IP != "203.0.113.1" || !strings.Contains(q.Panic, "injected panic") || q.At.IsZero() {
		t.Errorf("quarantined %+v, event %+v", q, se)
	}
	if !strings.Contains(logged.String(), "set aside in the quarantine file") {
		t.Errorf("log: %q", logged.String())
	}

	// Not replayed: a replay would meet it again, and set it aside again.
	injectPanic(t, guard.Replay, "POISON", -1)
	path := crashCopy(t, s)
	r, err := Open(path, Options{})
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
	s := testStore(t, Options{})
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
	s := testStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	release := holdWriter(t, s)
	for _, ev := range []store.Event{openEvent(m.ID, 0), openEvent("POISON", 1), openEvent(m.ID, 2)} {
		if err := s.AddEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	path := crashCopy(t, s)
	release()

	before := panicsOf(guard.Replay)
	injectPanic(t, guard.Replay, "POISON", -1)
	r, err := Open(path, Options{})
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
	r, err = Open(path, Options{})
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
	s := testStore(t, Options{})
	path := s.path + QuarantineSuffix
	if err := appendSynced(path, []byte(`{"component":"applier","message":"A","event":{"t":"open"},"panic":"x"}`+"\n")); err != nil {
		t.Fatal(err)
	}
	if err := appendSynced(path, []byte(`{"component":"applier","mess`)); err != nil {
		t.Fatal(err)
	}
	v, _ := encodeEvent(&storedEvent{Type: store.EventClick, At: testAccepted, Link: 1, Class: classify.Human})
	s.quarantine(guard.Replay, &eventReq{ev: store.Event{Message: "B"}, value: v, seq: 7}, &guard.Panic{Value: "boom"})
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
	metrics, reg := testMetrics()
	before := panicsOf(guard.Retention)
	injectPanic(t, guard.Retention, "1", -1) // the first sweep, at open
	s := testStore(t, Options{Retention: time.Millisecond, RetentionInterval: 10 * time.Millisecond, Metrics: metrics})
	m := putTestMessage(t, s)
	for i := range 2 {
		if err := s.AddEvent(context.Background(), openEvent(m.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a later sweep deletes the events", func() bool {
		return metricValue(t, reg, "trackrelay_store_events_expired_total") == 2
	})
	if got := panicsOf(guard.Retention) - before; got != 1 {
		t.Errorf("retention panics counted: %v, want 1", got)
	}
	if n, _ := countEvents(t, s, m.ID); n != 0 {
		t.Errorf("%d events left", n)
	}
}
