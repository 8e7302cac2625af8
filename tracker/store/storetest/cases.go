package storetest

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

func testPutAndLookup(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	// Idempotent.
	if err := s.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLinks(ctx, m.ID, []string{"https://example.com/quote?id=1&x=2", "https://example.com/b"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Message(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.MessageID != m.MessageID || got.SubmitIP != m.SubmitIP || len(got.Recipients) != 2 || !got.AcceptedAt.Equal(m.AcceptedAt) {
		t.Errorf("Message = %+v", got)
	}
	if _, err := s.Message(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown message: %v", err)
	}
	for _, ref := range []string{m.ID, m.MessageID, "<" + m.MessageID + ">"} {
		v, err := s.Lookup(ctx, "alice", ref)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", ref, err)
		}
		if v.ID != m.ID || len(v.Recipients) != 2 || len(v.Links) != 2 || v.Recipients[0].Delivery.Status != delivery.Queued {
			t.Errorf("Lookup(%q) = %+v", ref, v)
		}
	}
	for _, ref := range []string{m.ID, m.MessageID, "missing"} {
		if _, err := s.Lookup(ctx, "mallory", ref); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Lookup by other account (%q): %v", ref, err)
		}
	}
}

func testDelivery(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	first := time.Date(2025, 3, 1, 9, 0, 5, 0, time.UTC)
	if err := s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Deferred, Attempts: 1, LastResponse: "451 4.7.1 try later", UpdatedAt: first.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 2, LastResponse: "250 ok", UpdatedAt: first}); err != nil {
		t.Fatal(err)
	}
	// Reported again after a restart: the delivery time stays the first one.
	if err := s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 2, LastResponse: "250 ok", UpdatedAt: first.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if dr, ok := s.(store.DeliveryReader); ok {
		d, err := dr.Delivery(ctx, m.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d.Status != delivery.Delivered || !d.UpdatedAt.Equal(first) {
			t.Errorf("Delivery = %+v", d)
		}
		if _, err := dr.Delivery(ctx, m.ID, 1); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Delivery of unreported copy: %v", err)
		}
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Recipients[0].Delivery; got.Status != delivery.Delivered || got.LastResponse != "250 ok" {
		t.Errorf("view delivery = %+v", got)
	}
}

func testEventsAndCounts(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	at := testAccepted.Add(time.Hour)
	events := []store.Event{
		{Type: store.EventOpen, Recipient: 0, Link: -1, Class: classify.Prefetch, Reasons: []string{classify.ReasonAppleMPPIP}},
		{Type: store.EventOpen, Recipient: 0, Link: -1, Class: classify.Human},
		{Type: store.EventOpen, Recipient: 0, Link: -1, Class: classify.Proxy},
		{Type: store.EventClick, Recipient: 0, Link: 0, Class: classify.Scanner, URL: "https://example.com/quote?id=1&x=2"},
		{Type: store.EventClick, Recipient: 0, Link: 0, Class: classify.Human, URL: "https://example.com/quote?id=1&x=2"},
		{Type: store.EventOpen, Recipient: 1, Link: -1, Class: classify.Self},
	}
	for i, e := range events {
		e.Message = m.ID
		e.At = at.Add(time.Duration(i) * time.Minute)
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// Another message's events stay out of this one's prefix.
	other := testMessage()
	other.ID, other.MessageID = "Q1A2B", "other@x"
	if err := s.PutMessage(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: other.ID, Link: -1, Class: classify.Human, At: at}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != len(events) {
		t.Fatalf("%d events, want %d", len(v.Events), len(events))
	}
	r0 := v.Recipients[0]
	if !r0.Opened || r0.Opens != 2 || r0.Clicks != 1 || r0.FirstOpenedAt == nil || !r0.FirstOpenedAt.Equal(at.Add(time.Minute)) {
		t.Errorf("recipient 0 = %+v", r0)
	}
	if r1 := v.Recipients[1]; r1.Opened || r1.Opens != 0 || r1.FirstOpenedAt != nil {
		t.Errorf("recipient 1 (self) = %+v", r1)
	}
	if v.Links[0].Clicks != 1 || v.Links[1].Clicks != 0 {
		t.Errorf("links = %+v", v.Links)
	}
	if e := v.Events[3]; e.Link != "https://example.com/quote?id=1&x=2" || e.Recipient != "bob@example.net" || e.Class != classify.Scanner {
		t.Errorf("event 3 = %+v", e)
	}
	if e := v.Events[0]; e.Link != "" || len(e.Reasons) != 1 {
		t.Errorf("event 0 = %+v", e)
	}
}

func testClickBurstIsScanner(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	if err := s.SetLinks(ctx, m.ID, []string{"https://a.example/", "https://b.example/", "https://c.example/", "https://d.example/"}); err != nil {
		t.Fatal(err)
	}
	at := testAccepted.Add(time.Hour)
	for i := range 4 {
		e := store.Event{Type: store.EventClick, Message: m.ID, Recipient: 0, Link: i, Class: classify.Human, At: at.Add(time.Duration(i) * 300 * time.Millisecond)}
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// A real click a minute later stays human.
	if err := s.AddEvent(ctx, store.Event{Type: store.EventClick, Message: m.ID, Recipient: 0, Link: 1, Class: classify.Human, At: at.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range v.Events {
		want := classify.Scanner
		if i == 4 {
			want = classify.Human
		}
		if e.Class != want {
			t.Errorf("event %d: class %s (%v), want %s", i, e.Class, e.Reasons, want)
		}
	}
	if v.Recipients[0].Clicks != 1 {
		t.Errorf("clicks = %d, want 1", v.Recipients[0].Clicks)
	}
}

func testClosed(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.AddEvent(context.Background(), store.Event{Type: store.EventOpen, Message: "Q1"}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("AddEvent after Close: %v", err)
	}
	if _, err := s.Message(context.Background(), "Q1"); err == nil {
		t.Error("Message after Close succeeded")
	}
}

// The burst rule: clicks on three or more distinct links of one copy
// within 5 s, first to last, the 5 s included, are all a scanner's,
// whatever order their hits arrive in. Self clicks take no part. The feed
// last gives each event the class the message view shows.
func testBurstRule(t *testing.T, newStore NewStore) {
	type click struct {
		link  int
		at    time.Duration // after base; in the order the hits arrive
		class string        // as classified alone; "" is human
		want  string
	}
	const h, sc, self = classify.Human, classify.Scanner, classify.Self
	ms := time.Millisecond
	for _, tc := range []struct {
		name   string
		cap    int  // MaxEventsPerRecipient; 0 is the default
		opened bool // an open comes first (it takes a place under the cap)
		clicks []click
	}{
		{name: "two links", clicks: []click{{0, 0, "", h}, {1, 300 * ms, "", h}, {0, 600 * ms, "", h}, {1, 900 * ms, "", h}}},
		{name: "one link three times", clicks: []click{{0, 0, "", h}, {0, 100 * ms, "", h}, {0, 200 * ms, "", h}}},
		{name: "three links in 5.0 s", clicks: []click{{0, 0, "", sc}, {1, 2500 * ms, "", sc}, {2, 5000 * ms, "", sc}}},
		{name: "three links in 5.0004 s", clicks: []click{{0, 0, "", h}, {1, 2500 * ms, "", h}, {2, 5000*ms + 400*time.Microsecond, "", h}}},
		{name: "three links in 5.1 s", clicks: []click{{0, 0, "", h}, {1, 2500 * ms, "", h}, {2, 5100 * ms, "", h}}},
		{name: "three links over 10 s, the middle one last", clicks: []click{{0, 0, "", h}, {1, 10 * time.Second, "", h}, {2, 5 * time.Second, "", h}}},
		{name: "out of order", clicks: []click{
			{0, 10 * time.Second, "", sc}, {1, 0, "", h}, {2, 7 * time.Second, "", sc}, {3, 9 * time.Second, "", sc}}},
		{name: "a click 0.5 s before the burst's 5 s", clicks: []click{
			{0, 0, "", h}, {1, 5500 * ms, "", sc}, {2, 6 * time.Second, "", sc}, {3, 6500 * ms, "", sc}}},
		{name: "a later click on a burst's link", clicks: []click{
			{0, 0, "", sc}, {1, time.Second, "", sc}, {2, 2 * time.Second, "", sc},
			{0, 4 * time.Second, "", sc}, // within 5 s of all three links
			{0, 8 * time.Second, "", h},  // within 5 s of the last two clicks only: links 2 and 0
		}},
		{name: "self clicks take no part", clicks: []click{{0, 0, self, self}, {1, time.Second, self, self}, {2, 2 * time.Second, "", h}}},
		{name: "a burst over the cap", cap: 2, clicks: []click{{0, 0, "", sc}, {1, time.Second, "", sc}, {2, 2 * time.Second, "", sc}}},
		{name: "a burst past the cap", cap: 1, opened: true, clicks: []click{{0, 0, "", sc}, {1, time.Second, "", sc}, {2, 2 * time.Second, "", sc}}},
		{name: "out of order past the cap", cap: 1, opened: true, clicks: []click{
			{0, 10 * time.Second, "", sc}, {1, 0, "", h}, {2, 7 * time.Second, "", sc}, {3, 9 * time.Second, "", sc}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, Options{MaxEventsPerRecipient: tc.cap})
			ctx := context.Background()
			m := putTestMessage(t, s)
			base := testAccepted.Add(time.Hour)
			if tc.opened {
				if err := s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: base.Add(-time.Minute)}); err != nil {
					t.Fatal(err)
				}
			}
			counted := 0
			for _, c := range tc.clicks {
				e := store.Event{Type: store.EventClick, Message: m.ID, Link: c.link, Class: c.class, At: base.Add(c.at)}
				if e.Class == "" {
					e.Class, e.Reasons = classify.Human, []string{classify.ReasonNoMachineSignals}
				}
				if err := s.AddEvent(ctx, e); err != nil {
					t.Fatal(err)
				}
				if c.want == classify.Human {
					counted++
				}
			}
			v, err := s.Lookup(ctx, "alice", m.ID)
			if err != nil {
				t.Fatal(err)
			}
			p, err := s.Feed(ctx, "alice", "", store.MaxFeedLimit)
			if err != nil {
				t.Fatal(err)
			}
			fed := lastClasses(p.Events)
			listed := v.Events
			if tc.opened {
				listed = listed[1:]
			}
			for i, ev := range listed {
				c := tc.clicks[i]
				burst := slices.Contains(ev.Reasons, classify.ReasonClickBurst)
				if ev.Class != c.want || burst != (c.want == classify.Scanner) || (burst && slices.Contains(ev.Reasons, classify.ReasonNoMachineSignals)) {
					t.Errorf("click %d (link %d at %v): %s %v, want %s", i, c.link, c.at, ev.Class, ev.Reasons, c.want)
				}
				if fed[ev.ID] != ev.Class {
					t.Errorf("click %d (link %d at %v): the feed last said %q, the view says %s", i, c.link, c.at, fed[ev.ID], ev.Class)
				}
			}
			if got := v.Recipients[0].Clicks; got != counted {
				t.Errorf("%d clicks counted, want %d", got, counted)
			}
		})
	}
}

// Whatever order a copy's clicks arrive in, each ends up with the class
// the burst rule gives it with all of them known, and the feed last gives
// it that class: random clicks on four links over 15 s, in random order,
// against the rule computed by brute force.
func testBurstAnyOrder(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{MaxEventsPerRecipient: 10000})
	ctx := context.Background()
	m := putTestMessage(t, s)
	rng := rand.New(rand.NewPCG(16, 6))
	type click struct {
		link int
		at   time.Time
	}
	var want []string // by arrival
	for round := range 40 {
		base := testAccepted.Add(time.Duration(round+1) * time.Hour)
		clicks := make([]click, 4+rng.IntN(9))
		for i := range clicks {
			// Whole 100 ms steps, so that windows of exactly 5 s occur.
			clicks[i] = click{rng.IntN(4), base.Add(time.Duration(rng.IntN(151)) * 100 * time.Millisecond)}
		}
		for _, c := range clicks {
			// In a burst: some window of 5 s from one click's time holds
			// c and clicks on three distinct links.
			burst := false
			for _, start := range clicks {
				end := start.at.Add(classify.BurstWindow)
				if c.at.Before(start.at) || c.at.After(end) {
					continue
				}
				links := map[int]bool{}
				for _, o := range clicks {
					if !o.at.Before(start.at) && !o.at.After(end) {
						links[o.link] = true
					}
				}
				burst = burst || len(links) >= classify.BurstLinks
			}
			if burst {
				want = append(want, classify.Scanner)
			} else {
				want = append(want, classify.Human)
			}
		}
		// Clicks were drawn in random order of time: they arrive so.
		for _, c := range clicks {
			e := store.Event{Type: store.EventClick, Message: m.ID, Link: c.link, Class: classify.Human, Reasons: []string{classify.ReasonNoMachineSignals}, At: c.at}
			if err := s.AddEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	var fed []store.FeedEntry
	for after := ""; ; {
		p, err := s.Feed(ctx, "alice", after, store.MaxFeedLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) == 0 {
			break
		}
		fed, after = append(fed, p.Events...), p.Next
	}
	last := lastClasses(fed)
	if len(v.Events) != len(want) {
		t.Fatalf("%d events, want %d", len(v.Events), len(want))
	}
	bursts := 0
	for i, ev := range v.Events {
		if ev.Class != want[i] {
			t.Errorf("click %d (%v): %s %v, want %s", i, ev.At, ev.Class, ev.Reasons, want[i])
		}
		if last[ev.ID] != ev.Class {
			t.Errorf("click %d (%v): the feed last said %q, the view says %s", i, ev.At, last[ev.ID], ev.Class)
		}
		if want[i] == classify.Scanner {
			bursts++
		}
	}
	// Both verdicts are well represented.
	if bursts < len(want)/4 || bursts > len(want)*3/4 {
		t.Errorf("%d of %d clicks in bursts: change the seed", bursts, len(want))
	}
}

// A click says whether a counted open of its copy came before it: a
// person's open does, a machine's (a prefetch) does not, a later open
// does not.
func testClickOrderReasons(t *testing.T, newStore NewStore) {
	s := newStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	base := testAccepted.Add(time.Hour)
	person := []string{classify.ReasonNoMachineSignals}
	for _, e := range []store.Event{
		{Type: store.EventOpen, Link: -1, Class: classify.Prefetch, Reasons: []string{classify.ReasonPrefetchHeader}, At: base},
		{Type: store.EventClick, Link: 0, Class: classify.Human, Reasons: person, At: base.Add(time.Minute)},
		{Type: store.EventOpen, Link: -1, Class: classify.Human, Reasons: person, At: base.Add(2 * time.Minute)},
		{Type: store.EventClick, Link: 0, Class: classify.Human, Reasons: person, At: base.Add(3 * time.Minute)},
	} {
		e.Message = m.ID
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != 4 {
		t.Fatalf("%d events", len(v.Events))
	}
	for i, want := range map[int]string{1: classify.ReasonClickBeforeOpen, 3: classify.ReasonOpenedBeforeClick} {
		ev := v.Events[i]
		if ev.Class != classify.Human || !slices.Contains(ev.Reasons, want) {
			t.Errorf("click %d: %s %v, want human with %s", i, ev.Class, ev.Reasons, want)
		}
	}
}
