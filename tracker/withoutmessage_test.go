package tracker

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"sync"
	"testing"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
)

// outageStore is a store whose reads of the hit path fail (the message,
// or only the copy's delivery) and which keeps the events it is given.
type outageStore struct {
	store.Store
	messageFails bool
	mu           sync.Mutex
	events       []store.Event
}

var errOutage = errors.New("database unreachable")

func (s *outageStore) Message(ctx context.Context, id string) (*store.Message, error) {
	if s.messageFails {
		return nil, errOutage
	}
	return s.Store.Message(ctx, id)
}

func (s *outageStore) Delivery(context.Context, string, int) (store.Delivery, error) {
	return store.Delivery{}, errOutage
}

func (s *outageStore) AddEvent(ctx context.Context, e store.Event) error {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
	return s.Store.AddEvent(ctx, e)
}

// A hit classified while its message or its copy's delivery cannot be
// read is marked so that the store classifies it again, with the client's
// full address aside from the truncated one recorded; a hit classified
// with what it needs is not.
func TestHitWithoutMessage(t *testing.T) {
	for _, tc := range []struct {
		name                string
		messageFails, click bool
		want                bool
	}{
		{"message unreadable, open", true, false, true},
		{"message unreadable, click", true, true, true},
		{"delivery unreadable, click", false, true, true},
		{"message read, open", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &outageStore{Store: testStore(t, bolt.Options{})}
			e := newTestEnv(t, s, func(c *Config) {
				c.IPMode = IPTruncate
				c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
			})
			s.messageFails = tc.messageFails
			u := e.mint.OpenURL()
			if tc.click {
				u = e.mint.ClickURL(0, "https://example.com/")
			}
			e.do(t, http.MethodGet, u, http.Header{"X-Forwarded-For": {"192.0.2.10"}})
			s.mu.Lock()
			events := s.events
			s.mu.Unlock()
			if len(events) != 1 {
				t.Fatalf("%d events recorded", len(events))
			}
			ev := events[0]
			if ev.WithoutMessage != tc.want {
				t.Errorf("WithoutMessage %v, want %v", ev.WithoutMessage, tc.want)
			}
			wantIP := ""
			if tc.want {
				wantIP = "192.0.2.10"
			}
			if ev.IP != "192.0.2.0" || ev.ClientIP != wantIP {
				t.Errorf("IP %q, ClientIP %q; want 192.0.2.0 and %q", ev.IP, ev.ClientIP, wantIP)
			}
		})
	}
}
