package tracker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/webhook"
)

// api calls the tracker's API as alice (or with key) and decodes the answer.
func (e *testEnv) api(t *testing.T, method, path, key string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

func (e *testEnv) feed(t *testing.T, after string, limit int) store.FeedPage {
	t.Helper()
	var p store.FeedPage
	path := "/api/v1/events?after=" + after
	if limit > 0 {
		path += "&limit=" + strconv.Itoa(limit)
	}
	if code := e.api(t, http.MethodGet, path, aliceKey, &p); code != http.StatusOK {
		t.Fatalf("feed: %d", code)
	}
	return p
}

func TestFeed_eventsAndDeliveriesInOrder(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	ctx := context.Background()
	delivered := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	if err := e.store.SetDelivery(ctx, e.msg.ID, 0, store.Delivery{Status: delivery.Deferred, Attempts: 1, LastResponse: "451 later", UpdatedAt: delivered.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetDelivery(ctx, e.msg.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 2, LastResponse: "250 ok", UpdatedAt: delivered}); err != nil {
		t.Fatal(err)
	}
	// The same state reported again is not a change.
	if err := e.store.SetDelivery(ctx, e.msg.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 2, LastResponse: "250 ok", UpdatedAt: delivered}); err != nil {
		t.Fatal(err)
	}
	e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/quote?id=1&x=2"), nil)
	// Another account's message is not in alice's feed.
	other := testMessage()
	other.ID, other.MessageID, other.Account = "QBOB1", "bob-1@example.org", "bob"
	if err := e.store.PutMessage(ctx, other); err != nil {
		t.Fatal(err)
	}
	e.do(t, http.MethodGet, e.keys.Minter(e.srv.URL, other.ID, 0).OpenURL(), nil)

	all := e.feed(t, "", 0)
	var types []string
	for _, fe := range all.Events {
		types = append(types, fe.Type)
		if fe.Message != e.msg.ID || fe.MessageID != e.msg.MessageID || fe.Recipient != "bob@example.net" || fe.ID == "" {
			t.Errorf("entry %+v", fe)
		}
	}
	if want := []string{"delivery", "delivery", "open", "click"}; !slices.Equal(types, want) {
		t.Fatalf("types %v, want %v", types, want)
	}
	if d := all.Events[1].Delivery; d == nil || d.Status != delivery.Delivered || d.Attempts != 2 || d.LastResponse != "250 ok" {
		t.Errorf("delivery entry %+v", all.Events[1].Delivery)
	}
	click := all.Events[3]
	if click.Link != "https://example.com/quote?id=1&x=2" || click.LinkIndex == nil || *click.LinkIndex != 0 ||
		click.Class != classify.Human || click.Client != "Chrome" || click.IP != "127.0.0.1" || len(click.Reasons) == 0 {
		t.Errorf("click entry %+v", click)
	}
	// The feed's event ids are the message view's.
	v := e.view(t)
	if v.Events[0].ID != all.Events[2].ID || v.Events[1].ID != click.ID {
		t.Errorf("ids differ: view %s %s, feed %s %s", v.Events[0].ID, v.Events[1].ID, all.Events[2].ID, click.ID)
	}

	// Paging: two by two, then nothing new, with a cursor to poll with.
	p1 := e.feed(t, "", 2)
	p2 := e.feed(t, p1.Next, 2)
	p3 := e.feed(t, p2.Next, 2)
	if len(p1.Events) != 2 || len(p2.Events) != 2 || len(p3.Events) != 0 || p3.Next != p2.Next {
		t.Fatalf("pages of %d, %d, %d; next %q %q", len(p1.Events), len(p2.Events), len(p3.Events), p2.Next, p3.Next)
	}
	if p2.Events[1].ID != click.ID {
		t.Errorf("page 2 ends with %s", p2.Events[1].ID)
	}
	e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	if p4 := e.feed(t, p3.Next, 2); len(p4.Events) != 1 || p4.Events[0].Type != store.EventOpen {
		t.Errorf("new event after the cursor: %+v", p4.Events)
	}

	// Bob sees his own message only.
	var bobs store.FeedPage
	if code := e.api(t, http.MethodGet, "/api/v1/events", bobKey, &bobs); code != http.StatusOK || len(bobs.Events) != 1 || bobs.Events[0].Message != "QBOB1" {
		t.Errorf("bob's feed: %d %+v", code, bobs.Events)
	}
	for _, tc := range []struct {
		path, key string
		code      int
	}{
		{"/api/v1/events", "", http.StatusUnauthorized},
		{"/api/v1/events", "wrong", http.StatusUnauthorized},
		{"/api/v1/events?after=xyz", aliceKey, http.StatusBadRequest},
		{"/api/v1/events?limit=0", aliceKey, http.StatusBadRequest},
		{"/api/v1/events?limit=100000", aliceKey, http.StatusBadRequest},
	} {
		if code := e.api(t, http.MethodGet, tc.path, tc.key, nil); code != tc.code {
			t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.key, code, tc.code)
		}
	}
}

func TestErase(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	ctx := context.Background()
	if err := e.store.SetDelivery(ctx, e.msg.ID, 0, store.Delivery{Status: delivery.Delivered, UpdatedAt: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	click := e.mint.ClickURL(0, "https://example.com/quote?id=1&x=2")
	e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	e.do(t, http.MethodGet, click, nil)
	if n := len(e.feed(t, "", 0).Events); n != 3 {
		t.Fatalf("%d feed entries before erasing", n)
	}
	// Bob cannot erase alice's message; alice can, by Message-ID too.
	if code := e.api(t, http.MethodDelete, "/api/v1/messages/"+e.msg.ID, bobKey, nil); code != http.StatusNotFound {
		t.Errorf("bob's DELETE: %d", code)
	}
	if code := e.api(t, http.MethodDelete, "/api/v1/messages/%3C"+strings.ReplaceAll(e.msg.MessageID, "/", "%2F")+"%3E", aliceKey, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d", code)
	}
	if code := e.api(t, http.MethodGet, "/api/v1/messages/"+e.msg.ID, aliceKey, nil); code != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d", code)
	}
	if code := e.api(t, http.MethodDelete, "/api/v1/messages/"+e.msg.ID, aliceKey, nil); code != http.StatusNotFound {
		t.Errorf("second DELETE: %d", code)
	}
	if p := e.feed(t, "", 0); len(p.Events) != 0 {
		t.Errorf("feed after erase: %+v", p.Events)
	}
	// Links keep working; hits are not recorded, and not lost either.
	if resp, _ := e.do(t, http.MethodGet, click, nil); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://example.com/quote?id=1&x=2" {
		t.Errorf("click after erase: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := e.do(t, http.MethodGet, e.mint.OpenURL(), nil); resp.StatusCode != http.StatusOK {
		t.Errorf("pixel after erase: %d", resp.StatusCode)
	}
	// Late reports from the relay do not bring it back.
	if err := e.store.PutMessage(ctx, e.msg); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetDelivery(ctx, e.msg.ID, 0, store.Delivery{Status: delivery.Delivered, UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// An event already on its way when the message was erased is dropped.
	if err := e.store.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: e.msg.ID, Link: -1, Class: classify.Human, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Lookup(ctx, "alice", e.msg.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lookup after late reports: %v", err)
	}
	if p := e.feed(t, "", 0); len(p.Events) != 0 {
		t.Errorf("feed after late reports: %+v", p.Events)
	}
	if got := counterValue(t, e.reg, "trackrelay_tracking_events_lost_total"); got != 0 {
		t.Errorf("events_lost_total = %v", got)
	}
}

func TestReclassifiedBurst(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	metrics := NewMetrics(reg)
	e := newTestEnv(t, testStore(t, bolt.Options{Metrics: metrics.Store}), func(c *Config) { c.Metrics = metrics })
	ctx := context.Background()
	links := []string{"https://example.com/a", "https://example.com/b", "https://example.com/c"}
	if err := e.store.SetLinks(ctx, e.msg.ID, links); err != nil {
		t.Fatal(err)
	}
	// A scanner that disguises itself as a browser follows every link
	// within a second, long after delivery.
	for i, l := range links {
		e.do(t, http.MethodGet, e.mint.ClickURL(i, l), nil)
	}
	p := e.feed(t, "", 0)
	var got []string
	for _, fe := range p.Events {
		s := fe.Type + ":" + fe.Class
		if fe.Type == store.EventReclassified {
			s += "<-" + fe.PreviousClass
			if fe.EventID == "" || fe.EventType != store.EventClick || !slices.Contains(fe.Reasons, classify.ReasonClickBurst) {
				t.Errorf("reclassified entry %+v", fe)
			}
		}
		got = append(got, s)
	}
	want := []string{"click:scanner", "click:scanner", "click:scanner", "reclassified:scanner<-human", "reclassified:scanner<-human"}
	if !slices.Equal(got, want) {
		t.Errorf("feed %v, want %v", got, want)
	}
	if p.Events[3].EventID != p.Events[0].ID || p.Events[4].EventID != p.Events[1].ID {
		t.Errorf("reclassified entries name %s %s", p.Events[3].EventID, p.Events[4].EventID)
	}
	v := e.view(t)
	for _, ev := range v.Events {
		if ev.Class != classify.Scanner || !slices.Contains(ev.Reasons, classify.ReasonClickBurst) || slices.Contains(ev.Reasons, classify.ReasonNoMachineSignals) {
			t.Errorf("view event %+v", ev)
		}
	}
	if v.Recipients[0].Clicks != 0 || v.Stats.UniqueClicks != 0 || v.Stats.Events != 3 {
		t.Errorf("counts %+v %+v", v.Recipients[0], v.Stats)
	}
	if got := counterValue(t, reg, "trackrelay_tracking_reclassified_total", "class", "scanner"); got != 2 {
		t.Errorf("reclassified_total = %v", got)
	}
}

// lastClasses returns, for each event id, the class that the last of
// entries about it gave: its own open or click entry, or a reclassified
// entry naming it.
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

// One verdict per event: after bursts that a copy's last few clicks, or
// the order its hits arrive in, would hide, the last class the feed (polled
// after every hit) and the webhooks gave each event is the class the
// message view shows, and it is the burst rule's.
func TestBurst_feedWebhooksAndViewAgree(t *testing.T) {
	rc := &receiver{secret: []byte("whsec-0123456789abcdef"), got: map[string]store.FeedEntry{}}
	hook := httptest.NewServer(rc) // 127.0.0.1
	defer hook.Close()
	s := testStore(t, bolt.Options{WebhookAccounts: []string{"alice"}})
	var mu sync.Mutex
	var now time.Time
	e := newTestEnv(t, s, func(c *Config) {
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	ws := webhook.Start(s, webhook.Options{Hooks: []webhook.Hook{{Account: "alice", URL: hook.URL, Secret: rc.secret}},
		BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	defer ws.Close()
	links := []string{"https://example.com/a", "https://example.com/b", "https://example.com/c", "https://example.com/d"}
	if err := s.SetLinks(context.Background(), e.msg.ID, links); err != nil {
		t.Fatal(err)
	}

	type click struct {
		link int
		at   time.Duration // after base
		want string
	}
	var clicks []click
	// A scanner follows link 0 twenty times, then links 1 and 2, all
	// within 2.1 s: every one of the 22 clicks is part of the burst.
	for i := range 20 {
		clicks = append(clicks, click{0, time.Duration(i) * 100 * time.Millisecond, classify.Scanner})
	}
	clicks = append(clicks, click{1, 2000 * time.Millisecond, classify.Scanner}, click{2, 2100 * time.Millisecond, classify.Scanner})
	// A minute later, hits arrive out of order: links 2, 3 and 0 are
	// clicked within 3 s of each other (a burst), link 1 five seconds
	// before any of them (not in it), and the burst is only complete with
	// the last hit to arrive.
	clicks = append(clicks,
		click{0, time.Minute + 10*time.Second, classify.Scanner},
		click{1, time.Minute, classify.Human},
		click{2, time.Minute + 7*time.Second, classify.Scanner},
		click{3, time.Minute + 9*time.Second, classify.Scanner},
	)

	base := time.Now().Add(-time.Hour).UTC()
	var fed []store.FeedEntry
	cursor := ""
	for _, c := range clicks {
		mu.Lock()
		now = base.Add(c.at)
		mu.Unlock()
		if resp, _ := e.do(t, http.MethodGet, e.mint.ClickURL(c.link, links[c.link]), nil); resp.StatusCode != http.StatusFound {
			t.Fatalf("click: %d", resp.StatusCode)
		}
		p := e.feed(t, cursor, store.MaxFeedLimit)
		fed, cursor = append(fed, p.Events...), p.Next
	}
	deadline := time.Now().Add(10 * time.Second)
	for outboxLen(t, s) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("webhooks: %d entries still in the outbox", outboxLen(t, s))
		}
		time.Sleep(10 * time.Millisecond)
	}
	rc.mu.Lock()
	hooked := slices.Clone(rc.seq)
	if len(rc.errs) > 0 {
		t.Errorf("receiver: %v", rc.errs)
	}
	rc.mu.Unlock()

	v := e.view(t)
	if len(v.Events) != len(clicks) {
		t.Fatalf("%d events in the view, want %d", len(v.Events), len(clicks))
	}
	feedLast, hookLast := lastClasses(fed), lastClasses(hooked)
	for i, ev := range v.Events {
		c := clicks[i]
		if ev.Class != c.want {
			t.Errorf("event %d (link %d at %v): class %s %v, want %s", i, c.link, c.at, ev.Class, ev.Reasons, c.want)
		}
		if got := feedLast[ev.ID]; got != ev.Class {
			t.Errorf("event %d (link %d at %v): the feed last said %q, the view says %s", i, c.link, c.at, got, ev.Class)
		}
		if got := hookLast[ev.ID]; got != ev.Class {
			t.Errorf("event %d (link %d at %v): the webhooks last said %q, the view says %s", i, c.link, c.at, got, ev.Class)
		}
	}
}

func TestClickOrderReasons(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	click := e.mint.ClickURL(0, "https://example.com/a")
	e.do(t, http.MethodGet, click, nil)
	e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	e.do(t, http.MethodGet, click, nil)
	v := e.view(t)
	if r := v.Events[0].Reasons; !slices.Equal(r, []string{classify.ReasonNoMachineSignals, classify.ReasonClickBeforeOpen}) {
		t.Errorf("first click reasons %v", r)
	}
	if r := v.Events[2].Reasons; !slices.Equal(r, []string{classify.ReasonNoMachineSignals, classify.ReasonOpenedBeforeClick}) {
		t.Errorf("second click reasons %v", r)
	}
	if v.Events[0].Class != classify.Human || v.Events[2].Class != classify.Human {
		t.Errorf("classes %s %s", v.Events[0].Class, v.Events[2].Class)
	}
}

func TestCapPerRecipient(t *testing.T) {
	s := testStore(t, bolt.Options{MaxEventsPerRecipient: 3})
	e := newTestEnv(t, s, nil)
	for range 10 {
		e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	}
	v := e.view(t)
	if len(v.Events) != 3 || v.Recipients[0].Opens != 10 || v.Recipients[0].EventsTotal != 10 || v.Stats.Opens != 10 || v.Stats.UniqueOpens != 1 {
		t.Errorf("%d events listed, %+v, %+v", len(v.Events), v.Recipients[0], v.Stats)
	}
	if v.Recipients[0].LastOpenedAt == nil || v.Recipients[0].LastOpenedAt.Before(v.Events[2].At) {
		t.Errorf("last_opened_at %v", v.Recipients[0].LastOpenedAt)
	}
	if n := len(e.feed(t, "", 0).Events); n != 3 {
		t.Errorf("%d feed entries", n)
	}
	if got := counterValue(t, e.reg, "trackrelay_tracking_events_lost_total"); got != 0 {
		t.Errorf("events_lost_total = %v", got)
	}
}

func TestRetentionSweep(t *testing.T) {
	s := testStore(t, bolt.Options{})
	e := newTestEnv(t, s, nil)
	ctx := context.Background()
	if err := s.SetLinks(ctx, e.msg.ID, []string{"https://example.com/quote?id=1&x=2"}); err != nil {
		t.Fatal(err)
	}
	click := e.mint.ClickURL(0, "https://example.com/quote?id=1&x=2")
	e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	e.do(t, http.MethodGet, click, nil)
	const retention = 90 * 24 * time.Hour
	later := time.Now().Add(24 * time.Hour)
	// The first sweep marks where the events end; nothing is old yet.
	if n, err := s.Sweep(ctx, later, retention); err != nil || n != 0 {
		t.Fatalf("first sweep: %d, %v", n, err)
	}
	if n, err := s.Sweep(ctx, later.Add(retention+time.Hour), retention); err != nil || n != 2 {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
	v := e.view(t)
	r := v.Recipients[0]
	if len(v.Events) != 0 || r.Opens != 1 || r.Clicks != 1 || !r.Opened || r.FirstOpenedAt == nil || r.EventsTotal != 2 || v.Links[0].Clicks != 1 || v.Links[0].UniqueClicks != 1 {
		t.Errorf("after sweep: %d events, %+v, links %+v", len(v.Events), r, v.Links)
	}
	if p := e.feed(t, "", 0); len(p.Events) != 0 {
		t.Errorf("feed after sweep: %+v", p.Events)
	}
	if resp, _ := e.do(t, http.MethodGet, click, nil); resp.StatusCode != http.StatusFound {
		t.Errorf("click after sweep: %d", resp.StatusCode)
	}
}

func TestIPMode(t *testing.T) {
	for _, tc := range []struct{ mode, ip, want string }{
		{IPFull, "203.0.113.77", "203.0.113.77"},
		{"", "203.0.113.77", "203.0.113.77"},
		{IPTruncate, "203.0.113.77", "203.0.113.0"},
		{IPTruncate, "2001:db8:1234:5678::1", "2001:db8:1234::"},
		{IPNone, "203.0.113.77", ""},
	} {
		if got := recordedIP(parseHostAddr(tc.ip), tc.mode); got != tc.want {
			t.Errorf("recordedIP(%s, %q) = %q, want %q", tc.ip, tc.mode, got, tc.want)
		}
	}
	// Classification still sees the full address: the sender's own IP is
	// recognized though only its /24 is recorded.
	e := newTestEnv(t, nil, func(c *Config) {
		c.IPMode = IPTruncate
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"X-Forwarded-For": {"192.0.2.10"}})
	ev := e.view(t).Events[0]
	if ev.IP != "192.0.2.0" || ev.Class != classify.Self {
		t.Errorf("event %+v", ev)
	}
}

func TestNoRecord(t *testing.T) {
	e := newTestEnv(t, nil, func(c *Config) { c.NoRecord = true })
	if resp, _ := e.do(t, http.MethodGet, e.mint.OpenURL(), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("pixel: %d", resp.StatusCode)
	}
	if n := len(e.view(t).Events); n != 0 {
		t.Errorf("%d events recorded", n)
	}
}
