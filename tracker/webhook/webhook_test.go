package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
)

// testOutbox is a bbolt store's outbox that a test can hurry (wake) and
// make fail as it removes delivered entries (fault).
type testOutbox struct {
	*bolt.Store
	wake  chan struct{}
	fault func()
}

func (o *testOutbox) OutboxAdded() <-chan struct{} { return o.wake }

func (o *testOutbox) OutboxDone(items []store.OutboxItem) error {
	if o.fault != nil {
		o.fault()
	}
	return o.Store.OutboxDone(items)
}

// hurry asks the sender for a round now.
func (o *testOutbox) hurry() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// len counts the entries waiting in the outbox.
func (o *testOutbox) len(t testing.TB) int {
	t.Helper()
	items, err := o.OutboxDue(time.Now().Add(100*365*24*time.Hour), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return len(items)
}

// openOutbox opens the bbolt store at path with alice's webhook.
func openOutbox(t testing.TB, path string) *testOutbox {
	t.Helper()
	s, err := bolt.Open(path, bolt.Options{WebhookAccounts: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &testOutbox{Store: s, wake: make(chan struct{}, 1)}
}

// seed records alice's message with an open and a click of its copy,
// which its feed and so the outbox hold.
func seed(t testing.TB, s *bolt.Store) {
	t.Helper()
	ctx := context.Background()
	m := store.Message{ID: "Q1A2B3", Account: "alice", From: "alice@example.com", AcceptedAt: time.Now(), Mode: "all",
		Recipients: []store.Recipient{{Address: "bob@example.net", Tracked: true}}}
	if err := s.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, e := range []store.Event{
		{Type: store.EventOpen, Message: m.ID, Link: -1, At: time.Now(), Class: classify.Human},
		{Type: store.EventClick, Message: m.ID, Link: 0, URL: "https://example.com/a", At: time.Now(), Class: classify.Human},
	} {
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
}

// receiver is a webhook endpoint on loopback that refuses the first fail
// requests, then records what it gets.
type receiver struct {
	mu     sync.Mutex
	fail   int
	tries  int
	secret []byte
	got    map[string]store.FeedEntry
	seq    []store.FeedEntry // what it got, in order
	errs   []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.tries++
	if rc.tries <= rc.fail {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	sig := r.Header.Get(SignatureHeader)
	ts, mac, ok := strings.Cut(sig, ",v1=")
	ts, ok2 := strings.CutPrefix(ts, "t=")
	m := hmac.New(sha256.New, rc.secret)
	m.Write([]byte(ts + "." + string(body)))
	if !ok || !ok2 || !hmac.Equal([]byte(mac), []byte(hex.EncodeToString(m.Sum(nil)))) {
		rc.errs = append(rc.errs, "bad signature "+sig)
	}
	var fe store.FeedEntry
	if err := json.Unmarshal(body, &fe); err != nil || fe.ID == "" {
		rc.errs = append(rc.errs, "bad body "+string(body))
	}
	if r.Header.Get("Trackrelay-Event-Id") != fe.ID {
		rc.errs = append(rc.errs, "event id header")
	}
	rc.got[fe.ID] = fe
	rc.seq = append(rc.seq, fe)
	w.WriteHeader(http.StatusNoContent)
}

func TestWebhooks_retryUntilDelivered(t *testing.T) {
	rc := &receiver{fail: 3, secret: []byte("whsec-0123456789abcdef"), got: map[string]store.FeedEntry{}}
	srv := httptest.NewServer(rc) // 127.0.0.1
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "t.db")
	s := openOutbox(t, path)
	seed(t, s.Store)
	if err := s.SetDelivery(context.Background(), "Q1A2B3", 0, store.Delivery{Status: delivery.Delivered, UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// Close before anything is sent: the outbox is durable.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openOutbox(t, path)
	metrics := NewMetrics(nil)
	ws := Start(s, Options{
		Hooks:      []Hook{{Account: "alice", URL: srv.URL + "/hook", Secret: rc.secret}},
		BackoffMin: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Metrics: metrics,
	})
	defer ws.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rc.mu.Lock()
		n := len(rc.got)
		rc.mu.Unlock()
		if n == 3 && s.len(t) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 delivered, outbox %d", n, s.len(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.errs) > 0 {
		t.Errorf("receiver: %v", rc.errs)
	}
	var types []string
	for _, fe := range rc.got {
		types = append(types, fe.Type)
	}
	slices.Sort(types)
	if !slices.Equal(types, []string{"click", "delivery", "open"}) {
		t.Errorf("delivered %v", types)
	}
	if rc.tries != 6 {
		t.Errorf("%d tries, want 3 failures and 3 deliveries", rc.tries)
	}
	if f, ok := testutil.ToFloat64(metrics.attempts.WithLabelValues("failure")), testutil.ToFloat64(metrics.attempts.WithLabelValues("success")); f != 3 || ok != 3 {
		t.Errorf("attempts: %v failures, %v successes", f, ok)
	}
}

func TestWebhooks_expire(t *testing.T) {
	rc := &receiver{fail: 1 << 30, secret: []byte("s"), got: map[string]store.FeedEntry{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := openOutbox(t, filepath.Join(t.TempDir(), "t.db"))
	seed(t, s.Store)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ws := Start(s, Options{Hooks: []Hook{{Account: "alice", URL: srv.URL, Secret: rc.secret}},
		BackoffMin: time.Millisecond, BackoffMax: time.Millisecond, Now: clock})
	defer ws.Close()
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	now = now.Add(DefaultMaxAge + time.Minute)
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for s.len(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("entry not abandoned after 24h")
		}
		s.hurry()
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSign(t *testing.T) {
	// t=1700000000, body {"id":"x"}, secret "secret":
	// printf '1700000000.{"id":"x"}' | openssl dgst -sha256 -hmac secret
	got := Sign([]byte("secret"), time.Unix(1700000000, 0), []byte(`{"id":"x"}`))
	m := hmac.New(sha256.New, []byte("secret"))
	m.Write([]byte(`1700000000.{"id":"x"}`))
	if want := "t=1700000000,v1=" + hex.EncodeToString(m.Sum(nil)); got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

// injectPanic makes the job boundaries of component panic for item, the
// first times times (always, if times < 0), until the test ends. It
// returns how many panics it caused.
func injectPanic(t *testing.T, component, item string, times int32) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	t.Cleanup(guard.Inject(func(c, it string) bool {
		if c != component || it != item {
			return false
		}
		if times >= 0 && n.Load() >= times {
			return false
		}
		n.Add(1)
		return true
	}))
	return &n
}

func panicsOf(component string) float64 {
	return testutil.ToFloat64(guard.Panics.WithLabelValues(component))
}

// waitFor polls cond until it holds, failing the test after a generous
// while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// webhookEnv is a store with alice's webhook, an open and a click in its
// outbox, and a receiver on loopback.
func webhookEnv(t *testing.T) (*testOutbox, *receiver, *httptest.Server, []store.FeedEntry) {
	t.Helper()
	rc := &receiver{secret: []byte("whsec-0123456789abcdef"), got: map[string]store.FeedEntry{}}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	s := openOutbox(t, filepath.Join(t.TempDir(), "t.db"))
	seed(t, s.Store)
	p, err := s.Feed(context.Background(), "alice", "", store.MaxFeedLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 2 || s.len(t) != 2 {
		t.Fatalf("feed %+v, outbox %d", p.Events, s.len(t))
	}
	return s, rc, srv, p.Events
}

func (rc *receiver) received() map[string]store.FeedEntry {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string]store.FeedEntry, len(rc.got))
	for k, v := range rc.got {
		out[k] = v
	}
	return out
}

// A webhook send that panics is a failed attempt: counted as a panic and
// a failure, retried with backoff, and delivered when it goes through;
// the other event is sent meanwhile.
func TestPanic_webhookSendIsAFailedAttempt(t *testing.T) {
	s, rc, srv, entries := webhookEnv(t)
	open := entries[0].ID
	before := panicsOf(guard.Webhook)
	injectPanic(t, guard.Webhook, open, 1)
	metrics := NewMetrics(nil)
	ws := Start(s, Options{Hooks: []Hook{{Account: "alice", URL: srv.URL, Secret: rc.secret}},
		BackoffMin: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Metrics: metrics})
	defer ws.Close()
	waitFor(t, "both entries delivered", func() bool { return len(rc.received()) == 2 && s.len(t) == 0 })
	if got := panicsOf(guard.Webhook) - before; got != 1 {
		t.Errorf("webhook panics counted: %v, want 1", got)
	}
	failures := testutil.ToFloat64(metrics.attempts.WithLabelValues("failure"))
	successes := testutil.ToFloat64(metrics.attempts.WithLabelValues("success"))
	if failures != 1 || successes != 2 {
		t.Errorf("attempts: %v failures, %v successes; want the panic as 1 failure", failures, successes)
	}
	if _, ok := rc.received()[open]; !ok {
		t.Errorf("the entry whose send panicked was not retried")
	}
}

// A send that panics every time is given up after MaxAge, like any
// failure, and the sender goes on.
func TestPanic_webhookSendGivenUp(t *testing.T) {
	s, rc, srv, entries := webhookEnv(t)
	open := entries[0].ID
	before := panicsOf(guard.Webhook)
	injected := injectPanic(t, guard.Webhook, open, -1)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	metrics := NewMetrics(nil)
	ws := Start(s, Options{Hooks: []Hook{{Account: "alice", URL: srv.URL, Secret: rc.secret}},
		BackoffMin: time.Millisecond, BackoffMax: time.Millisecond, Now: clock, Metrics: metrics})
	defer ws.Close()
	waitFor(t, "the click delivered and the open tried", func() bool {
		return len(rc.received()) == 1 && injected.Load() >= 1
	})
	mu.Lock()
	now = now.Add(DefaultMaxAge + time.Minute)
	mu.Unlock()
	waitFor(t, "the open given up", func() bool {
		s.hurry()
		return s.len(t) == 0
	})
	if got := testutil.ToFloat64(metrics.expired); got != 1 {
		t.Errorf("expired_total = %v, want 1", got)
	}
	if _, ok := rc.received()[open]; ok {
		t.Error("the entry whose send panics was delivered")
	}
	panics := panicsOf(guard.Webhook) - before
	if failures := testutil.ToFloat64(metrics.attempts.WithLabelValues("failure")); panics != float64(injected.Load()) || failures != panics {
		t.Errorf("%v panics counted, %d injected, %v failed attempts", panics, injected.Load(), failures)
	}
}

// A panic in a round outside any one send (here while removing the
// delivered entries) ends that round only: the sender's next round sends
// the entries again (at least once) and removes them.
func TestPanic_webhookRoundGoesOn(t *testing.T) {
	s, rc, srv, _ := webhookEnv(t)
	before := panicsOf(guard.Webhook)
	var once atomic.Bool
	s.fault = func() {
		if once.CompareAndSwap(false, true) {
			panic("outbox transaction")
		}
	}
	ws := Start(s, Options{Hooks: []Hook{{Account: "alice", URL: srv.URL, Secret: rc.secret}}})
	defer ws.Close()
	waitFor(t, "the outbox emptied", func() bool { return s.len(t) == 0 })
	if got := panicsOf(guard.Webhook) - before; got != 1 {
		t.Errorf("webhook panics counted: %v, want 1", got)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.got) != 2 || rc.tries != 4 {
		t.Errorf("%d entries in %d tries, want 2 sent twice", len(rc.got), rc.tries)
	}
}
