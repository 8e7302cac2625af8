package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
)

// Options are the settings of the store under test that the suite needs
// to choose; a backend maps them to its own options.
type Options struct {
	// MaxEventsPerRecipient is the number of events of one copy kept in
	// detail; past it, events only add to the copy's counts. Zero means
	// the backend's default, which must be at least 100.
	MaxEventsPerRecipient int
	// WebhookAccounts are the accounts whose feed entries go to the
	// webhook outbox.
	WebhookAccounts []string
	// ScannerWindow is tracking.scanner_window, as the store's option of
	// that name takes it: zero means classify.DefaultScannerWindow,
	// negative none.
	ScannerWindow time.Duration
}

// NewStore opens an empty store for test t, with opts. The store is closed
// when t ends (the suite may close it first: Close must be idempotent).
type NewStore func(t *testing.T, opts Options) store.Store

// Run runs the conformance suite against the stores newStore opens: what
// the HTTP handler, the feed, the webhook sender and the relay's ledger
// rely on, whatever the backend. A store that implements
// store.DeliveryReader or store.Outbox is held to those too; every store
// must be a store.Browser. What only a
// backend can show (its crash guarantees, its own schema) stays in the
// backend's tests.
func Run(t *testing.T, newStore NewStore) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, NewStore)
	}{
		{"PutAndLookup", testPutAndLookup},
		{"Delivery", testDelivery},
		{"EventsAndCounts", testEventsAndCounts},
		{"CapPerRecipient", testCapPerRecipient},
		{"ClickBurstIsScanner", testClickBurstIsScanner},
		{"BurstRule", testBurstRule},
		{"BurstAnyOrder", testBurstAnyOrder},
		{"ClickOrderReasons", testClickOrderReasons},
		{"FeedOrderAndCursors", testFeedOrderAndCursors},
		{"Erase", testErase},
		{"Outbox", testOutbox},
		{"BrowseOrder", testBrowseOrder},
		{"BrowsePaging", testBrowsePaging},
		{"BrowseSearch", testBrowseSearch},
		{"BrowseCounts", testBrowseCounts},
		{"BrowseEraseAndAccounts", testBrowseEraseAndAccounts},
		{"BrowseOverview", testBrowseOverview},
		{"Closed", testClosed},
		{"Retention", testRetention},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore) })
	}
	one := func(t *testing.T, opts Options) []store.Store { return []store.Store{newStore(t, opts)} }
	for _, c := range sequenceCases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, one) })
	}
}

var testAccepted = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

// testMessage is alice's message Q1A2B3 to bob (tracked) and to herself.
func testMessage() store.Message {
	return store.Message{
		ID:         "Q1A2B3",
		MessageID:  "abc/def+1@mail.example.com",
		Account:    "alice",
		From:       "alice@example.com",
		SubmitIP:   "192.0.2.10",
		AcceptedAt: testAccepted,
		Mode:       "all",
		Recipients: []store.Recipient{
			{Address: "bob@example.net", Tracked: true},
			{Address: "alice@example.com", Tracked: false},
		},
	}
}

// putTestMessage stores testMessage with two links.
func putTestMessage(t testing.TB, s store.Store) store.Message {
	t.Helper()
	m := testMessage()
	ctx := context.Background()
	if err := s.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLinks(ctx, m.ID, []string{"https://example.com/quote?id=1&x=2", "https://example.com/b"}); err != nil {
		t.Fatal(err)
	}
	return m
}

// lastClasses returns, for each event id, the class that the last of
// entries to speak of it gave it.
func lastClasses(entries []store.FeedEntry) map[string]string {
	last := map[string]string{}
	for _, fe := range entries {
		switch fe.Type {
		case store.EventOpen, store.EventClick:
			last[fe.ID] = fe.Class
		case store.EventReclassified:
			last[fe.EventID] = fe.Class
		}
	}
	return last
}

// feedAll reads account's whole feed.
func feedAll(t *testing.T, s store.Store, account string) []store.FeedEntry {
	t.Helper()
	var out []store.FeedEntry
	for after := ""; ; {
		p, err := s.Feed(context.Background(), account, after, store.MaxFeedLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) == 0 {
			return out
		}
		out, after = append(out, p.Events...), p.Next
	}
}
