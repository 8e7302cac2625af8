package storetest

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// NewNodes opens n stores on one empty ledger, as the n nodes of a fleet
// share it, each with opts. They are closed when t ends.
type NewNodes func(t *testing.T, opts Options, n int) []store.Store

// RunFleet runs the sequence rules' cases of Run with the hits of each
// case spread over two nodes of one ledger, one after the other, and
// cases where the nodes record one message's hits at the same time: a
// message's history spans nodes, and every node reaches the same verdict.
// For backends that several processes share.
func RunFleet(t *testing.T, newNodes NewNodes) {
	open := func(t *testing.T, opts Options) []store.Store { return newNodes(t, opts, 2) }
	for _, c := range sequenceCases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open) })
	}
	t.Run("ConcurrentMultiRecipient", func(t *testing.T) { testConcurrentMultiRecipient(t, open) })
}

// openNodes opens the nodes a sequence case spreads its hits over.
type openNodes func(t *testing.T, opts Options) []store.Store

// sequenceCases are the rules that judge a hit with its message's other
// hits; Run runs them on one store, RunFleet on two nodes.
var sequenceCases = []struct {
	name string
	fn   func(*testing.T, openNodes)
}{
	{"GatewayPair", testGatewayPair},
	{"MultiRecipient", testMultiRecipient},
	{"Honeypot", testHoneypot},
}

const (
	chromeUA  = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	edgeUA    = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"
	firefoxUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
	quoteURL  = "https://example.com/quote?id=1&x=2"
)

// hitEvent is the event of a GET by chrome from ip at at, classified as
// the tracker does; deliveredAt is the copy's delivery (zero: unknown).
func hitEvent(m store.Message, rcpt int, click bool, ip, ua string, at, deliveredAt time.Time) store.Event {
	v := classify.Classify(classify.Hit{Click: click, Method: http.MethodGet, IP: netip.MustParseAddr(ip), Header: http.Header{},
		UserAgent: ua, At: at, DeliveredAt: deliveredAt, ScannerWindow: classify.DefaultScannerWindow})
	e := store.Event{Type: store.EventOpen, Message: m.ID, Recipient: rcpt, Link: -1, At: at, IP: ip, UserAgent: ua,
		Client: v.Client, Class: v.Class, Reasons: v.Reasons}
	if click {
		e.Type, e.Link, e.URL = store.EventClick, 0, quoteURL
	}
	return e
}

// addAll records events in order, the i'th on nodes[i % len(nodes)].
func addAll(t *testing.T, nodes []store.Store, events ...store.Event) {
	t.Helper()
	for i, e := range events {
		if err := nodes[i%len(nodes)].AddEvent(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// reclassifiedOf returns the reclassified entries of entries about event id.
func reclassifiedOf(entries []store.FeedEntry, id string) []store.FeedEntry {
	var out []store.FeedEntry
	for _, fe := range entries {
		if fe.Type == store.EventReclassified && fe.EventID == id {
			out = append(out, fe)
		}
	}
	return out
}

// A gateway that fetches a copy's pixel and follows its link from the same
// address seconds apart, in either order, is a scanner
// (classify.InGatewayPair), though the click alone, from a network a person
// may browse through, is not; a person on an office NAT doing the same
// stays human. A click found out after it was recorded gets a reclassified
// entry in the feed, like a burst's.
func testGatewayPair(t *testing.T, open openNodes) {
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
			nodes := open(t, Options{})
			s := nodes[len(nodes)-1]
			ctx := context.Background()
			m := putTestMessage(t, nodes[0])
			events := []store.Event{hitEvent(m, 0, true, tc.ip, chromeUA, at.Add(tc.after), time.Time{})}
			if tc.openIP != "" {
				o := hitEvent(m, 0, false, tc.openIP, chromeUA, at, time.Time{})
				if tc.after > 0 {
					events = []store.Event{o, events[0]}
				} else {
					events = append(events, o)
				}
			}
			addAll(t, nodes, events...)
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
			// A click stored before its pixel's fetch showed it a gateway's
			// has a reclassified entry: a client that saw it human learns.
			recls := reclassifiedOf(feedAll(t, s, "alice"), c.ID)
			if want := tc.want == classify.Scanner && tc.after < 0; want != (len(recls) == 1) ||
				want && (recls[0].Class != classify.Scanner || recls[0].PreviousClass != classify.Human) {
				t.Errorf("reclassified entries of the click: %+v", recls)
			}
		})
	}
}

// putThreeRecipients stores testMessage with three tracked recipients,
// each copy delivered at delivered.
func putThreeRecipients(t *testing.T, s store.Store, delivered time.Time) store.Message {
	t.Helper()
	ctx := context.Background()
	m := testMessage()
	m.Recipients = []store.Recipient{
		{Address: "bob@example.net", Tracked: true}, {Address: "carol@example.net", Tracked: true}, {Address: "dave@example.net", Tracked: true},
	}
	if err := s.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLinks(ctx, m.ID, []string{quoteURL}); err != nil {
		t.Fatal(err)
	}
	for r := range m.Recipients {
		if err := s.SetDelivery(ctx, m.ID, r, store.Delivery{Status: delivery.Delivered, Attempts: 1, LastResponse: "250 ok", UpdatedAt: delivered}); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// checkMultiRecipient checks that every click of m is want, with or
// without the reason multi-recipient-burst, counted only when human, and
// that the feed's last word on each is want, the first n-1 of a scan
// having been reclassified once.
func checkMultiRecipient(t *testing.T, s store.Store, m store.Message, n int, want string) {
	t.Helper()
	v, err := s.Lookup(context.Background(), "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != n {
		t.Fatalf("%d events, want %d", len(v.Events), n)
	}
	for _, e := range v.Events {
		if e.Class != want || slices.Contains(e.Reasons, classify.ReasonMultiRecipient) != (want == classify.Scanner) {
			t.Errorf("click %+v, want %s", e, want)
		}
	}
	clicks := 0
	for _, r := range v.Recipients {
		clicks += r.Clicks
	}
	if counted := map[bool]int{true: n}[want == classify.Human]; clicks != counted {
		t.Errorf("%d clicks counted, want %d", clicks, counted)
	}
	entries := feedAll(t, s, "alice")
	recls := 0
	for _, fe := range entries {
		if fe.Type == store.EventReclassified {
			recls++
			if fe.Class != classify.Scanner || fe.PreviousClass != classify.Human {
				t.Errorf("reclassified %+v", fe)
			}
		}
	}
	if w := map[bool]int{true: n - 1}[want == classify.Scanner]; recls != w {
		t.Errorf("%d reclassified entries, want %d", recls, w)
	}
	if last := lastClasses(entries); len(last) != n {
		t.Errorf("feed speaks of %d events: %v", len(last), last)
	} else {
		for id, class := range last {
			if class != want {
				t.Errorf("feed: event %s last %s, want %s", id, class, want)
			}
		}
	}
}

// One address and agent clicking the copies of three recipients of a
// message, each seconds after its delivery (past the scanner window), is a
// scanner (classify.MultiRecipient): every one of its clicks, the earlier
// ones with a reclassified entry in the feed, and none is counted. An
// office behind one NAT whose colleagues click with their own browsers, or
// later, stays human.
func testMultiRecipient(t *testing.T, open openNodes) {
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
			{0, "198.51.100.20", chromeUA, 12 * time.Second}, {1, "198.51.100.20", chromeUA, 15 * time.Second}, {2, "198.51.100.20", chromeUA, 20 * time.Second},
		}, classify.Scanner},
		{"office nat: three colleagues, three browsers", []hit{
			{0, "203.0.113.9", chromeUA, 12 * time.Second}, {1, "203.0.113.9", edgeUA, 15 * time.Second}, {2, "203.0.113.9", firefoxUA, 20 * time.Second},
		}, classify.Human},
		{"office nat: same browser, a minute after delivery", []hit{
			{0, "203.0.113.9", chromeUA, 45 * time.Second}, {1, "203.0.113.9", chromeUA, 55 * time.Second}, {2, "203.0.113.9", chromeUA, time.Minute},
		}, classify.Human},
		{"office nat: two colleagues seconds after delivery", []hit{
			{0, "203.0.113.9", chromeUA, 12 * time.Second}, {1, "203.0.113.9", chromeUA, 15 * time.Second},
		}, classify.Human},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := open(t, Options{})
			m := putThreeRecipients(t, nodes[0], delivered)
			var events []store.Event
			for _, h := range tc.hits {
				events = append(events, hitEvent(m, h.rcpt, true, h.ip, h.ua, delivered.Add(h.after), delivered))
			}
			addAll(t, nodes, events...)
			checkMultiRecipient(t, nodes[len(nodes)-1], m, len(tc.hits), tc.want)
		})
	}
}

// A hit on a copy's honeypot link makes the copy's hits from its address
// within the scanner window (tracking.scanner_window) before or after it
// scanner's, the earlier ones with a reclassified entry in the feed;
// hits farther away than the configured window, or from another address,
// stay human, and a scanner window turned off marks none.
func testHoneypot(t *testing.T, open openNodes) {
	const scannerIP, colleagueIP = "198.51.100.20", "203.0.113.9"
	at := testAccepted.Add(time.Hour)
	for _, tc := range []struct {
		name   string
		window time.Duration // Options.ScannerWindow
		click  bool          // the other hit is a click, else a pixel fetch
		offset time.Duration // of the other hit from the honeypot hit
		ip     string
		want   string
	}{
		{"pixel 3 s before", 0, false, -3 * time.Second, scannerIP, classify.Scanner},
		{"click 3 s after", 0, true, 3 * time.Second, scannerIP, classify.Scanner},
		{"pixel 20 s before", 0, false, -20 * time.Second, scannerIP, classify.Human},
		{"pixel 20 s before, window 30 s", 30 * time.Second, false, -20 * time.Second, scannerIP, classify.Scanner},
		{"click 25 s after, window 30 s", 30 * time.Second, true, 25 * time.Second, scannerIP, classify.Scanner},
		{"click 25 s after", 0, true, 25 * time.Second, scannerIP, classify.Human},
		{"pixel 3 s before, window 2 s", 2 * time.Second, false, -3 * time.Second, scannerIP, classify.Human},
		{"pixel 1 s before, window turned off", -1, false, -time.Second, scannerIP, classify.Human},
		{"a colleague's click 1 s after", 0, true, time.Second, colleagueIP, classify.Human},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := open(t, Options{ScannerWindow: tc.window})
			s := nodes[len(nodes)-1]
			m := putTestMessage(t, nodes[0])
			hp := hitEvent(m, 0, true, scannerIP, chromeUA, at, time.Time{})
			v := classify.OnHoneypot(classify.Verdict{Class: hp.Class, Client: hp.Client, Reasons: hp.Reasons})
			hp.Class, hp.Reasons, hp.Link, hp.URL = v.Class, v.Reasons, token.HoneypotLink, ""
			other := hitEvent(m, 0, tc.click, tc.ip, chromeUA, at.Add(tc.offset), time.Time{})
			events := []store.Event{hp, other}
			if tc.offset < 0 {
				events = []store.Event{other, hp}
			}
			addAll(t, nodes, events...)
			view, err := s.Lookup(context.Background(), "alice", m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(view.Events) != 2 {
				t.Fatalf("%d events: %+v", len(view.Events), view.Events)
			}
			i := slices.IndexFunc(view.Events, func(e store.EventView) bool { return !slices.Contains(e.Reasons, classify.ReasonHoneypot) })
			if i < 0 {
				t.Fatalf("events %+v", view.Events)
			}
			e := view.Events[i]
			if e.Class != tc.want || slices.Contains(e.Reasons, classify.ReasonNearHoneypot) != (tc.want == classify.Scanner) {
				t.Errorf("hit %+v, want %s", e, tc.want)
			}
			if r := view.Recipients[0]; (r.Opens+r.Clicks != 0) != (tc.want == classify.Human) {
				t.Errorf("recipient %+v", r)
			}
			recls := reclassifiedOf(feedAll(t, s, "alice"), e.ID)
			if want := tc.want == classify.Scanner && tc.offset < 0; want != (len(recls) == 1) ||
				want && (recls[0].Class != classify.Scanner || recls[0].PreviousClass != classify.Human) {
				t.Errorf("reclassified entries of the hit: %+v", recls)
			}
		})
	}
}

// A scanner's clicks on three recipients' copies of one message, recorded
// by two nodes at the same time, in whatever order their batches commit,
// are all found out: each node sees the clicks the other committed before
// its own, so the last click to commit completes the scan.
func testConcurrentMultiRecipient(t *testing.T, open openNodes) {
	delivered := testAccepted.Add(time.Minute)
	nodes := open(t, Options{})
	const messages = 4
	var msgs []store.Message
	for i := range messages {
		m := testMessage()
		m.ID, m.MessageID = fmt.Sprintf("Q%dCONC", i), fmt.Sprintf("conc%d@mail.example.com", i)
		m.Recipients = []store.Recipient{
			{Address: "bob@example.net", Tracked: true}, {Address: "carol@example.net", Tracked: true}, {Address: "dave@example.net", Tracked: true},
		}
		ctx := context.Background()
		if err := nodes[0].PutMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
		for r := range m.Recipients {
			if err := nodes[1].SetDelivery(ctx, m.ID, r, store.Delivery{Status: delivery.Delivered, Attempts: 1, LastResponse: "250 ok", UpdatedAt: delivered}); err != nil {
				t.Fatal(err)
			}
		}
		msgs = append(msgs, m)
	}
	var wg sync.WaitGroup
	errs := make(chan error, messages*3)
	for _, m := range msgs {
		for r := range 3 {
			wg.Go(func() {
				e := hitEvent(m, r, true, "198.51.100.20", chromeUA, delivered.Add(time.Duration(12+r)*time.Second), delivered)
				errs <- nodes[r%len(nodes)].AddEvent(context.Background(), e)
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		for _, m := range msgs {
			v, err := n.Lookup(context.Background(), "alice", m.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range v.Events {
				if e.Class != classify.Scanner || !slices.Contains(e.Reasons, classify.ReasonMultiRecipient) {
					t.Errorf("%s: click %+v", m.ID, e)
				}
			}
		}
		last := lastClasses(feedAll(t, n, "alice"))
		if len(last) != messages*3 {
			t.Errorf("feed speaks of %d events", len(last))
		}
		for id, class := range last {
			if class != classify.Scanner {
				t.Errorf("feed: event %s last %s", id, class)
			}
		}
	}
}
