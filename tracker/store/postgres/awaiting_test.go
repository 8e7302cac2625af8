package postgres

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

// listing is what the database holds of a message's events: by user
// agent, each event's class and reasons, and how many open and click feed
// entries, outbox rows and reclassified entries it has.
type listing struct {
	class    map[string]string
	reasons  map[string][]string
	feed     map[string]int
	outboxed map[string]int
	reclass  map[string]int
	awaiting int
}

func readListing(t *testing.T, dsn, message string) listing {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	l := listing{class: map[string]string{}, reasons: map[string][]string{}, feed: map[string]int{},
		outboxed: map[string]int{}, reclass: map[string]int{}}
	rows, _ := conn.Query(ctx, `SELECT e.user_agent, e.class, e.reasons,
			(SELECT count(*) FROM feed f WHERE f.event = e.seq AND f.kind IN ('open', 'click')),
			(SELECT count(*) FROM feed f JOIN outbox o ON o.entry = f.seq WHERE f.event = e.seq AND f.kind IN ('open', 'click')),
			(SELECT count(*) FROM feed f WHERE f.event = e.seq AND f.kind = 'reclassified')
		FROM events e WHERE e.message = $1`, message)
	for rows.Next() {
		var ua, class string
		var reasons []string
		var feed, outboxed, reclass int
		if err := rows.Scan(&ua, &class, &reasons, &feed, &outboxed, &reclass); err != nil {
			t.Fatal(err)
		}
		l.class[ua], l.reasons[ua], l.feed[ua], l.outboxed[ua], l.reclass[ua] = class, reasons, feed, outboxed, reclass
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM awaiting WHERE message = $1", message).Scan(&l.awaiting); err != nil {
		t.Fatal(err)
	}
	return l
}

// checkListed checks that each of uas is stored once, listed in the feed
// once and in the outbox once.
func checkListed(t *testing.T, l listing, uas ...string) {
	t.Helper()
	if len(l.class) != len(uas) {
		t.Errorf("%d events stored, want %d", len(l.class), len(uas))
	}
	for _, ua := range uas {
		if _, ok := l.class[ua]; !ok {
			t.Errorf("hit %s not stored", ua)
		}
		if l.feed[ua] != 1 || l.outboxed[ua] != 1 {
			t.Errorf("hit %s: %d feed entries, %d outbox rows; want one each", ua, l.feed[ua], l.outboxed[ua])
		}
	}
}

// The submitter's address and a scanner's.
const (
	submitIP  = "192.0.2.10" // putMessage's
	scannerIP = "198.51.100.44"
)

// outageHits are hits answered while the database was down, as the
// tracker records them then: classified without the message, with the
// address truncated (tracking.ip_mode truncate) and the full one aside.
// One click comes two seconds after the copy's delivery (at delivered);
// one open comes from the submitter's address, a minute after it.
func outageHits(id string, delivered time.Time) []store.Event {
	hit := func(ua, ip string, click bool, at time.Time) store.Event {
		in := classify.Hit{Click: click, Method: http.MethodGet, IP: netip.MustParseAddr(ip), Header: http.Header{},
			UserAgent: ua, At: at, ScannerWindow: classify.DefaultScannerWindow}
		v := classify.Classify(in)
		e := store.Event{Type: store.EventOpen, At: at, Message: id, Link: -1, IP: ip[:len(ip)-len(".10")] + ".0",
			UserAgent: ua, Client: v.Client, Class: v.Class, Reasons: v.Reasons, WithoutMessage: true, ClientIP: ip}
		if click {
			e.Type, e.Link, e.URL = store.EventClick, 0, "https://example.com/0"
		}
		return e
	}
	ua := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	return []store.Event{
		hit(ua+" scanner", scannerIP, true, delivered.Add(2*time.Second)),
		hit(ua+" self", submitIP, false, delivered.Add(time.Minute)),
		hit(ua+" person", "203.0.113.10", false, delivered.Add(2*time.Minute)),
	}
}

// wantVerdicts checks each hit's class and reasons against Classify's with
// the message known (submitter, delivery), as a tracker whose database
// was up would have classified it.
func wantVerdicts(t *testing.T, l listing, hits []store.Event, delivered time.Time) {
	t.Helper()
	for _, e := range hits {
		in := classify.Hit{Click: e.Type == store.EventClick, Method: http.MethodGet, IP: netip.MustParseAddr(e.ClientIP),
			Header: http.Header{}, UserAgent: e.UserAgent, At: e.At, SubmitIP: submitIP, DeliveredAt: delivered,
			ScannerWindow: classify.DefaultScannerWindow}
		want := classify.Classify(in)
		if e.Type == store.EventClick {
			want.Reasons = append(want.Reasons, classify.ReasonClickBeforeOpen)
		}
		if l.class[e.UserAgent] != want.Class || !slices.Equal(l.reasons[e.UserAgent], want.Reasons) {
			t.Errorf("%s: %s %v, want %s %v", e.UserAgent, l.class[e.UserAgent], l.reasons[e.UserAgent], want.Class, want.Reasons)
		}
	}
}

// Hits answered during an outage for a message whose record the relay
// still owes end in the feed and the webhook outbox exactly once each,
// classified as if the database had been up, whichever of the shipper and
// the relay's retry reaches the database first; an erased message's come
// back nowhere.
func TestAwaitingRecord(t *testing.T) {
	c, dsn := pgtest.Own(t)
	opts := fallbackOptions(t.TempDir(), prometheus.NewRegistry())
	// The shipper runs when a spill wakes it or when the test does.
	opts.ProbeInterval = time.Hour
	s := testStore(t, dsn, opts)
	ctx := context.Background()
	delivered := testAccepted.Add(time.Minute)
	deliver := func(id string) {
		t.Helper()
		if err := s.SetDelivery(ctx, id, 0, store.Delivery{Status: delivery.Delivered, Attempts: 1, UpdatedAt: delivered}); err != nil {
			t.Fatal(err)
		}
	}
	// outage answers hits of each message while the server is down, and
	// starts it again with the hits in the log.
	outage := func(ids ...string) map[string][]store.Event {
		t.Helper()
		if err := c.StopServer(); err != nil {
			t.Fatal(err)
		}
		hits := map[string][]store.Event{}
		for _, id := range ids {
			hits[id] = outageHits(id, delivered)
			for _, e := range hits[id] {
				if err := s.AddEvent(ctx, e); err != nil {
					t.Fatalf("hit answered during the outage: %v", err)
				}
			}
		}
		if h := s.Health(ctx); h.Backlog != 3*len(ids) {
			t.Fatalf("backlog %d, want %d", h.Backlog, 3*len(ids))
		}
		if err := c.StartServer(); err != nil {
			t.Fatal(err)
		}
		return hits
	}
	ship := func() {
		t.Helper()
		s.wakeShipper()
		waitShipped(t, s)
	}
	uas := func(hits []store.Event) []string {
		var r []string
		for _, e := range hits {
			r = append(r, e.UserAgent)
		}
		return r
	}

	t.Run("shipper first", func(t *testing.T) {
		hits := outage("S1")["S1"]
		ship()
		if l := readListing(t, dsn, "S1"); len(l.class) != 3 || l.awaiting != 3 {
			t.Fatalf("shipped before the record: %d events, %d awaiting; want 3 and 3", len(l.class), l.awaiting)
		}
		// The relay's retry: the record, then the delivery.
		putMessage(t, s, "S1", 1)
		l := readListing(t, dsn, "S1")
		checkListed(t, l, uas(hits)...)
		if l.class[hits[1].UserAgent] != classify.Self {
			t.Errorf("open from the submitter's address: %s once the record came", l.class[hits[1].UserAgent])
		}
		deliver("S1")
		putMessage(t, s, "S1", 1) // a record reported twice lists nothing twice
		l = readListing(t, dsn, "S1")
		checkListed(t, l, uas(hits)...)
		wantVerdicts(t, l, hits, delivered)
		if l.reclass[hits[0].UserAgent] != 1 {
			t.Errorf("click judged a scanner's once delivered: %d reclassified entries, want 1", l.reclass[hits[0].UserAgent])
		}
		if l.awaiting != 0 {
			t.Errorf("%d awaiting rows left", l.awaiting)
		}
	})

	t.Run("record first", func(t *testing.T) {
		hits := outage("S2")["S2"]
		putMessage(t, s, "S2", 1)
		deliver("S2")
		ship()
		l := readListing(t, dsn, "S2")
		checkListed(t, l, uas(hits)...)
		wantVerdicts(t, l, hits, delivered)
		for ua, n := range l.reclass {
			if n != 0 {
				t.Errorf("%s: %d reclassified entries; it was classified with its message when shipped", ua, n)
			}
		}
		if l.awaiting != 0 {
			t.Errorf("%d awaiting rows left", l.awaiting)
		}
	})

	t.Run("direct commit before the record", func(t *testing.T) {
		// A node that is up commits a hit a moment before another node
		// commits its message's record.
		hits := outageHits("S3", delivered)
		for _, e := range hits {
			if err := s.AddEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		if h := s.Health(ctx); h.Backlog != 0 {
			t.Fatalf("backlog %d: the hits were to commit directly", h.Backlog)
		}
		putMessage(t, s, "S3", 1)
		deliver("S3")
		l := readListing(t, dsn, "S3")
		checkListed(t, l, uas(hits)...)
		wantVerdicts(t, l, hits, delivered)
	})

	t.Run("erased", func(t *testing.T) {
		outage("S4")
		ship()
		putMessage(t, s, "S4", 1)
		if err := s.Erase(ctx, "alice", "S4"); err != nil {
			t.Fatal(err)
		}
		putMessage(t, s, "S4", 1)
		deliver("S4")
		l := readListing(t, dsn, "S4")
		if len(l.class) != 0 || l.awaiting != 0 {
			t.Errorf("erased message: %d events, %d awaiting rows; want none", len(l.class), l.awaiting)
		}
		var feed int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM feed WHERE message = 'S4'").Scan(&feed); err != nil {
			t.Fatal(err)
		}
		if feed != 0 {
			t.Errorf("erased message: %d feed entries", feed)
		}
	})

	// A feed client reading from the start gets each hit once, whatever
	// the order its event and its record came in.
	seen := map[string]int{}
	after := ""
	for {
		page, err := s.Feed(ctx, "alice", after, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Events) == 0 {
			break
		}
		for _, f := range page.Events {
			if f.Type == store.EventOpen || f.Type == store.EventClick {
				seen[f.Message+" "+f.UserAgent]++
			}
		}
		after = page.Next
	}
	for _, id := range []string{"S1", "S2", "S3"} {
		for _, e := range outageHits(id, delivered) {
			if n := seen[id+" "+e.UserAgent]; n != 1 {
				t.Errorf("%s %s: %d feed entries read, want 1", id, e.UserAgent, n)
			}
		}
	}
	if len(seen) != 9 {
		t.Errorf("%d hits in the feed, want 9 (none of the erased message)", len(seen))
	}
}
