package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Past the cap, a copy's events are counted, not listed nor fed.
func testCapPerRecipient(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{MaxEventsPerRecipient: 3})
	ctx := context.Background()
	m := putTestMessage(t, s)
	at := testAccepted.Add(time.Hour)
	for i := range 10 {
		e := store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: at.Add(time.Duration(i) * time.Second)}
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	r := v.Recipients[0]
	if len(v.Events) != 3 || r.Opens != 10 || r.EventsTotal != 10 || v.Stats.Opens != 10 || v.Stats.UniqueOpens != 1 {
		t.Errorf("%d events listed, %+v, %+v", len(v.Events), r, v.Stats)
	}
	if r.LastOpenedAt == nil || !r.LastOpenedAt.Equal(at.Add(9*time.Second)) {
		t.Errorf("last_opened_at %v", r.LastOpenedAt)
	}
	if n := len(feedAll(t, s, "alice")); n != 3 {
		t.Errorf("%d feed entries, want 3", n)
	}
}

// An account's feed lists its events and delivery changes in commit
// order, each once, across pages; the cursor of an empty page is valid;
// a cursor the store did not issue is ErrBadCursor; other accounts see
// nothing.
func testFeedOrderAndCursors(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	at := testAccepted.Add(time.Hour)
	var want []string
	for i := range 5 {
		e := store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: at.Add(time.Duration(i) * time.Second)}
		if i%2 == 1 {
			e.Type, e.Link, e.URL = store.EventClick, 1, "https://example.com/b"
		}
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
		want = append(want, e.Type)
	}
	if err := s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 1, UpdatedAt: at.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	want = append(want, store.EventDelivery)

	var got []store.FeedEntry
	seen := map[string]bool{}
	after := ""
	for range 10 {
		p, err := s.Feed(ctx, "alice", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) > 2 || p.Next == "" {
			t.Fatalf("page of %d entries, next %q", len(p.Events), p.Next)
		}
		for _, fe := range p.Events {
			if seen[fe.ID] || fe.ID == "" {
				t.Errorf("entry id %q given twice or empty", fe.ID)
			}
			seen[fe.ID] = true
		}
		got, after = append(got, p.Events...), p.Next
		if len(p.Events) == 0 {
			break
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, fe := range got {
		if fe.Type != want[i] || fe.Message != m.ID || fe.MessageID != m.MessageID || fe.Recipient != "bob@example.net" {
			t.Errorf("entry %d: %+v, want type %s", i, fe, want[i])
		}
	}
	if d := got[len(got)-1].Delivery; d == nil || d.Status != delivery.Delivered {
		t.Errorf("delivery entry: %+v", d)
	}
	// Nothing new: the same cursor again, and an empty page.
	p, err := s.Feed(ctx, "alice", after, 2)
	if err != nil || len(p.Events) != 0 || p.Next == "" {
		t.Errorf("feed at its end: %+v, %v", p, err)
	}
	if _, err := s.Feed(ctx, "alice", "not-a-cursor!", 2); !errors.Is(err, store.ErrBadCursor) {
		t.Errorf("bad cursor: %v, want ErrBadCursor", err)
	}
	if p, err := s.Feed(ctx, "mallory", "", store.MaxFeedLimit); err != nil || len(p.Events) != 0 {
		t.Errorf("another account's feed: %+v, %v", p, err)
	}
}

// Erase removes a message's tracking data for good: lookups fail, its
// hits and late reports are not recorded, and putting it again keeps it
// erased. Another account cannot erase it.
func testErase(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	if err := s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: testAccepted.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Erase(ctx, "mallory", m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("erase by another account: %v", err)
	}
	if err := s.Erase(ctx, "alice", "<"+m.MessageID+">"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "alice", m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lookup after erase: %v", err)
	}
	if _, err := s.Message(ctx, m.ID); !errors.Is(err, store.ErrErased) {
		t.Errorf("Message after erase: %v, want ErrErased", err)
	}
	if err := s.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Delivered, UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "alice", m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lookup after late reports: %v", err)
	}
	if _, err := s.Message(ctx, m.ID); !errors.Is(err, store.ErrErased) {
		t.Errorf("Message after late reports: %v, want ErrErased", err)
	}
	if fed := feedAll(t, s, "alice"); len(fed) != 0 {
		t.Errorf("feed after erase: %+v", fed)
	}
}

// The feed entries of an account with a webhook wait in the outbox until
// done; a retry makes one due later, with its attempt counted.
func testOutbox(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{WebhookAccounts: []string{"alice"}})
	ob, ok := s.(store.Outbox)
	if !ok {
		return // the store keeps no outbox
	}
	ctx := context.Background()
	m := putTestMessage(t, s)
	bobs := testMessage()
	bobs.ID, bobs.MessageID, bobs.Account = "Q9B0B", "bob@x", "bob"
	if err := s.PutMessage(ctx, bobs); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, id := range []string{m.ID, bobs.ID} {
		if err := s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: id, Link: -1, Class: classify.Human, At: now}); err != nil {
			t.Fatal(err)
		}
	}
	// An entry joins the outbox with its feed entry: once the feed shows
	// it, so does the outbox.
	if fed := feedAll(t, s, "alice"); len(fed) != 1 {
		t.Fatalf("alice's feed: %+v", fed)
	}
	items, err := ob.OutboxDue(now.Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Account != "alice" || items[0].Attempts != 0 {
		t.Fatalf("due: %+v, want alice's open only", items)
	}
	var fe store.FeedEntry
	if err := json.Unmarshal(items[0].Body, &fe); err != nil || fe.ID != items[0].ID || fe.Type != store.EventOpen {
		t.Errorf("body %s (%v), id %s", items[0].Body, err, items[0].ID)
	}
	if err := ob.OutboxRetry(items, []time.Time{now.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if items, err := ob.OutboxDue(now.Add(time.Hour), 10); err != nil || len(items) != 0 {
		t.Errorf("due before the retry: %+v, %v", items, err)
	}
	items, err = ob.OutboxDue(now.Add(3*time.Hour), 10)
	if err != nil || len(items) != 1 || items[0].Attempts != 1 {
		t.Fatalf("due after the retry: %+v, %v", items, err)
	}
	if err := ob.OutboxDone(items); err != nil {
		t.Fatal(err)
	}
	if items, err := ob.OutboxDue(now.Add(3*time.Hour), 10); err != nil || len(items) != 0 {
		t.Errorf("due once done: %+v, %v", items, err)
	}
}
