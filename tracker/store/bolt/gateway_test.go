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

// A gateway that fetched a copy's pixel and then follows its link from the
// same address seconds later is a scanner (classify.InGatewayPair), though
// the click alone, from a network a person may browse through, is not; a
// person on an office NAT doing the same stays human.
func TestBolt_gatewayPair(t *testing.T) {
	const chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	at := testAccepted.Add(time.Hour)
	for _, tc := range []struct {
		name   string
		openIP string // "" : no open
		ip     string
		after  time.Duration
		want   string
	}{
		{"proofpoint pixel, then its click 3s later", "67.231.153.30", "67.231.153.30", 3 * time.Second, classify.Scanner},
		{"proofpoint pixel, click a minute later", "67.231.153.30", "67.231.153.30", time.Minute, classify.Human},
		{"proofpoint click with no pixel", "", "67.231.153.30", 3 * time.Second, classify.Human},
		{"office nat opens and clicks within seconds", "203.0.113.9", "203.0.113.9", 2 * time.Second, classify.Human},
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
			if tc.openIP != "" {
				if err := s.AddEvent(ctx, hit(false, tc.openIP, at)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.AddEvent(ctx, hit(true, tc.ip, at.Add(tc.after))); err != nil {
				t.Fatal(err)
			}
			v, err := s.Lookup(ctx, "alice", m.ID)
			if err != nil {
				t.Fatal(err)
			}
			c := v.Events[len(v.Events)-1]
			if c.Type != store.EventClick || c.Class != tc.want {
				t.Fatalf("click %+v, want %s", c, tc.want)
			}
			if pair := slices.Contains(c.Reasons, classify.ReasonGatewayPair); pair != (tc.want == classify.Scanner) {
				t.Errorf("reasons %v", c.Reasons)
			}
			if tc.want == classify.Scanner && (v.Recipients[0].Clicks != 0 || v.Recipients[0].Opened) {
				t.Errorf("the gateway's click counted: %+v", v.Recipients[0])
			}
		})
	}
}
