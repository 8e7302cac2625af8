package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
	"github.com/trackrelay/trackrelay/tracker/store/storetest"
)

var _ storetest.Sweeper = (*Store)(nil)

// waitFor polls cond until it holds, failing t after a minute: what it
// waits for is a state, not a time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockHolder returns the backend pid that holds the maintenance lock, or 0.
func lockHolder(t *testing.T, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var pid int
	err = conn.QueryRow(context.Background(), `SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 2 AND granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		maintenanceLockA, maintenanceLockB).Scan(&pid)
	if errorsIsNoRows(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// One node of two leads the maintenance at a time; when the leader
// closes, the other takes over; when the leader's session dies (a node
// killed, its connection cut), the lock goes with it and a node leads
// again, on a live session, while the node that lost it knows it.
func TestMaintenanceLeader(t *testing.T) {
	dsn := pgtest.DSN(t)
	m1, reg1 := testMetrics()
	m2, reg2 := testMetrics()
	a := testStore(t, dsn, Options{LeaderPoll: 20 * time.Millisecond, Metrics: m1})
	b := testStore(t, dsn, Options{LeaderPoll: 20 * time.Millisecond, Metrics: m2})
	waitFor(t, "a leader", func() bool { return a.Leader() || b.Leader() })
	if a.Leader() && b.Leader() {
		t.Fatal("two leaders")
	}
	leader, other, otherReg := a, b, reg2
	if b.Leader() {
		leader, other, otherReg = b, a, reg1
	}
	if got := metricValue(t, reg1, "trackrelay_store_maintenance_leader") + metricValue(t, reg2, "trackrelay_store_maintenance_leader"); got != 1 {
		t.Errorf("leader gauges sum to %v", got)
	}
	// A new leader runs the tasks at once.
	waitFor(t, "the leader's first run", func() bool {
		return metricValue(t, reg1, "trackrelay_store_maintenance_last_success_timestamp_seconds")+
			metricValue(t, reg2, "trackrelay_store_maintenance_last_success_timestamp_seconds") > 0
	})
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other node to take over", other.Leader)
	if metricValue(t, otherReg, "trackrelay_store_maintenance_leader") != 1 {
		t.Error("the new leader's gauge is not 1")
	}

	// The leader's session dies.
	c := testStore(t, dsn, Options{LeaderPoll: 20 * time.Millisecond})
	pid := lockHolder(t, dsn)
	if pid == 0 {
		t.Fatal("nobody holds the maintenance lock")
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one node leading on a live session, and knowing it", func() bool {
		p := lockHolder(t, dsn)
		return p != 0 && p != pid && other.Leader() != c.Leader()
	})
}

// Maintenance keeps every table it tends bounded: day after day of hits
// with a retention of two days, the events, feed entries, webhook outbox
// rows, retention marks and tallies stop growing; the counts keep
// growing with the hits.
func TestMaintenanceBoundsTables(t *testing.T) {
	dsn := pgtest.DSN(t)
	s := testStore(t, dsn, Options{Retention: 48 * time.Hour, MaintenanceInterval: time.Hour, WebhookAccounts: []string{"alice"}})
	ctx := context.Background()
	const msgs, perDay, days = 3, 10, 6
	for i := range msgs {
		putMessage(t, s, fmt.Sprintf("Q%dDAY", i), 2)
	}
	start := time.Now()
	count := func(table string) int {
		t.Helper()
		var n int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for d := range days {
		now := start.Add(time.Duration(d) * 24 * time.Hour)
		for i := range perDay {
			id := fmt.Sprintf("Q%dDAY", i%msgs)
			e := store.Event{Type: store.EventClick, Message: id, Link: i % 2, URL: "https://example.com/x", At: now.Add(time.Duration(i) * time.Minute),
				IP: "203.0.113.9", UserAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", Class: classify.Human}
			if i%3 == 0 {
				e.Type, e.Link, e.URL = store.EventOpen, -1, ""
			}
			if err := s.AddEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.Maintain(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		ev, feed, outbox, marks, tallies := count("events"), count("feed"), count("outbox"), count("retention_marks"), count("tallies")
		t.Logf("day %d: deleted %+v; rows: events %d, feed %d, outbox %d, marks %d, tallies %d", d, n, ev, feed, outbox, marks, tallies)
		// The mark of day d-2 is the newest older than two days: the
		// hits of the last two days stay.
		if want := min(d+1, 2) * perDay; ev != want || feed != want {
			t.Errorf("day %d: %d events and %d feed entries, want %d", d, ev, feed, want)
		}
		// Those of the last two days and today's, and the one of the
		// node's own first run, on the real clock.
		if marks > 4 {
			t.Errorf("day %d: %d retention marks", d, marks)
		}
		// A tally per copy, type, class and link: 3 messages' copies, open
		// and two links, all human.
		if tallies > msgs*3 {
			t.Errorf("day %d: %d tallies", d, tallies)
		}
		// The outbox rows (no sender here) are older than the purge age
		// from the second day on, and go with their feed entries anyway.
		if d >= 2 && outbox != 0 || outbox > feed {
			t.Errorf("day %d: %d outbox rows", d, outbox)
		}
	}
	total := 0
	for i := range msgs {
		v, err := s.Lookup(ctx, "alice", fmt.Sprintf("Q%dDAY", i))
		if err != nil {
			t.Fatal(err)
		}
		r := v.Recipients[0]
		total += r.Opens + r.Clicks
	}
	if total != perDay*days {
		t.Errorf("%d hits counted, want %d", total, perDay*days)
	}
	// Erasing a message takes its tallies too.
	if err := s.Erase(ctx, "alice", "Q0DAY"); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM tallies WHERE message = 'Q0DAY'").Scan(&left); err != nil || left != 0 {
		t.Errorf("%d tallies of an erased message (%v)", left, err)
	}
}

// A webhook delivery that no sender took within the retry period and its
// last attempt (a node whose account no longer has a webhook) is purged;
// one that a sender may still try stays, and so does its feed entry.
func TestMaintenanceOutboxPurge(t *testing.T) {
	dsn := pgtest.DSN(t)
	m, reg := testMetrics()
	s := testStore(t, dsn, Options{WebhookAccounts: []string{"alice"}, Metrics: m})
	ctx := context.Background()
	putMessage(t, s, "Q1OUT", 1)
	if err := s.AddEvent(ctx, open(testAccepted.Add(time.Hour), "Q1OUT")); err != nil {
		t.Fatal(err)
	}
	rows := func(table string) int {
		var n int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := rows("outbox"); n != 1 {
		t.Fatalf("%d outbox rows", n)
	}
	now := time.Now()
	if n, err := s.Maintain(ctx, now.Add(webhookRetry)); err != nil || n.Outbox != 0 || rows("outbox") != 1 {
		t.Fatalf("within the retry period: %+v, %v, %d rows", n, err, rows("outbox"))
	}
	n, err := s.Maintain(ctx, now.Add(DefaultOutboxPurgeAfter+time.Minute))
	if err != nil || n.Outbox != 1 || rows("outbox") != 0 {
		t.Fatalf("past it: %+v, %v, %d rows", n, err, rows("outbox"))
	}
	if rows("feed") != 1 || rows("events") != 1 {
		t.Error("the purge took the feed entry or the event")
	}
	if got := metricValue(t, reg, "trackrelay_store_maintenance_rows_removed_total"); got != 1 {
		t.Errorf("rows removed metric %v", got)
	}
}

// webhookRetry is how long the webhook sender retries a delivery.
const webhookRetry = 24 * time.Hour

// testMetrics returns store metrics registered on a registry of their own.
func testMetrics() (*store.Metrics, *prometheus.Registry) {
	reg := prometheus.NewPedanticRegistry()
	return store.NewMetrics(reg), reg
}

// metricValue sums the values of the counter or gauge name in reg.
func metricValue(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
