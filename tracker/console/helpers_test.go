package console

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Test credentials.
const (
	aliceKey      = "alice-api-key-0123456789"
	alicePassword = "correct horse battery staple"
	bobKey        = "bob-api-key-9876543210"
)

var (
	secretA = []byte("0123456789abcdef0123456789abcdef-A")
	secretB = []byte("0123456789abcdef0123456789abcdef-B")
)

func keySum(k string) string {
	s := sha256.Sum256([]byte(k))
	return hex.EncodeToString(s[:])
}

var (
	aliceHashOnce sync.Once
	aliceHash     string
)

// testAccounts: alice has an API key and a password, bob a key, carol
// neither.
func testAccounts() []Account {
	aliceHashOnce.Do(func() {
		h, err := bcrypt.GenerateFromPassword([]byte(alicePassword), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		aliceHash = string(h)
	})
	return []Account{
		{Name: "alice", APIKeySHA256: keySum(aliceKey), PasswordHash: aliceHash},
		{Name: "bob", APIKeySHA256: keySum(bobKey)},
		{Name: "carol"},
	}
}

// clock is a settable time for Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// testConsole is a console over a memStore with the fixture, served on
// 127.0.0.1.
type testConsole struct {
	h     *Handler
	store *memStore
	srv   *httptest.Server
	clock *clock
}

func newTestConsole(t testing.TB, mod func(*Config)) *testConsole {
	t.Helper()
	st := newMemStore()
	fixture(st)
	clk := &clock{now: t0.Add(30 * time.Hour)}
	cfg := Config{BaseURL: "http://127.0.0.1", Accounts: testAccounts(), Secrets: [][]byte{secretA}, Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	srv := newLoopbackServer(t, h)
	return &testConsole{h: h, store: st, srv: srv, clock: clk}
}

// newLoopbackServer serves h on 127.0.0.1; a port that cannot be bound
// fails the test.
func newLoopbackServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.1: %v", err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// client returns an HTTP client with a cookie jar that does not follow
// redirects.
func (tc *testConsole) client(t testing.TB) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches path and returns the response with its body read.
func get(t testing.TB, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	return readBody(t, resp)
}

func post(t testing.TB, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	return readBody(t, resp)
}

func readBody(t testing.TB, resp *http.Response) (*http.Response, string) {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// login logs c in as account with secret and fails the test unless it
// worked.
func (tc *testConsole) login(t testing.TB, c *http.Client, account, secret string) {
	t.Helper()
	resp, body := post(t, c, tc.srv.URL+"/ui/login", url.Values{"account": {account}, "secret": {secret}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("login as %s: %d %s, want 303 to /ui/\n%s", account, resp.StatusCode, resp.Header.Get("Location"), body)
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf returns the CSRF token of the forms on a page.
func csrfOf(t testing.TB, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf token on the page:\n%s", body)
	}
	return m[1]
}

func mustContain(t testing.TB, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("page lacks %q", w)
		}
	}
}

// testLoopback trusts the test client's address as a proxy.
var testLoopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
