package bolt

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// A gateway that fetches a copy's pixel and follows its link from the same
// address seconds apart, in either order, is a scanner
// (classify.InGatewayPair), though the click alone, from a network a person
// may browse through, is not; a person on an office NAT doing the same
// stays human. A click found out after it was recorded gets a reclassified
// entry in the feed, like a burst's.
func TestBolt_gatewayPair(t *testing.T) {
	const chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	at := testAccepted.Add(time.Hour)
	for _, tc := range []struct {
		name   string
		openIP string        // "": no open
		after  time.Duration // of the click, after the open (negative: before)
		ip     string        // of the click
		want   string
	}{
		{"proofpoint pixel, then its click 3s later", "67.231.153.30", 3 * time.Second, "67.231.153.30", classify.Scanner},
		{"proofpoint click, then its pixel 2s later", "67.231.153.30", -2 * time.Second, "67.231.153.30", classify.Scanner},
		{"proofpoint pixel, click a minute later", "67.231.153.30", time.Minute, "67.231.153.30", classify.Human},
		{"proofpoint click, pixel a minute later", "67.231.153.30", -time.Minute, "67.231.153.30", classify.Human},
		{"proofpoint click, pixel from another address", "67.231.153.31", -2 * time.Second, "67.231.153.30", classify.Human},
		{"proofpoint click with no pixel", "", 0, "67.231.153.30", classify.Human},
		{"office nat opens and clicks within seconds", "203.0.113.9", 2 * time.Second, "203.0.113.9", classify.Human},
		{"office nat clicks, then opens within seconds", "203.0.113.9", -2 * time.Second, "203.0.113.9", classify.Human},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testStore(t, Options{})
			ctx := context.Background()
			m := putTestMessage(t, s)
			hit := func(click bool, ip string, at time.Time) store.Event {
				v := classify.Classify(classify.Hit{Click: click, Method: http.MethodGet, IP: netip.MustParseAddr(ip), Header: http.Header{}, UserAgent: chrome, At: at})
				e := store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, At: at, IP: ip, UserAgent: chrome, Client: v.Client, Class: v.Class, Reasons: v.Reasons}
				if click {
					e.Type, e.Link, e.URL = store.EventClick, 0, "https://example.com/quote?id=1&x=2"
				}
				return e
			}
			events := []store.Event{hit(true, tc.ip, at.Add(tc.after))}
			if tc.openIP != "" {
				open := hit(false, tc.openIP, at)
				if tc.after > 0 {
					events = []store.Event{open, events[0]}
				} else {
					events = append(events, open)
				}
			}
			for _, e := range events {
				if err := s.AddEvent(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			v, err := s.Lookup(ctx, "alice", m.ID)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(v.Events, func(e store.EventView) bool { return e.Type == store.EventClick })
			c := v.Events[i]
			if c.Class != tc.want {
				t.Fatalf("click %+v, want %s", c, tc.want)
			}
			if pair := slices.Contains(c.Reasons, classify.ReasonGatewayPair); pair != (tc.want == classify.Scanner) {
				t.Errorf("reasons %v", c.Reasons)
			}
			if tc.want == classify.Scanner && v.Recipients[0].Clicks != 0 {
				t.Errorf("the gateway's click counted: %+v", v.Recipients[0])
			}
			p, err := s.Feed(ctx, "alice", "", 100)
			if err != nil {
				t.Fatal(err)
			}
			// A click stored before its pixel's fetch showed it a gateway's
			// has a reclassified entry: a client that saw it human learns.
			var recls []store.FeedEntry
			for _, fe := range p.Events {
				if fe.Type == store.EventReclassified && fe.EventID == c.ID {
					recls = append(recls, fe)
				}
			}
			if want := tc.want == classify.Scanner && tc.after < 0; want != (len(recls) == 1) ||
				want && (recls[0].Class != classify.Scanner || recls[0].PreviousClass != classify.Human) {
				t.Errorf("reclassified entries of the click: %+v", recls)
			}
		})
	}
}
