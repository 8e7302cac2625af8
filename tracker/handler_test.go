package tracker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image/gif"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/token"
)

const (
	aliceKey = "alice-api-key-0123456789"
	bobKey   = "bob-api-key-9876543210"
)

func testSecret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// testKeyring is a keyring of one key, with id 1.
func testKeyring(t testing.TB) *token.Keyring {
	t.Helper()
	kr, err := token.NewKeyring(token.Key{ID: 1, Secret: testSecret('a')})
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func testStore(t testing.TB, opts bolt.Options) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "tracker.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

var testAccepted = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func testMessage() store.Message {
	return store.Message{
		ID:         "Q1A2B3",
		MessageID:  "abc/def+1@mail.example.com",
		Account:    "alice",
		From:       "alice@example.com",
		Subject:    "Devis n° 42 — été",
		SubmitIP:   "192.0.2.10",
		AcceptedAt: testAccepted,
		Mode:       "all",
		Recipients: []store.Recipient{
			{Address: "bob@example.net", Tracked: true},
			{Address: "alice@example.com", Tracked: false},
		},
	}
}

func keySum(k string) string {
	s := sha256.Sum256([]byte(k))
	return hex.EncodeToString(s[:])
}

type testEnv struct {
	srv   *httptest.Server
	keys  *token.Keyring
	store store.Store
	reg   *prometheus.Registry
	msg   store.Message
	mint  *token.Minter
}

// newTestEnv serves a tracker for one stored message (queue id Q1A2B3,
// account alice, recipient 0 bob, tracked) on 127.0.0.1.
func newTestEnv(t testing.TB, store store.Store, edit func(*Config)) *testEnv {
	t.Helper()
	keys := testKeyring(t)
	if store == nil {
		store = testStore(t, bolt.Options{})
	}
	reg := prometheus.NewPedanticRegistry()
	metrics := NewMetrics(reg)
	cfg := Config{
		BaseURL:  "http://t.example",
		Accounts: []Account{{Name: "alice", APIKeySHA256: keySum(aliceKey)}, {Name: "bob", APIKeySHA256: keySum(bobKey)}},
		Metrics:  metrics,
	}
	if edit != nil {
		edit(&cfg)
	}
	m := testMessage()
	if err := store.PutMessage(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(cfg, keys, store))
	t.Cleanup(srv.Close)
	return &testEnv{srv: srv, keys: keys, store: store, reg: reg, msg: m, mint: keys.Minter(srv.URL, m.ID, 0)}
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (e *testEnv) do(t testing.TB, method, rawURL string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", uaChrome)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Body.Close(); err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func (e *testEnv) view(t testing.TB) *store.MessageView {
	t.Helper()
	v, err := e.store.Lookup(context.Background(), "alice", e.msg.ID)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestPixel(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	resp, body := e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !bytes.Equal(body, pixelGIF) || len(body) != 43 {
		t.Errorf("body is %d bytes: %x", len(body), body)
	}
	img, err := gif.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1 || b.Dy() != 1 {
		t.Errorf("pixel is %v", b)
	}
	if _, _, _, a := img.At(0, 0).RGBA(); a != 0 {
		t.Errorf("pixel alpha %d, want transparent", a)
	}
	for k, want := range map[string]string{
		"Content-Type":           "image/gif",
		"Content-Length":         "43",
		"Cache-Control":          "no-store, no-cache, must-revalidate, private",
		"Pragma":                 "no-cache",
		"Expires":                "0",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	// Committed before the response: visible right away.
	v := e.view(t)
	if len(v.Events) != 1 || v.Events[0].Type != store.EventOpen || v.Events[0].Class != classify.Human || v.Events[0].IP != "127.0.0.1" {
		t.Fatalf("events = %+v", v.Events)
	}
	if !v.Recipients[0].Opened || v.Recipients[0].Opens != 1 {
		t.Errorf("recipient = %+v", v.Recipients[0])
	}
	if got := counterValue(t, e.reg, "trackrelay_tracking_events_total", "type", "open", "class", "human"); got != 1 {
		t.Errorf("events_total{open,human} = %v", got)
	}
	if got := counterValue(t, e.reg, "trackrelay_tracking_requests_total", "handler", "open", "code", "200"); got != 1 {
		t.Errorf("requests_total{open,200} = %v", got)
	}

	// Without the .gif suffix, and HEAD (a scanner: recorded, not counted).
	tok := strings.TrimSuffix(strings.TrimPrefix(e.mint.OpenURL(), e.srv.URL+"/o/"), ".gif")
	if resp, _ := e.do(t, http.MethodGet, e.srv.URL+"/o/"+tok, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("without suffix: %d", resp.StatusCode)
	}
	resp, body = e.do(t, http.MethodHead, e.mint.OpenURL(), nil)
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Header.Get("Content-Type") != "image/gif" {
		t.Errorf("HEAD: %d, %d bytes", resp.StatusCode, len(body))
	}
	v = e.view(t)
	if len(v.Events) != 3 || v.Events[2].Class != classify.Scanner || !slices.Contains(v.Events[2].Reasons, classify.ReasonHeadRequest) || v.Recipients[0].Opens != 2 {
		t.Errorf("after HEAD: %+v", v.Events)
	}
	if resp, _ := e.do(t, http.MethodPost, e.mint.OpenURL(), nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

func TestClick_exactDestination(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	long := "https://example.com/long?q=" + strings.Repeat("a%2Fb&c=d+e@f[1]", 256)
	if len(long) < 4096 {
		t.Fatal("long URL too short")
	}
	dests := []string{
		"https://example.com/quote?id=1&x=2",
		"https://example.com/p%20a%2Fth?q=a+b&r=%26",
		"http://user@example.com/@me",
		"https://example.com/a?arr[]=1&arr[]=2",
		"https://[2001:db8::1]:8443/x#frag",
		"HTTPS://Example.COM/Case",
		long,
	}
	for i, dest := range dests {
		resp, _ := e.do(t, http.MethodGet, e.mint.ClickURL(i, dest), nil)
		if resp.StatusCode != http.StatusFound {
			t.Errorf("%.40q: status %d", dest, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Location"); got != dest {
			t.Errorf("Location = %.60q, want %.60q", got, dest)
		}
		if got := resp.Header.Get("Referrer-Policy"); got != "no-referrer" {
			t.Errorf("Referrer-Policy = %q", got)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control = %q", got)
		}
	}
	v := e.view(t)
	if len(v.Events) != len(dests) {
		t.Fatalf("%d events, want %d", len(v.Events), len(dests))
	}
	if v.Events[0].Link != dests[0] || v.Events[0].Type != store.EventClick {
		t.Errorf("event 0 = %+v", v.Events[0])
	}
	// HEAD redirects too.
	resp, _ := e.do(t, http.MethodHead, e.mint.ClickURL(0, dests[0]), nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != dests[0] {
		t.Errorf("HEAD: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestClick_unsafeDestinationIs404(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	for _, dest := range []string{"javascript:alert(1)", "mailto:a@b", "//evil.example/", "/relative", "data:text/html,x", "http:///nohost", ""} {
		resp, _ := e.do(t, http.MethodGet, e.mint.ClickURL(0, dest), nil)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
			t.Errorf("%q: %d, Location %q", dest, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if len(e.view(t).Events) != 0 {
		t.Error("refused redirects were recorded")
	}
}

func TestRedirectTarget(t *testing.T) {
	for in, want := range map[string]string{
		" https://a.example/x \n": "https://a.example/x",
		"https://a.example/a\tb":  "https://a.example/ab",
		"https://a.example/a b":   "https://a.example/a%20b",
		"https://a.example/é":     "https://a.example/%C3%A9",
	} {
		got, ok := redirectTarget(in)
		if !ok || got != want {
			t.Errorf("redirectTarget(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestBadTokens404(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	other, _ := token.NewKeyring(token.Key{ID: 1, Secret: testSecret('z')})
	open := strings.TrimPrefix(e.mint.OpenURL(), e.srv.URL)
	click := strings.TrimPrefix(e.mint.ClickURL(0, "https://example.com/"), e.srv.URL)
	tamper := func(p string) string {
		i := len(p) / 2
		c := byte('A')
		if p[i] == 'A' {
			c = 'B'
		}
		return p[:i] + string(c) + p[i+1:]
	}
	paths := []string{
		"/o/", "/c/", "/o/garbage.gif", "/c/garbage",
		tamper(open), tamper(click),
		"/o/" + other.OpenToken(e.msg.ID, 0) + ".gif",
		"/c/" + other.ClickToken(e.msg.ID, 0, 0, "https://evil.example/"),
		"/c/" + strings.TrimPrefix(open, "/o/"),  // open token on the click path
		"/o/" + strings.TrimPrefix(click, "/c/"), // and the other way round
		"/nope",
	}
	for _, p := range paths {
		resp, _ := e.do(t, http.MethodGet, e.srv.URL+p, nil)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
			t.Errorf("%.50s: %d, Location %q", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if got := counterValue(t, e.reg, "trackrelay_tracking_invalid_tokens_total"); got != float64(len(paths)-1) {
		t.Errorf("invalid_tokens_total = %v, want %d", got, len(paths)-1)
	}
	if len(e.view(t).Events) != 0 {
		t.Error("bad tokens were recorded")
	}
}

// failingStore fails every call, like a broken disk.
type failingStore struct{ store.Store }

var errDisk = errors.New("disk on fire")

func (failingStore) PutMessage(context.Context, store.Message) error         { return nil }
func (failingStore) AddEvent(context.Context, store.Event) error             { return errDisk }
func (failingStore) Message(context.Context, string) (*store.Message, error) { return nil, errDisk }
func (failingStore) Lookup(context.Context, string, string) (*store.MessageView, error) {
	return nil, errDisk
}

// slowStore never answers AddEvent until its context ends; abandoned
// counts the calls whose context ended. A hit whose context never ends is
// let go after 30 s, uncounted, so that the test fails rather than hangs.
type slowStore struct {
	failingStore
	abandoned atomic.Int64
}

func (s *slowStore) AddEvent(ctx context.Context, _ store.Event) error {
	select {
	case <-ctx.Done():
		s.abandoned.Add(1)
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("slowStore: the hit's context never ended")
	}
}

func TestStoreFailure_stillServes(t *testing.T) {
	closed, err := bolt.Open(filepath.Join(t.TempDir(), "closed.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowStore{}
	stores := map[string]store.Store{"closed": closed, "failing": failingStore{}, "slow": slow}
	for name, store := range stores {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t, store, func(c *Config) { c.StoreTimeout = 50 * time.Millisecond })
			if name == "closed" {
				if err := closed.Close(); err != nil {
					t.Fatal(err)
				}
			}
			resp, body := e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, pixelGIF) {
				t.Errorf("pixel: %d, %d bytes", resp.StatusCode, len(body))
			}
			resp, _ = e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/?a=1&b=2"), nil)
			if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://example.com/?a=1&b=2" {
				t.Errorf("click: %d %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			if got := counterValue(t, e.reg, "trackrelay_tracking_events_lost_total"); got != 2 {
				t.Errorf("events_lost_total = %v, want 2", got)
			}
			// The slow store's hits were let go on StoreTimeout.
			if got := slow.abandoned.Load(); name == "slow" && got != 2 {
				t.Errorf("%d hits ended by StoreTimeout, want 2", got)
			}
			// The API reports the failure as temporary.
			resp, _ = e.do(t, http.MethodGet, e.srv.URL+"/api/v1/messages/Q1A2B3", http.Header{"Authorization": {"Bearer " + aliceKey}})
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("API with failed store: %d", resp.StatusCode)
			}
		})
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		xff     []string
		want    string
	}{
		{"no proxies configured", nil, []string{"203.0.113.9"}, "127.0.0.1"},
		{"trusted peer, one hop", trusted, []string{"203.0.113.9"}, "203.0.113.9"},
		{"rightmost untrusted wins", trusted, []string{"198.51.100.1, 203.0.113.9, 10.1.2.3"}, "203.0.113.9"},
		{"spoofed left part ignored", trusted, []string{"1.2.3.4", "203.0.113.9"}, "203.0.113.9"},
		{"ipv6 and ports", trusted, []string{"[2001:db8::7]:4711"}, "2001:db8::7"},
		{"garbage stops the walk", trusted, []string{"203.0.113.9, nonsense"}, "127.0.0.1"},
		{"all trusted", trusted, []string{"10.0.0.1"}, "10.0.0.1"},
		{"no header", trusted, nil, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, nil, func(c *Config) { c.TrustedProxies = tc.trusted })
			resp, _ := e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"X-Forwarded-For": tc.xff})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			v := e.view(t)
			if len(v.Events) != 1 || v.Events[0].IP != tc.want {
				t.Errorf("events = %+v, want IP %s", v.Events, tc.want)
			}
		})
	}
}

func TestSelfAndScannerWindow(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newTestEnv(t, nil, func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		c.Now = func() time.Time { return now }
	})
	ctx := context.Background()
	if err := e.store.SetDelivery(ctx, e.msg.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 1, LastResponse: "250 ok", UpdatedAt: now.Add(-2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	// Click 2 s after delivery: a scanner.
	e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/"), http.Header{"X-Forwarded-For": {"203.0.113.9"}})
	// From the submitter's IP: self.
	e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"X-Forwarded-For": {"192.0.2.10"}})
	// A minute later from elsewhere: human.
	now = now.Add(time.Minute)
	e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/"), http.Header{"X-Forwarded-For": {"203.0.113.9"}})
	v := e.view(t)
	if len(v.Events) != 3 {
		t.Fatalf("events = %+v", v.Events)
	}
	want := []struct {
		class, reason string
	}{{classify.Scanner, "click-2s-after-delivery"}, {classify.Self, classify.ReasonSubmitterIP}, {classify.Human, ""}}
	for i, w := range want {
		ev := v.Events[i]
		if ev.Class != w.class || (w.reason != "" && !slices.Contains(ev.Reasons, w.reason)) {
			t.Errorf("event %d: %s %v, want %s %s", i, ev.Class, ev.Reasons, w.class, w.reason)
		}
	}
	if r := v.Recipients[0]; r.Clicks != 1 || r.Opens != 0 || !r.Opened {
		t.Errorf("recipient = %+v", r)
	}
	if v.Links[0].Clicks != 1 || v.Links[0].URL != "https://example.com/" {
		t.Errorf("links = %+v", v.Links)
	}
}

func TestAPI(t *testing.T) {
	e := newTestEnv(t, nil, func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} })
	ctx := context.Background()
	if err := e.store.SetLinks(ctx, e.msg.ID, []string{"https://example.com/quote?id=1&x=2"}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetDelivery(ctx, e.msg.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 1, LastResponse: "250 2.0.0 ok", UpdatedAt: testAccepted.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/quote?id=1&x=2"), nil)
	e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"User-Agent": {uaAppleMail}, "X-Forwarded-For": {"17.58.1.1"}})

	api := func(ref string, auth string) (*http.Response, []byte) {
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		return e.do(t, http.MethodGet, e.srv.URL+"/api/v1/messages/"+ref, h)
	}
	// 401s.
	for _, auth := range []string{"", "Bearer", "Bearer wrong", "Basic " + aliceKey, aliceKey} {
		resp, body := api(e.msg.ID, auth)
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("auth %q: %d %q", auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		var eb struct{ Error string }
		if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" {
			t.Errorf("auth %q: body %q", auth, body)
		}
	}
	// 404s: other account's message, unknown message.
	for _, tc := range []struct{ ref, auth string }{{e.msg.ID, "Bearer " + bobKey}, {"NOPE", "Bearer " + aliceKey}, {url.PathEscape(e.msg.MessageID), "Bearer " + bobKey}} {
		if resp, _ := api(tc.ref, tc.auth); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", tc.ref, resp.StatusCode)
		}
	}
	// 200 by queue id and by Message-ID with and without <>.
	refs := []string{e.msg.ID, url.PathEscape(e.msg.MessageID), url.PathEscape("<" + e.msg.MessageID + ">"), "%3C" + strings.ReplaceAll(e.msg.MessageID, "/", "%2F") + "%3E"}
	var body []byte
	for _, ref := range refs {
		var resp *http.Response
		resp, body = api(ref, "bearer "+aliceKey)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", ref, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type %q", ct)
		}
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	assertKeys(t, "message", doc, "id", "message_id", "account", "from", "subject", "accepted_at", "mode", "recipients", "links", "events", "stats")
	if doc["subject"] != "Devis n° 42 — été" {
		t.Errorf("subject = %q", doc["subject"])
	}
	recips := doc["recipients"].([]any)
	r0 := recips[0].(map[string]any)
	assertKeys(t, "recipient", r0, "address", "tracked", "delivery", "opened", "first_opened_at", "last_opened_at", "opens", "clicks", "events_total")
	assertKeys(t, "delivery", r0["delivery"].(map[string]any), "status", "attempts", "last_response", "updated_at")
	links := doc["links"].([]any)
	assertKeys(t, "link", links[0].(map[string]any), "index", "url", "clicks", "unique_clicks")
	events := doc["events"].([]any)
	if len(events) != 3 {
		t.Fatalf("%d events", len(events))
	}
	assertKeys(t, "open event", events[0].(map[string]any), "id", "type", "at", "recipient", "ip", "user_agent", "client", "class", "reasons")
	assertKeys(t, "click event", events[1].(map[string]any), "id", "type", "at", "recipient", "link", "ip", "user_agent", "client", "class", "reasons")

	var v store.MessageView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	if v.ID != e.msg.ID || v.MessageID != e.msg.MessageID || v.Account != "alice" || v.From != e.msg.From || v.Mode != "all" {
		t.Errorf("header fields: %+v", v)
	}
	if doc["accepted_at"] != "2025-03-01T09:00:00Z" {
		t.Errorf("accepted_at = %v", doc["accepted_at"])
	}
	rv := v.Recipients[0]
	if !rv.Opened || rv.Opens != 1 || rv.Clicks != 1 || rv.Delivery.Status != delivery.Delivered || rv.Address != "bob@example.net" || !rv.Tracked {
		t.Errorf("recipient 0 = %+v", rv)
	}
	if r1 := recips[1].(map[string]any); r1["first_opened_at"] != nil || r1["opened"] != false || r1["tracked"] != false {
		t.Errorf("recipient 1 = %v", r1)
	}
	if v.Links[0] != (store.LinkView{Index: 0, URL: "https://example.com/quote?id=1&x=2", Clicks: 1, UniqueClicks: 1}) {
		t.Errorf("links = %+v", v.Links)
	}
	ev := v.Events[2]
	if ev.Class != classify.Prefetch || ev.Client != "Apple Mail" || ev.IP != "17.58.1.1" {
		t.Errorf("apple event = %+v", ev)
	}
	if v.Events[1].Link != "https://example.com/quote?id=1&x=2" || v.Events[1].Recipient != "bob@example.net" || v.Events[1].Client != "Chrome" {
		t.Errorf("click event = %+v", v.Events[1])
	}
	for _, s := range []string{events[0].(map[string]any)["at"].(string), r0["first_opened_at"].(string)} {
		if ts, err := time.Parse(time.RFC3339, s); err != nil || !strings.HasSuffix(s, "Z") || ts.Location() != time.UTC {
			t.Errorf("time %q is not RFC 3339 UTC", s)
		}
	}
	// Other methods.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/messages/"+e.msg.ID, nil)
	req.Header.Set("Authorization", "Bearer "+aliceKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
	st := v.Stats
	if st.Opens != 1 || st.UniqueOpens != 1 || st.Clicks != 1 || st.UniqueClicks != 1 || st.Events != 3 ||
		st.FirstOpenedAt == nil || st.LastOpenedAt == nil || st.LastOpenedAt.Before(*st.FirstOpenedAt) {
		t.Errorf("stats = %+v", st)
	}
	for _, ev := range v.Events {
		if !strings.HasPrefix(ev.ID, "ev_") || len(ev.Reasons) == 0 {
			t.Errorf("event without id or reasons: %+v", ev)
		}
	}
}

func assertKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	want := slices.Clone(keys)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s keys = %v, want %v", what, got, want)
	}
}

func TestHealthz(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	resp, body := e.do(t, http.MethodGet, e.srv.URL+"/healthz", nil)
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Errorf("healthz: %d %q", resp.StatusCode, body)
	}
}

func TestPixel_concurrentHitsAllLand(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	const n = 100
	errs := make(chan error, n)
	for range n {
		go func() {
			resp, err := http.Get(e.mint.OpenURL())
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				if cerr := resp.Body.Close(); err == nil {
					err = cerr
				}
				if err == nil && resp.StatusCode != http.StatusOK {
					err = errors.New(resp.Status)
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := len(e.view(t).Events); got != n {
		t.Errorf("%d events recorded, want %d", got, n)
	}
	if got := counterValue(t, e.reg, "trackrelay_tracking_events_lost_total"); got != 0 {
		t.Errorf("events_lost_total = %v", got)
	}
}

func FuzzRedirectTarget(f *testing.F) {
	for _, s := range []string{"https://a.example/x?y=1&z=%20", " http://a b\t/\n", "javascript:x", "https:/x", "http://é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dest string) {
		loc, ok := redirectTarget(dest)
		if !ok {
			return
		}
		lower := strings.ToLower(loc)
		if !strings.HasPrefix(lower, "http:") && !strings.HasPrefix(lower, "https:") {
			t.Fatalf("%q -> %q: not http(s)", dest, loc)
		}
		for i := 0; i < len(loc); i++ {
			if loc[i] <= ' ' || loc[i] >= 0x7f {
				t.Fatalf("%q -> %q: raw byte %#x", dest, loc, loc[i])
			}
		}
		u, err := url.Parse(strings.ReplaceAll(loc, "\\", "/"))
		if err == nil && u.Hostname() == "" {
			t.Fatalf("%q -> %q: no host", dest, loc)
		}
	})
}

// A hit from a web mail page records the web mail app as its client.
func TestHit_webmailClientFromReferer(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	ctx := context.Background()
	if err := e.store.SetLinks(ctx, e.msg.ID, []string{"https://example.com/quote"}); err != nil {
		t.Fatal(err)
	}
	e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"Referer": {"https://outlook.live.com/"}})
	e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/quote"), http.Header{"Referer": {"https://outlook.office.com/mail/inbox"}})
	e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	v, err := e.store.Lookup(ctx, "alice", e.msg.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range v.Events {
		got = append(got, ev.Client)
	}
	if want := []string{"Outlook.com", "Outlook on the web", "Chrome"}; !slices.Equal(got, want) {
		t.Errorf("clients %q, want %q", got, want)
	}
}

// A message the relay has accepted but not yet reported (Config.Pending)
// is found by the API, by queue id or Message-ID, in the very form the
// store gives once it has the message; another account's is still a 404.
func TestAPI_pendingMessage(t *testing.T) {
	m := testMessage()
	m.ID, m.MessageID = "QPENDING1", "<pending.1@mail.example.com>"
	// Longer than a store keeps: the pending view cuts it as the store does.
	m.Subject = strings.Repeat("é", store.MaxSubjectBytes)
	pending := func(account, ref string) (*store.Message, bool) {
		if account == m.Account && (ref == m.ID || strings.Trim(ref, "<>") == strings.Trim(m.MessageID, "<>")) {
			return &m, true
		}
		return nil, false
	}
	e := newTestEnv(t, nil, func(c *Config) { c.Pending = pending })
	get := func(ref, key string) (int, []byte) {
		resp, body := e.do(t, http.MethodGet, e.srv.URL+"/api/v1/messages/"+url.PathEscape(ref), http.Header{"Authorization": {"Bearer " + key}})
		return resp.StatusCode, body
	}
	code, before := get(m.ID, aliceKey)
	if code != http.StatusOK {
		t.Fatalf("pending message by queue id: %d %s", code, before)
	}
	for _, ref := range []string{"pending.1@mail.example.com", "<pending.1@mail.example.com>"} {
		if code, body := get(ref, aliceKey); code != http.StatusOK || !bytes.Equal(body, before) {
			t.Errorf("pending message by Message-ID %q: %d %s", ref, code, body)
		}
	}
	if code, _ := get(m.ID, bobKey); code != http.StatusNotFound {
		t.Errorf("another account's pending message: %d, want 404", code)
	}
	if code, _ := get("QNOSUCH", aliceKey); code != http.StatusNotFound {
		t.Errorf("unknown message: %d, want 404", code)
	}
	// Once stored, the store answers, in the same form.
	if err := e.store.PutMessage(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if code, after := get(m.ID, aliceKey); code != http.StatusOK || !bytes.Equal(after, before) {
		t.Errorf("stored message differs from its pending view:\npending %s\nstored  %s", before, after)
	}

	// A pending message can be erased: it stays erased when the relay
	// reports it, and the pending copy is not shown in its place.
	m2 := testMessage()
	m2.ID, m2.MessageID = "QPENDING2", "pending.2@mail.example.com"
	m = m2
	if code, _ := get(m.ID, aliceKey); code != http.StatusOK {
		t.Fatalf("second pending message: %d", code)
	}
	if resp, body := e.do(t, http.MethodDelete, e.srv.URL+"/api/v1/messages/"+m.ID, http.Header{"Authorization": {"Bearer " + aliceKey}}); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE of a pending message: %d %s", resp.StatusCode, body)
	}
	if err := e.store.PutMessage(context.Background(), m); err != nil { // the relay's report
		t.Fatal(err)
	}
	for _, ref := range []string{m.ID, m.MessageID} {
		if code, body := get(ref, aliceKey); code != http.StatusNotFound {
			t.Errorf("erased pending message by %q: %d %s", ref, code, body)
		}
	}
}
