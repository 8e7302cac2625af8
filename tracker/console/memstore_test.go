package console

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// memStore is a Store in memory for the console's tests: the pages are
// tested on data whose every field the test chose. The backends' own
// Browser implementations are tested by package storetest.
type memStore struct {
	mu         sync.Mutex
	msgs       map[string]*memMessage
	lookupErr  error // returned by Lookup and Messages when set
	lookups    int
	lastSearch string
}

type memMessage struct {
	m          store.Message
	links      []string
	deliveries map[int]store.Delivery
	events     []store.Event
}

func newMemStore() *memStore { return &memStore{msgs: map[string]*memMessage{}} }

func (s *memStore) put(m store.Message, links []string, deliveries map[int]store.Delivery, events ...store.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if deliveries == nil {
		deliveries = map[int]store.Delivery{}
	}
	s.msgs[m.ID] = &memMessage{m: m, links: links, deliveries: deliveries, events: events}
}

func (s *memStore) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.msgs[id]
	return ok
}

func (s *memStore) Lookup(_ context.Context, account, ref string) (*store.MessageView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	if s.lookupErr != nil {
		return nil, s.lookupErr
	}
	mm := s.msgs[ref]
	if mm == nil || mm.m.Account != account {
		return nil, store.ErrNotFound
	}
	return store.BuildView(&mm.m, mm.links, mm.deliveries, mm.events, nil), nil
}

func (s *memStore) Erase(_ context.Context, account, ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mm := s.msgs[ref]
	if mm == nil || mm.m.Account != account {
		return store.ErrNotFound
	}
	delete(s.msgs, ref)
	return nil
}

// sorted returns account's messages newest first.
func (s *memStore) sorted(account string) []*memMessage {
	var out []*memMessage
	for _, mm := range s.msgs {
		if mm.m.Account == account {
			out = append(out, mm)
		}
	}
	slices.SortFunc(out, func(a, b *memMessage) int {
		if c := b.m.AcceptedAt.Compare(a.m.AcceptedAt); c != 0 {
			return c
		}
		return strings.Compare(b.m.ID, a.m.ID)
	})
	return out
}

func (s *memStore) Messages(_ context.Context, account string, q store.MessageQuery) (*store.MessagePage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookupErr != nil {
		return nil, s.lookupErr
	}
	s.lastSearch = q.Search
	limit := q.Limit
	if limit == 0 {
		limit = store.DefaultMessagesLimit
	}
	start := 0
	if q.After != "" {
		n, err := strconv.Atoi(q.After)
		if err != nil {
			return nil, store.ErrBadCursor
		}
		start = n
	}
	var matched []*memMessage
	for _, mm := range s.sorted(account) {
		if q.Search == "" || matches(mm, q.Search) {
			matched = append(matched, mm)
		}
	}
	page := &store.MessagePage{}
	for i := start; i < len(matched) && i < start+limit; i++ {
		page.Messages = append(page.Messages, summary(matched[i]))
	}
	if start+limit < len(matched) {
		page.Next = strconv.Itoa(start + limit)
	}
	return page, nil
}

func matches(mm *memMessage, search string) bool {
	search = strings.ToLower(search)
	if strings.Contains(strings.ToLower(mm.m.Subject), search) {
		return true
	}
	for _, r := range mm.m.Recipients {
		if strings.Contains(strings.ToLower(r.Address), search) {
			return true
		}
	}
	return false
}

func summary(mm *memMessage) store.MessageSummary {
	v := store.BuildView(&mm.m, mm.links, mm.deliveries, mm.events, nil)
	sum := store.MessageSummary{ID: mm.m.ID, Subject: mm.m.Subject, AcceptedAt: mm.m.AcceptedAt,
		Opened: v.Stats.UniqueOpens, Clicked: v.Stats.UniqueClicks}
	for _, r := range v.Recipients {
		sum.Recipients = append(sum.Recipients, r.Address)
		sum.Delivery = append(sum.Delivery, r.Delivery.Status)
	}
	return sum
}

func (s *memStore) Overview(_ context.Context, account string, from, to time.Time) (*store.Overview, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := &store.Overview{From: from, To: to, Filtered: map[string]int{}}
	days := map[time.Time]*store.DayTotals{}
	for d := from.UTC().Truncate(24 * time.Hour); d.Before(to); d = d.Add(24 * time.Hour) {
		o.Days = append(o.Days, store.DayTotals{Day: d})
	}
	for i := range o.Days {
		days[o.Days[i].Day] = &o.Days[i]
	}
	for _, mm := range s.sorted(account) {
		if mm.m.AcceptedAt.Before(from) || !mm.m.AcceptedAt.Before(to) {
			continue
		}
		o.Messages++
		o.Recipients += len(mm.m.Recipients)
		v := store.BuildView(&mm.m, mm.links, mm.deliveries, mm.events, nil)
		o.Opened += v.Stats.UniqueOpens
		o.Clicked += v.Stats.UniqueClicks
		for _, e := range mm.events {
			d := days[e.At.UTC().Truncate(24*time.Hour)]
			if !classify.Counted(e.Class) {
				o.Filtered[e.Class]++
				if d != nil {
					d.Filtered++
				}
				continue
			}
			if d == nil {
				continue
			}
			if e.Type == store.EventClick {
				d.Clicks++
			} else {
				d.Opens++
			}
		}
	}
	return o, nil
}

var _ Store = (*memStore)(nil)

// Fixture times: the message page's screenshot depends on them.
var (
	t0 = time.Date(2026, 3, 2, 9, 15, 0, 0, time.UTC)
)

// fixture stores the messages the tests look at: alice's quote (two
// recipients, events of every kind), alice's bounced invoice, and bob's
// message, which alice must never see.
func fixture(s *memStore) {
	s.put(store.Message{ID: "Q1QUOTE", MessageID: "quote-42@example.com", Account: "alice", From: "alice@example.com",
		Subject: "Your quote for the kitchen", SubmitIP: "192.0.2.10", AcceptedAt: t0, Mode: "all",
		Recipients: []store.Recipient{{Address: "client@example.net", Tracked: true}, {Address: "partner@example.org", Tracked: true}}},
		[]string{"https://example.com/quote/42?x=1&y=2", "https://example.com/terms"},
		map[int]store.Delivery{
			0: {Status: delivery.Delivered, Attempts: 1, LastResponse: "250 2.0.0 Ok: queued as 4F2A", UpdatedAt: t0.Add(2 * time.Second)},
			1: {Status: delivery.Deferred, Attempts: 2, LastResponse: "451 4.7.1 Greylisted, try again later", UpdatedAt: t0.Add(10 * time.Minute)},
		},
		store.Event{Type: store.EventOpen, At: t0.Add(3 * time.Second), Recipient: 0, Link: -1, IP: "17.58.1.2", UserAgent: "Mozilla/5.0",
			Client: "Apple Mail", Class: classify.Prefetch, Reasons: []string{classify.ReasonAppleMPPIP}},
		store.Event{Type: store.EventClick, At: t0.Add(5 * time.Second), Recipient: 0, Link: 0, IP: "40.92.1.1", UserAgent: "Mozilla/5.0 (Windows NT 10.0)",
			Client: "Browser", Class: classify.Scanner, Reasons: []string{"gateway-range:eop", "click-3s-after-delivery"}, URL: "https://example.com/quote/42?x=1&y=2"},
		store.Event{Type: store.EventOpen, At: t0.Add(2 * time.Hour), Recipient: 0, Link: -1, IP: "198.51.100.7",
			UserAgent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)", Client: "Apple Mail",
			Country: "FR", City: "Lyon", Class: classify.Human, Reasons: []string{classify.ReasonNoMachineSignals}},
		store.Event{Type: store.EventClick, At: t0.Add(2*time.Hour + 40*time.Second), Recipient: 0, Link: 0, IP: "198.51.100.7",
			UserAgent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
			Client:    "Safari", Country: "FR", City: "Lyon", Class: classify.Human, Reasons: []string{classify.ReasonOpenedBeforeClick}, URL: "https://example.com/quote/42?x=1&y=2"},
		store.Event{Type: store.EventOpen, At: t0.Add(26 * time.Hour), Recipient: 0, Link: -1, IP: "66.249.84.1", UserAgent: "Mozilla/5.0 (via ggpht.com GoogleImageProxy)",
			Client: "Gmail", Class: classify.Proxy, Reasons: []string{classify.ReasonGoogleProxyUA}},
	)
	s.put(store.Message{ID: "Q2INVOICE", MessageID: "inv-7@example.com", Account: "alice", From: "alice@example.com",
		Subject: "Invoice 7", AcceptedAt: t0.Add(-24 * time.Hour), Mode: "all",
		Recipients: []store.Recipient{{Address: "gone@example.net", Tracked: true}}}, nil,
		map[int]store.Delivery{0: {Status: delivery.Bounced, Attempts: 1, LastResponse: "550 5.1.1 No such user", UpdatedAt: t0.Add(-24 * time.Hour)}})
	s.put(store.Message{ID: "B1SECRET", Account: "bob", From: "bob@example.com", Subject: "Bob's private offer", AcceptedAt: t0,
		Mode: "all", Recipients: []store.Recipient{{Address: "x@example.net", Tracked: true}}}, nil, nil)
}
