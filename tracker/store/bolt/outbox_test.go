package bolt

import (
	"context"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
)

// The outbox gauge counts what has been committed: a transaction that
// removes entries and then fails leaves the gauge at the rows still there.
func TestOutboxGauge_countsCommittedRemovals(t *testing.T) {
	metrics, reg := testMetrics()
	s := testStore(t, Options{WebhookAccounts: []string{"alice"}, Metrics: metrics})
	ctx := context.Background()
	m := putTestMessage(t, s)
	for i := range 3 {
		if err := s.AddEvent(ctx, openEvent(m.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	s.caughtUp(ctx)
	rows := func() float64 {
		var n int
		if err := s.db.View(func(tx *bbolt.Tx) error {
			n = tx.Bucket(bucketOutbox).Stats().KeyN
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return float64(n)
	}
	check := func(when string, want float64) {
		t.Helper()
		if g, r := metricValue(t, reg, "trackrelay_webhook_outbox_entries"), rows(); g != r || r != want {
			t.Errorf("%s: gauge %v, %v rows in the outbox, want %v", when, g, r, want)
		}
	}
	check("queued", 3)
	items, err := s.OutboxDue(time.Now().Add(time.Hour), 10)
	if err != nil || len(items) != 3 {
		t.Fatalf("due: %d, %v", len(items), err)
	}

	stop := fault(&outboxFault)
	if err := s.OutboxDone(items[:2]); err == nil {
		t.Fatal("OutboxDone succeeded with the fault")
	}
	check("after a failed removal of delivered entries", 3)
	// Entries whose event is gone are removed as they are read.
	if err := s.Erase(ctx, "alice", m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OutboxDue(time.Now().Add(time.Hour), 10); err == nil {
		t.Fatal("OutboxDue removed the erased entries with the fault")
	}
	check("after a failed removal of erased entries", 3)
	stop()

	if err := s.OutboxDone(items[:1]); err != nil {
		t.Fatal(err)
	}
	check("after a removal", 2)
	if items, err := s.OutboxDue(time.Now().Add(time.Hour), 10); err != nil || len(items) != 0 {
		t.Fatalf("due after erasing: %d, %v", len(items), err)
	}
	check("after erasing", 0)
}
