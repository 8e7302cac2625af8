package storetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Sweeper is implemented by stores that apply tracking.retention: Sweep
// records a mark at now and deletes the events and feed entries written
// before the newest mark older than retention, keeping the copies' counts.
// It returns the number of events deleted.
type Sweeper interface {
	Sweep(ctx context.Context, now time.Time, retention time.Duration) (int, error)
}

// Retention deletes the events and feed entries written before the newest
// mark older than the period; the copy's counts, first open, its links and
// the cap stay as they were: an event that retention deleted still counts
// towards tracking.max_events_per_recipient.
func testRetention(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{MaxEventsPerRecipient: 4})
	sw, ok := s.(Sweeper)
	if !ok {
		t.Log("the store applies no retention")
		return
	}
	ctx := context.Background()
	m := putTestMessage(t, s)
	if err := s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 1, LastResponse: "250 ok", UpdatedAt: testAccepted.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	at := testAccepted.Add(time.Hour)
	hit := func(typ string, link int, at time.Time) store.Event {
		e := store.Event{Type: typ, Message: m.ID, Link: link, At: at, IP: "203.0.113.9", UserAgent: chromeUA, Class: classify.Human,
			Reasons: []string{classify.ReasonNoMachineSignals}}
		if typ == store.EventClick {
			e.URL = quoteURL
		}
		return e
	}
	add := func(e store.Event) {
		t.Helper()
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	add(hit(store.EventOpen, -1, at))
	add(hit(store.EventClick, 0, at.Add(time.Minute)))
	add(hit(store.EventClick, 1, at.Add(2*time.Minute)))
	const retention = 24 * time.Hour
	now := time.Now()
	if n, err := sw.Sweep(ctx, now, retention); err != nil || n != 0 {
		t.Fatalf("first sweep: %d, %v", n, err)
	}
	old := feedAll(t, s, "alice")
	if len(old) != 4 {
		t.Fatalf("feed before: %+v", old)
	}
	later := at.Add(3 * time.Hour)
	add(hit(store.EventOpen, -1, later))
	if n, err := sw.Sweep(ctx, now.Add(retention-time.Hour), retention); err != nil || n != 0 {
		t.Fatalf("sweep within the period: %d, %v", n, err)
	}
	if n, err := sw.Sweep(ctx, now.Add(retention+time.Hour), retention); err != nil || n != 3 {
		t.Fatalf("sweep past the period deleted %d events (%v), want 3", n, err)
	}
	check := func(opens int) {
		t.Helper()
		v, err := s.Lookup(ctx, "alice", m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Events) != 1 || !v.Events[0].At.Equal(later) {
			t.Errorf("events %+v, want the open after the mark", v.Events)
		}
		r := v.Recipients[0]
		if !r.Opened || r.Opens != opens || r.Clicks != 2 || r.FirstOpenedAt == nil || !r.FirstOpenedAt.Equal(at) {
			t.Errorf("recipient %+v (first open %v), want %d opens, 2 clicks, first open at %v", r, r.FirstOpenedAt, opens, at)
		}
		if len(v.Links) != 2 || v.Links[0].Clicks != 1 || v.Links[1].Clicks != 1 {
			t.Errorf("links %+v", v.Links)
		}
		// The console's list counts what retention deleted too.
		if b, ok := s.(store.Browser); ok {
			page, err := b.Messages(ctx, "alice", store.MessageQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Messages) != 1 || page.Messages[0].Opened != 1 || page.Messages[0].Clicked != 1 {
				t.Errorf("listed %+v, want the message opened and clicked", page.Messages)
			}
		}
	}
	check(2)
	entries := feedAll(t, s, "alice")
	for _, fe := range entries {
		if slices.ContainsFunc(old, func(o store.FeedEntry) bool { return o.ID == fe.ID }) {
			t.Errorf("feed entry %+v outlived retention", fe)
		}
	}
	if len(entries) != 1 || entries[0].Type != store.EventOpen || !entries[0].At.Equal(later) {
		t.Errorf("feed after: %+v", entries)
	}
	// Four events were kept in detail: the fifth only counts.
	add(hit(store.EventOpen, -1, later.Add(time.Minute)))
	check(3)
}
