package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// browser returns s as a store.Browser: every backend must be one.
func browser(t *testing.T, s store.Store) store.Browser {
	t.Helper()
	b, ok := s.(store.Browser)
	if !ok {
		t.Fatalf("%T does not implement store.Browser", s)
	}
	return b
}

// browseMessage is a message of account with queue id id, accepted at, to
// the recipients rcpts.
func browseMessage(account, id, subject string, at time.Time, rcpts ...string) store.Message {
	m := store.Message{ID: id, MessageID: id + "@mail.example", Account: account, From: account + "@example.com",
		Subject: subject, SubmitIP: "192.0.2.10", AcceptedAt: at, Mode: "all"}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Address: r, Tracked: true})
	}
	return m
}

func putMessages(t *testing.T, s store.Store, ms ...store.Message) {
	t.Helper()
	for _, m := range ms {
		if err := s.PutMessage(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

// listIDs returns the queue ids of a page.
func listIDs(p *store.MessagePage) []string {
	ids := make([]string, len(p.Messages))
	for i, m := range p.Messages {
		ids[i] = m.ID
	}
	return ids
}

// listAll pages through account's messages matching search, limit a page,
// and returns their queue ids.
func listAll(t *testing.T, b store.Browser, account, search string, limit int) []string {
	t.Helper()
	var ids []string
	q := store.MessageQuery{Search: search, Limit: limit}
	for range 1000 {
		p, err := b.Messages(context.Background(), account, q)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, listIDs(p)...)
		if p.Next == "" {
			return ids
		}
		q.After = p.Next
	}
	t.Fatal("paging does not end")
	return nil
}

// Messages lists newest first, by time of acceptance then queue id (both
// descending), with the subject, the recipients and each copy's delivery
// status; Message and Lookup return the subject too.
func testBrowseOrder(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	b := browser(t, s)
	ctx := context.Background()
	at := testAccepted
	putMessages(t, s,
		browseMessage("alice", "Q00A", "first", at, "bob@example.net"),
		browseMessage("alice", "Q00C", "same second, higher id", at.Add(time.Minute), "carol@example.org", "dave@example.org"),
		browseMessage("alice", "Q00B", "same second, lower id", at.Add(time.Minute), "erin@example.org"),
		browseMessage("alice", "Q00D", "Devis n° 42 — été", at.Add(2*time.Minute), "frank@example.org"),
	)
	if err := s.SetDelivery(ctx, "Q00C", 1, store.Delivery{Status: delivery.Bounced, Attempts: 1, LastResponse: "550 no such user", UpdatedAt: at.Add(2 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	p, err := b.Messages(ctx, "alice", store.MessageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := listIDs(p), []string{"Q00D", "Q00C", "Q00B", "Q00A"}; !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
	if p.Next != "" {
		t.Errorf("Next = %q on the only page", p.Next)
	}
	if m := p.Messages[0]; m.Subject != "Devis n° 42 — été" || !m.AcceptedAt.Equal(at.Add(2*time.Minute)) {
		t.Errorf("first = %+v", m)
	}
	c := p.Messages[1]
	if !slices.Equal(c.Recipients, []string{"carol@example.org", "dave@example.org"}) ||
		!slices.Equal(c.Delivery, []delivery.Status{delivery.Queued, delivery.Bounced}) || c.Opened != 0 || c.Clicked != 0 {
		t.Errorf("Q00C = %+v", c)
	}
	if m, err := s.Message(ctx, "Q00D"); err != nil || m.Subject != "Devis n° 42 — été" {
		t.Errorf("Message = %+v, %v", m, err)
	}
	if v, err := s.Lookup(ctx, "alice", "Q00D"); err != nil || v.Subject != "Devis n° 42 — été" {
		t.Errorf("Lookup = %+v, %v", v, err)
	}
	if _, err := b.Messages(ctx, "alice", store.MessageQuery{After: "not a cursor!"}); !errors.Is(err, store.ErrBadCursor) {
		t.Errorf("bad cursor: %v, want ErrBadCursor", err)
	}
}

// Paging to the end gives every message once, in order, while newer
// messages arrive (they start the list, not a later page) and an older one
// is reported late (it takes its place further down). A page is Limit
// long, DefaultMessagesLimit when 0; the last page has no Next.
func testBrowsePaging(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	b := browser(t, s)
	ctx := context.Background()
	var want []string
	for i := range 60 {
		// Pairs share their time of acceptance.
		m := browseMessage("alice", fmt.Sprintf("Q1%03d", i), fmt.Sprintf("message %d", i), testAccepted.Add(time.Duration(i/2)*time.Second), "bob@example.net")
		putMessages(t, s, m)
		want = append(want, m.ID)
	}
	slices.Reverse(want)
	p, err := b.Messages(ctx, "alice", store.MessageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Messages) != store.DefaultMessagesLimit || p.Next == "" {
		t.Fatalf("first page: %d messages, next %q", len(p.Messages), p.Next)
	}
	got := listIDs(p)[:7]
	total := len(want)
	q := store.MessageQuery{After: store.EncodeMessageCursor(p.Messages[6].AcceptedAt, p.Messages[6].ID), Limit: 7}
	for n := 0; ; n++ {
		// New mail arrives between pages.
		putMessages(t, s, browseMessage("alice", fmt.Sprintf("Q2%03d", n), "new", testAccepted.Add(time.Hour+time.Duration(n)*time.Second), "bob@example.net"))
		total++
		if n == 3 {
			total++
			late := browseMessage("alice", "Q0LATE", "late", testAccepted.Add(-time.Hour), "bob@example.net")
			putMessages(t, s, late)
			want = append(want, late.ID)
		}
		p, err := b.Messages(ctx, "alice", q)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Messages) > 7 {
			t.Fatalf("page of %d, limit 7", len(p.Messages))
		}
		got = append(got, listIDs(p)...)
		if p.Next == "" {
			break
		}
		if n > 20 {
			t.Fatal("paging does not end")
		}
		q.After = p.Next
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged through\n%v\nwant\n%v", got, want)
	}
	if p, err := b.Messages(ctx, "alice", store.MessageQuery{Limit: 1000}); err != nil || len(p.Messages) != min(store.MaxMessagesLimit, total) {
		t.Errorf("a page of 1000 has %d messages, %v", len(p.Messages), err)
	}
}

// A search keeps the messages whose subject or one of whose recipient
// addresses contains it, ignoring case (non-ASCII too); LIKE's wildcards
// are plain characters.
func testBrowseSearch(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	b := browser(t, s)
	at := testAccepted
	putMessages(t, s,
		browseMessage("alice", "Q3A", "Quote for the ÉTÉ works", at, "Bob@Example.NET"),
		browseMessage("alice", "Q3B", "Invoice 100% paid", at.Add(time.Second), "carol@quote.example"),
		browseMessage("alice", "Q3C", "Straße und Grüße", at.Add(2*time.Second), "dave@example.org", "erin_x@example.org"),
		browseMessage("alice", "Q3D", "", at.Add(3*time.Second), "frank@example.org"),
	)
	for _, c := range []struct {
		search string
		want   []string
	}{
		{"", []string{"Q3D", "Q3C", "Q3B", "Q3A"}},
		{"quote", []string{"Q3B", "Q3A"}},
		{"QUOTE FOR", []string{"Q3A"}},
		{"été", []string{"Q3A"}},
		{"ÉtÉ", []string{"Q3A"}},
		{"bob@example.net", []string{"Q3A"}},
		{"EXAMPLE.ORG", []string{"Q3D", "Q3C"}},
		{"GRÜSSE", []string{"Q3C"}},
		{"straße", []string{"Q3C"}},
		{"%", []string{"Q3B"}},
		{"_", []string{"Q3C"}},
		{"100%", []string{"Q3B"}},
		{"x_@", nil},
		{"works bob", nil},
		{"nothing like it", nil},
	} {
		got := listAll(t, b, "alice", c.search, 1)
		if !slices.Equal(got, c.want) {
			t.Errorf("search %q = %v, want %v", c.search, got, c.want)
		}
	}
}

// Opened and Clicked count the recipients a person opened or clicked for,
// as the API's view does: prefetch, scanner and self hits do not count, a
// click counts as an open.
func testBrowseCounts(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	b := browser(t, s)
	ctx := context.Background()
	m := browseMessage("alice", "Q4A", "counts", testAccepted, "bob@example.net", "carol@example.net", "dave@example.net", "alice@example.com")
	putMessages(t, s, m)
	at := testAccepted.Add(time.Hour)
	for i, e := range []store.Event{
		{Type: store.EventOpen, Recipient: 0, Link: -1, Class: classify.Prefetch, Reasons: []string{classify.ReasonAppleMPPIP}},
		{Type: store.EventClick, Recipient: 0, Link: 0, Class: classify.Scanner, URL: "https://example.com/a"},
		{Type: store.EventOpen, Recipient: 3, Link: -1, Class: classify.Self},
		{Type: store.EventClick, Recipient: 1, Link: 0, Class: classify.Human, URL: "https://example.com/a"},
		{Type: store.EventOpen, Recipient: 2, Link: -1, Class: classify.Proxy},
	} {
		e.Message, e.At = m.ID, at.Add(time.Duration(i)*time.Minute)
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	p, err := b.Messages(ctx, "alice", store.MessageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Messages) != 1 || p.Messages[0].Opened != 2 || p.Messages[0].Clicked != 1 {
		t.Errorf("page = %+v, want opened 2 (carol by a click, dave), clicked 1", p.Messages)
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if v.Stats.UniqueOpens != p.Messages[0].Opened || v.Stats.UniqueClicks != p.Messages[0].Clicked {
		t.Errorf("view counts %+v differ from the list's", v.Stats)
	}
}

// An erased message is neither listed nor counted; another account's
// messages never are, whatever the search or cursor.
func testBrowseEraseAndAccounts(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	b := browser(t, s)
	ctx := context.Background()
	putMessages(t, s,
		browseMessage("alice", "Q5A", "kept", testAccepted, "bob@example.net"),
		browseMessage("alice", "Q5B", "erased", testAccepted.Add(time.Second), "bob@example.net"),
		browseMessage("mallory", "Q5M", "mallory's quote", testAccepted.Add(2*time.Second), "bob@example.net"),
		browseMessage("alice2", "Q5N", "alice2's", testAccepted.Add(3*time.Second), "bob@example.net"),
	)
	if err := s.Erase(ctx, "alice", "Q5B"); err != nil {
		t.Fatal(err)
	}
	// Reported again after the erasure (a retry): still not listed.
	putMessages(t, s, browseMessage("alice", "Q5B", "erased", testAccepted.Add(time.Second), "bob@example.net"))
	if got := listAll(t, b, "alice", "", 0); !slices.Equal(got, []string{"Q5A"}) {
		t.Errorf("alice's list = %v", got)
	}
	if got := listAll(t, b, "alice", "erased", 0); len(got) != 0 {
		t.Errorf("search of the erased subject = %v", got)
	}
	if got := listAll(t, b, "alice", "mallory", 0); len(got) != 0 {
		t.Errorf("search of another account's subject = %v", got)
	}
	if got := listAll(t, b, "mallory", "", 0); !slices.Equal(got, []string{"Q5M"}) {
		t.Errorf("mallory's list = %v", got)
	}
	if got := listAll(t, b, "nobody", "", 0); len(got) != 0 {
		t.Errorf("unknown account's list = %v", got)
	}
	// A cursor names a place in the order, not an account's message.
	p, err := b.Messages(ctx, "alice", store.MessageQuery{After: store.EncodeMessageCursor(testAccepted.Add(time.Hour), "Q9")})
	if err != nil || !slices.Equal(listIDs(p), []string{"Q5A"}) {
		t.Errorf("alice after a later cursor = %v, %v", listIDs(p), err)
	}
	o, err := b.Overview(ctx, "alice", testAccepted.Add(-time.Hour), testAccepted.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if o.Messages != 1 || o.Recipients != 1 {
		t.Errorf("overview = %+v, want alice's one message left", o)
	}
}

// Overview counts the messages accepted in [from, to), their copies, those
// a person opened or clicked, the machine hits by class, and per day the
// people's opens and clicks and the machine hits.
func testBrowseOverview(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	b := browser(t, s)
	ctx := context.Background()
	day := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
	putMessages(t, s,
		browseMessage("alice", "Q6A", "a", day.Add(9*time.Hour), "bob@example.net", "carol@example.net"),
		browseMessage("alice", "Q6B", "b", day.Add(24*time.Hour+10*time.Hour), "dave@example.net"),
		browseMessage("alice", "Q6C", "before", day.Add(-time.Hour), "erin@example.net"),
		browseMessage("alice", "Q6D", "after", day.Add(3*24*time.Hour), "frank@example.net"),
		browseMessage("mallory", "Q6M", "other", day.Add(9*time.Hour), "bob@example.net"),
	)
	for _, e := range []store.Event{
		{Message: "Q6A", Type: store.EventOpen, Recipient: 0, Class: classify.Prefetch, At: day.Add(9*time.Hour + time.Minute)},
		{Message: "Q6A", Type: store.EventOpen, Recipient: 0, Class: classify.Human, At: day.Add(11 * time.Hour)},
		{Message: "Q6A", Type: store.EventClick, Recipient: 1, Link: 0, Class: classify.Scanner, At: day.Add(9*time.Hour + 2*time.Minute)},
		{Message: "Q6A", Type: store.EventClick, Recipient: 1, Link: 0, Class: classify.Human, At: day.Add(26 * time.Hour)},
		{Message: "Q6B", Type: store.EventOpen, Recipient: 0, Class: classify.Self, At: day.Add(34 * time.Hour)},
		{Message: "Q6B", Type: store.EventOpen, Recipient: 0, Class: classify.Proxy, At: day.Add(4 * 24 * time.Hour)},
		{Message: "Q6C", Type: store.EventOpen, Recipient: 0, Class: classify.Human, At: day.Add(time.Hour)},
		{Message: "Q6M", Type: store.EventOpen, Recipient: 0, Class: classify.Prefetch, At: day.Add(10 * time.Hour)},
	} {
		if e.Type == store.EventOpen {
			e.Link = -1
		}
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	o, err := b.Overview(ctx, "alice", day, day.Add(3*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !o.From.Equal(day) || !o.To.Equal(day.Add(3*24*time.Hour)) {
		t.Errorf("period = %v to %v", o.From, o.To)
	}
	// Q6B's proxy open, after the period, still counts its copy as opened.
	if o.Messages != 2 || o.Recipients != 3 || o.Opened != 3 || o.Clicked != 1 {
		t.Errorf("totals = messages %d, recipients %d, opened %d, clicked %d; want 2, 3, 3, 1", o.Messages, o.Recipients, o.Opened, o.Clicked)
	}
	wantFiltered := map[string]int{classify.Prefetch: 1, classify.Scanner: 1, classify.Self: 1}
	if len(o.Filtered) != len(wantFiltered) {
		t.Errorf("filtered = %v, want %v", o.Filtered, wantFiltered)
	}
	for c, n := range wantFiltered {
		if o.Filtered[c] != n {
			t.Errorf("filtered = %v, want %v", o.Filtered, wantFiltered)
		}
	}
	wantDays := []store.DayTotals{
		{Day: day, Opens: 1, Filtered: 2},
		{Day: day.Add(24 * time.Hour), Clicks: 1, Filtered: 1},
		{Day: day.Add(48 * time.Hour)},
	}
	if len(o.Days) != len(wantDays) {
		t.Fatalf("days = %+v", o.Days)
	}
	for i, d := range o.Days {
		w := wantDays[i]
		if !d.Day.Equal(w.Day) || d.Opens != w.Opens || d.Clicks != w.Clicks || d.Filtered != w.Filtered {
			t.Errorf("day %d = %+v, want %+v", i, d, w)
		}
	}
	if _, err := b.Overview(ctx, "alice", day, day); !errors.Is(err, store.ErrBadPeriod) {
		t.Errorf("empty period: %v, want ErrBadPeriod", err)
	}
	if o, err := b.Overview(ctx, "nobody", day, day.Add(24*time.Hour)); err != nil || o.Messages != 0 || len(o.Days) != 1 {
		t.Errorf("unknown account: %+v, %v", o, err)
	}
}
