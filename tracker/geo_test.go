package tracker

import (
	"net/http"
	"net/netip"
	"sync"
	"testing"

	"github.com/trackrelay/trackrelay/tracker/geoip"
	"github.com/trackrelay/trackrelay/tracker/geoip/geoiptest"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// openTestGeo opens a GeoIP2-City test database: 81.2.69.0/24 GB London,
// 89.160.20.0/24 SE (no city), 2001:db8::/32 DE Berlin.
func openTestGeo(t *testing.T) *geoip.DB {
	t.Helper()
	db, err := geoip.Open(geoiptest.WriteCity(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestGeo: with a MaxMind DB, each event gets the country and city of the
// client (behind a trusted proxy here), in the message view and the feed;
// an address the database does not know gets neither key.
func TestGeo(t *testing.T) {
	geo := openTestGeo(t)
	e := newTestEnv(t, nil, func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		c.Geo = geo
	})
	hits := []struct {
		click         bool
		xff           string
		country, city string
	}{
		{false, "81.2.69.160", "GB", "London"},
		{false, "2001:db8::5", "DE", "Berlin"},
		{true, "89.160.20.115", "SE", ""},
		{false, "8.8.8.8", "", ""}, // not in the database
		{false, "", "", ""},        // 127.0.0.1
	}
	for _, h := range hits {
		u := e.mint.OpenURL()
		if h.click {
			u = e.mint.ClickURL(0, "https://example.com/")
		}
		hdr := http.Header{}
		if h.xff != "" {
			hdr.Set("X-Forwarded-For", h.xff)
		}
		if resp, _ := e.do(t, http.MethodGet, u, hdr); resp.StatusCode >= 400 {
			t.Fatalf("%s: %d", u, resp.StatusCode)
		}
	}
	check := func(what string, events []any) {
		t.Helper()
		if len(events) != len(hits) {
			t.Fatalf("%s: %d events, want %d", what, len(events), len(hits))
		}
		for i, h := range hits {
			ev := events[i].(map[string]any)
			for key, want := range map[string]string{"country": h.country, "city": h.city} {
				got, ok := ev[key]
				switch {
				case want == "" && ok:
					t.Errorf("%s: event %d (%s): %s = %v, want none", what, i, h.xff, key, got)
				case want != "" && got != want:
					t.Errorf("%s: event %d (%s): %s = %v, want %q", what, i, h.xff, key, got, want)
				}
			}
		}
	}
	var view map[string]any
	if code := e.api(t, http.MethodGet, "/api/v1/messages/"+e.msg.ID, aliceKey, &view); code != http.StatusOK {
		t.Fatalf("message: %d", code)
	}
	check("message view", view["events"].([]any))
	// The feed (and so webhook bodies, which are feed entries).
	var page map[string]any
	if code := e.api(t, http.MethodGet, "/api/v1/events", aliceKey, &page); code != http.StatusOK {
		t.Fatalf("feed: %d", code)
	}
	var feedEvents []any
	for _, fe := range page["events"].([]any) {
		if typ := fe.(map[string]any)["type"]; typ == store.EventOpen || typ == store.EventClick {
			feedEvents = append(feedEvents, fe)
		}
	}
	check("feed", feedEvents)
}

// recordingGeo is a GeoLocator that remembers the addresses it was asked.
type recordingGeo struct {
	mu  sync.Mutex
	ips []netip.Addr
}

func (g *recordingGeo) Lookup(ip netip.Addr) (string, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ips = append(g.ips, ip)
	return "GB", "London"
}

// TestGeo_ipMode: the lookup sees the full address whatever ip_mode keeps,
// and with ip_mode none the event still has its country and city.
func TestGeo_ipMode(t *testing.T) {
	for _, mode := range []string{IPTruncate, IPNone} {
		t.Run(mode, func(t *testing.T) {
			geo := &recordingGeo{}
			e := newTestEnv(t, nil, func(c *Config) {
				c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
				c.IPMode = mode
				c.Geo = geo
			})
			e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"X-Forwarded-For": {"81.2.69.160"}})
			if len(geo.ips) != 1 || geo.ips[0] != netip.MustParseAddr("81.2.69.160") {
				t.Errorf("looked up %v, want [81.2.69.160]", geo.ips)
			}
			ev := e.view(t).Events[0]
			wantIP := map[string]string{IPTruncate: "81.2.69.0", IPNone: ""}[mode]
			if ev.IP != wantIP || ev.Country != "GB" || ev.City != "London" {
				t.Errorf("event: ip %q country %q city %q", ev.IP, ev.Country, ev.City)
			}
		})
	}
}

// TestGeo_none: without a database no lookup happens and events have no
// location.
func TestGeo_none(t *testing.T) {
	e := newTestEnv(t, nil, func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"X-Forwarded-For": {"81.2.69.160"}})
	if ev := e.view(t).Events[0]; ev.Country != "" || ev.City != "" {
		t.Errorf("event has a location: %+v", ev)
	}
}
