package bolt

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
)

var encodeStrings = []string{
	"", "open", "https://example.com/quote?id=42&x=<1>", `quote " and \ backslash`,
	"tab\tnl\ncr\rbs\bff\f", "\x00\x01\x1f\x7f", "héllo wörld ✓", "line\u2028sep\u2029",
	"bad utf8 \xff\xfe end", "\xc3", "<script>&amp;</script>",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
}

var encodeTimes = []time.Time{
	time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC),
	time.Date(2025, 3, 1, 9, 0, 0, 123456789, time.UTC),
	time.Date(2025, 3, 1, 9, 0, 0, 120000000, time.FixedZone("x", 3600+1800)),
	{},
	time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), // json.Marshal refuses it: so must we
	time.Date(2025, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 25*3600)),
}

func sameAsJSON(t *testing.T, what string, v any, got []byte, gotErr error) {
	t.Helper()
	want, wantErr := json.Marshal(v)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("%s: error %v, json.Marshal's %v", what, gotErr, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
	}
}

func TestEncode_sameBytesAsEncodingJSON(t *testing.T) {
	for i, s := range encodeStrings {
		for j, at := range encodeTimes {
			e := storedEvent{Type: s, At: at, Recipient: i - 3, Link: j - 1, URL: s, IP: s, UserAgent: s,
				Client: s, Country: s, City: s, Class: s, Reasons: []string{s, "x"}}
			got, err := encodeEvent(&e)
			sameAsJSON(t, "event", e, got, err)
			e.Reasons = nil
			got, err = encodeEvent(&e)
			sameAsJSON(t, "event without reasons", e, got, err)
			fe := storedFeedEntry{Kind: s, Message: s, Recipient: i, Event: uint64(j), At: at, Class: s, Prev: s, Reasons: []string{s}}
			got, err = encodeFeedEntry(&fe)
			sameAsJSON(t, "feed entry", fe, got, err)
			fe = storedFeedEntry{Kind: s, Message: s, At: at, Delivery: &storedDelivery{Status: delivery.Status(s), UpdatedAt: at}}
			got, err = encodeFeedEntry(&fe)
			sameAsJSON(t, "delivery entry", fe, got, err)
		}
	}
}

func FuzzEncode(f *testing.F) {
	for _, s := range encodeStrings {
		f.Add(s, s, int64(1740819600123456789), 3, -1)
	}
	f.Fuzz(func(t *testing.T, a, b string, ns int64, r, l int) {
		at := time.Unix(0, ns).UTC()
		e := storedEvent{Type: a, At: at, Recipient: r, Link: l, URL: b, UserAgent: a + b, Class: b, Reasons: []string{a, b}}
		got, err := encodeEvent(&e)
		sameAsJSON(t, "event", e, got, err)
		fe := storedFeedEntry{Kind: a, Message: b, Recipient: r, Event: uint64(l), At: at, Prev: a, Reasons: []string{b}}
		got, err = encodeFeedEntry(&fe)
		sameAsJSON(t, "feed entry", fe, got, err)
	})
}
