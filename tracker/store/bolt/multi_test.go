package bolt

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// One address and agent clicking the copies of three recipients of a
// message, each seconds after its delivery (past the scanner window), is a
// scanner (classify.MultiRecipient): every one of its clicks, the earlier
// ones with a reclassified entry in the feed, and none is counted. An
// office behind one NAT whose colleagues click with their own browsers, or
// later, stays human.
func TestBolt_multiRecipient(t *testing.T) {
	const (
		chrome  = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
		edge    = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"
		firefox = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
	)
	delivered := testAccepted.Add(time.Minute)
	type hit struct {
		rcpt  int
		ip    string
		ua    string
		after time.Duration // after delivery
	}
	for _, tc := range []struct {
		name string
		hits []hit
		want string
	}{
		{"a scanner clicks three recipients' copies", []hit{
			{0, "198.51.100.20", chrome, 12 * time.Second}, {1, "198.51.100.20", chrome, 15 * time.Second}, {2, "198.51.100.20", chrome, 20 * time.Second},
		}, classify.Scanner},
		{"office nat: three colleagues, three browsers", []hit{
			{0, "203.0.113.9", chrome, 12 * time.Second}, {1, "203.0.113.9", edge, 15 * time.Second}, {2, "203.0.113.9", firefox, 20 * time.Second},
		}, classify.Human},
		{"office nat: same browser, a minute after delivery", []hit{
			{0, "203.0.113.9", chrome, 45 * time.Second}, {1, "203.0.113.9", chrome, 55 * time.Second}, {2, "203.0.113.9", chrome, time.Minute},
		}, classify.Human},
		{"office nat: two colleagues seconds after delivery", []hit{
			{0, "203.0.113.9", chrome, 12 * time.Second}, {1, "203.0.113.9", chrome, 15 * time.Second},
		}, classify.Human},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testStore(t, Options{})
			ctx := context.Background()
			m := testMessage()
			m.Recipients = []store.Recipient{
				{Address: "bob@example.net", Tracked: true}, {Address: "carol@example.net", Tracked: true}, {Address: "dave@example.net", Tracked: true},
			}
			if err := s.PutMessage(ctx, m); err != nil {
				t.Fatal(err)
			}
			if err := s.SetLinks(ctx, m.ID, []string{"https://example.com/quote?id=1&x=2"}); err != nil {
				t.Fatal(err)
			}
			for r := range m.Recipients {
				if err := s.SetDelivery(ctx, m.ID, r, store.Delivery{Status: delivery.Delivered, Attempts: 1, LastResponse: "250 ok", UpdatedAt: delivered}); err != nil {
					t.Fatal(err)
				}
			}
			for _, h := range tc.hits {
				at := delivered.Add(h.after)
				v := classify.Classify(classify.Hit{Click: true, Method: http.MethodGet, IP: netip.MustParseAddr(h.ip), Header: http.Header{},
					UserAgent: h.ua, At: at, DeliveredAt: delivered, ScannerWindow: 10 * time.Second})
				if err := s.AddEvent(ctx, store.Event{Type: store.EventClick, Message: m.ID, Recipient: h.rcpt, Link: 0, URL: "https://example.com/quote?id=1&x=2",
					At: at, IP: h.ip, UserAgent: h.ua, Client: v.Client, Class: v.Class, Reasons: v.Reasons}); err != nil {
					t.Fatal(err)
				}
			}
			v, err := s.Lookup(ctx, "alice", m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(v.Events) != len(tc.hits) {
				t.Fatalf("%d events, want %d", len(v.Events), len(tc.hits))
			}
			for _, e := range v.Events {
				if e.Class != tc.want || slices.Contains(e.Reasons, classify.ReasonMultiRecipient) != (tc.want == classify.Scanner) {
					t.Errorf("click %+v, want %s", e, tc.want)
				}
			}
			for i, r := range v.Recipients {
				if counted := r.Clicks != 0; counted != (tc.want == classify.Human && i < len(tc.hits)) {
					t.Errorf("recipient %d: %d clicks counted", i, r.Clicks)
				}
			}
			p, err := s.Feed(ctx, "alice", "", 100)
			if err != nil {
				t.Fatal(err)
			}
			recls := 0
			for _, fe := range p.Events {
				if fe.Type == store.EventReclassified {
					recls++
					if fe.Class != classify.Scanner || fe.PreviousClass != classify.Human {
						t.Errorf("reclassified %+v", fe)
					}
				}
			}
			if want := map[bool]int{true: len(tc.hits) - 1}[tc.want == classify.Scanner]; recls != want {
				t.Errorf("%d reclassified entries, want %d", recls, want)
			}
			if last := lastClasses(p.Events); len(last) != len(tc.hits) {
				t.Errorf("feed speaks of %d events: %v", len(last), last)
			} else {
				for id, class := range last {
					if class != tc.want {
						t.Errorf("feed: event %s last %s, want %s", id, class, tc.want)
					}
				}
			}
		})
	}
}
