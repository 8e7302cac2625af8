package tracker

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// One address hammering a pixel gets every answer, but only its burst is
// recorded; another address is not affected, and the excess is counted.
func TestRecordLimit_perAddress(t *testing.T) {
	e := newTestEnv(t, nil, func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		c.RecordRate, c.RecordBurst = 0.001, 5
	})
	for i := 0; i < 12; i++ {
		resp, body := e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"X-Forwarded-For": {"203.0.113.9"}})
		if resp.StatusCode != 200 || len(body) != 43 {
			t.Fatalf("hit %d over the limit not served: %d, %d bytes", i, resp.StatusCode, len(body))
		}
	}
	resp, _ := e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/"), http.Header{"X-Forwarded-For": {"203.0.113.9"}})
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("click over the limit: %d", resp.StatusCode)
	}
	e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"X-Forwarded-For": {"198.51.100.7"}})
	// IPv6: one /64 is one client, whatever its interface ids.
	for i := 0; i < 8; i++ {
		e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"X-Forwarded-For": {netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}).String()}})
	}
	v := e.view(t)
	if got := len(v.Events); got != 5+1+5 {
		t.Errorf("%d events recorded, want 11 (two bursts of 5 and one other address)", got)
	}
	if got := unlisted(t, e, "rate_limited"); got != 8+3 {
		t.Errorf("rate_limited = %v, want 11", got)
	}
}

// unlisted reads trackrelay_store_events_unlisted_total{reason} from the
// test's registry.
func unlisted(t *testing.T, e *testEnv, reason string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "trackrelay_store_events_unlisted_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no unlisted counter for %s", reason)
	return 0
}

func TestRecordLimit_disabled(t *testing.T) {
	l := newRecordLimiter(-1, 0)
	now := time.Now()
	for i := 0; i < 1000; i++ {
		if !l.Allow(netip.MustParseAddr("192.0.2.1"), now) {
			t.Fatal("a disabled limit refused a hit")
		}
	}
}
