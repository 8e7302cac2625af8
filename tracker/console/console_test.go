package console

import (
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
)

// TestWithoutSessionRedirectsToLogin: every page, known or not, sends a
// stranger to the login with 303, and shows no data.
func TestWithoutSessionRedirectsToLogin(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	for _, p := range []string{"/ui/", "/ui/overview", "/ui/messages/Q1QUOTE", "/ui/messages/B1SECRET", "/ui/nothing/here", "/ui/?q=client"} {
		resp, body := get(t, c, tc.srv.URL+p)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
			t.Errorf("GET %s: %d %q, want 303 to /ui/login", p, resp.StatusCode, resp.Header.Get("Location"))
		}
		if strings.Contains(body, "kitchen") {
			t.Errorf("GET %s without a session shows a subject", p)
		}
	}
	if tc.store.lookups != 0 {
		t.Errorf("the store was read %d times without a session", tc.store.lookups)
	}
	// A forged cookie is no session.
	u, _ := url.Parse(tc.srv.URL + "/ui/")
	c.Jar.SetCookies(u, []*http.Cookie{{Name: CookieName, Value: "eyJhIjoiYWxpY2UifQ.AAAA", Path: "/ui"}})
	if resp, _ := get(t, c, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("forged cookie: %d, want 303", resp.StatusCode)
	}
}

// TestLogin: the API key and the SMTP password both log in; a wrong
// secret, an unknown account and an account with no credentials do not.
func TestLogin(t *testing.T) {
	tc := newTestConsole(t, nil)
	for _, secret := range []string{aliceKey, alicePassword} {
		c := tc.client(t)
		tc.login(t, c, "alice", secret)
		resp, body := get(t, c, tc.srv.URL+"/ui/")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("list after login: %d", resp.StatusCode)
		}
		mustContain(t, body, "Your quote for the kitchen", "Account <strong>alice</strong>")
	}
	for _, tt := range []struct{ account, secret string }{
		{"alice", "wrong"}, {"alice", ""}, {"alice", bobKey}, {"bob", aliceKey}, {"nobody", aliceKey},
		{"carol", ""}, {"carol", "anything"},
	} {
		c := tc.client(t)
		resp, body := post(t, c, tc.srv.URL+"/ui/login", url.Values{"account": {tt.account}, "secret": {tt.secret}})
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Errorf("login %s/%q: %d with %d cookies, want 401 and none", tt.account, tt.secret, resp.StatusCode, len(resp.Cookies()))
		}
		mustContain(t, body, "do not match")
		// Not to be locked out by the limit for the next cases.
		tc.h.limiter = nil
	}
}

// TestSessionCookieAttributes: HttpOnly, SameSite, scoped to /ui, expiring,
// Secure exactly when base_url is https.
func TestSessionCookieAttributes(t *testing.T) {
	for _, base := range []string{"http://127.0.0.1:8080", "https://t.example.com"} {
		tc := newTestConsole(t, func(c *Config) { c.BaseURL = base })
		resp, _ := post(t, tc.client(t), tc.srv.URL+"/ui/login", url.Values{"account": {"alice"}, "secret": {aliceKey}})
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == CookieName {
				ck = c
			}
		}
		if ck == nil {
			t.Fatalf("%s: no session cookie", base)
		}
		if !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/ui" || ck.MaxAge != int(DefaultSessionTTL/time.Second) {
			t.Errorf("%s: cookie %+v", base, ck)
		}
		if want := strings.HasPrefix(base, "https"); ck.Secure != want {
			t.Errorf("%s: Secure=%v, want %v", base, ck.Secure, want)
		}
	}
}

// TestLoginRateLimit: five failures from one address, then 429 with
// Retry-After, even for the right secret; other addresses are not
// limited; behind a trusted proxy the client is X-Forwarded-For's.
func TestLoginRateLimit(t *testing.T) {
	tc := newTestConsole(t, func(c *Config) { c.TrustedProxies = nil })
	c := tc.client(t)
	fail := func(c *http.Client, xff string) *http.Response {
		return failLogin(t, c, tc.srv.URL, xff)
	}
	for i := range loginBurst {
		if resp := fail(c, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp := fail(c, "")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after %d failures: %d, want 429", loginBurst, resp.StatusCode)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra <= 0 {
		t.Errorf("Retry-After %q, want a positive number of seconds", resp.Header.Get("Retry-After"))
	}
	// The right secret too: the limit is on the address, not the guess.
	resp, body := post(t, c, tc.srv.URL+"/ui/login", url.Values{"account": {"alice"}, "secret": {aliceKey}})
	if resp.StatusCode != http.StatusTooManyRequests || len(resp.Cookies()) != 0 {
		t.Errorf("right secret while limited: %d, want 429 and no cookie", resp.StatusCode)
	}
	mustContain(t, body, "Too many failed attempts", "Wait "+resp.Header.Get("Retry-After")+" seconds")
	// X-Forwarded-For from an untrusted peer changes nothing.
	if resp := fail(c, "203.0.113.9"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("spoofed X-Forwarded-For: %d, want 429", resp.StatusCode)
	}
	// After the refill interval, one more attempt.
	tc.clock.add(loginEvery)
	tc.login(t, c, "alice", aliceKey)

	// Behind a trusted proxy (the test's loopback), each client has its own
	// count.
	tp := newTestConsole(t, func(c *Config) { c.TrustedProxies = testLoopback })
	pc := tp.client(t)
	for range loginBurst {
		failLogin(t, pc, tp.srv.URL, "203.0.113.1")
	}
	if resp := failLogin(t, pc, tp.srv.URL, "203.0.113.1"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("client behind proxy: %d, want 429", resp.StatusCode)
	}
	if resp := failLogin(t, pc, tp.srv.URL, "203.0.113.2"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("another client behind the proxy: %d, want 401", resp.StatusCode)
	}
}

// TestCSRF: erase and logout need the session's CSRF token: none, a wrong
// one or another session's is a 403 that changes nothing.
func TestCSRF(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	other := tc.client(t)
	tc.login(t, other, "alice", alicePassword)
	_, page := get(t, other, tc.srv.URL+"/ui/messages/Q1QUOTE")
	otherToken := csrfOf(t, page)
	_, page = get(t, c, tc.srv.URL+"/ui/messages/Q1QUOTE")
	token := csrfOf(t, page)
	if token == otherToken {
		t.Fatal("two sessions share a CSRF token")
	}
	for _, form := range []url.Values{nil, {"csrf": {""}}, {"csrf": {"AAAA"}}, {"csrf": {otherToken}}} {
		for _, p := range []string{"/ui/messages/Q1QUOTE/erase", "/ui/logout"} {
			resp, _ := post(t, c, tc.srv.URL+p, form)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("POST %s with %v: %d, want 403", p, form, resp.StatusCode)
			}
		}
	}
	if !tc.store.has("Q1QUOTE") {
		t.Fatal("erased without a valid CSRF token")
	}
	if resp, _ := get(t, c, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("logged out without a valid CSRF token: %d", resp.StatusCode)
	}
	resp, _ := post(t, c, tc.srv.URL+"/ui/messages/Q1QUOTE/erase", url.Values{"csrf": {token}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/?erased=1" {
		t.Fatalf("erase: %d %q, want 303 to /ui/?erased=1", resp.StatusCode, resp.Header.Get("Location"))
	}
	if tc.store.has("Q1QUOTE") {
		t.Error("not erased")
	}
	_, body := get(t, c, tc.srv.URL+"/ui/?erased=1")
	mustContain(t, body, "was erased")
	// Without a session, a POST is refused too.
	resp, _ = post(t, tc.client(t), tc.srv.URL+"/ui/messages/Q2INVOICE/erase", url.Values{"csrf": {token}})
	if resp.StatusCode != http.StatusForbidden || !tc.store.has("Q2INVOICE") {
		t.Errorf("erase without a session: %d, want 403", resp.StatusCode)
	}
}

// TestCrossSitePostRefused: a form posted from another website is a 403
// that changes nothing, the login included (else another site could log
// a visitor in to the attacker's account); the browser's own forms and
// clients that are not browsers (curl) are served.
func TestCrossSitePostRefused(t *testing.T) {
	tc := newTestConsole(t, nil)
	postFrom := func(c *http.Client, p string, form url.Values, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, tc.srv.URL+p, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp, _ = readBody(t, resp)
		return resp
	}
	creds := url.Values{"account": {"alice"}, "secret": {aliceKey}}
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Origin": "http://attacker.example"},
	} {
		resp := postFrom(tc.client(t), "/ui/login", creds, hdr)
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("login posted with %v: %d with %d cookies, want 403 and none", hdr, resp.StatusCode, len(resp.Cookies()))
		}
		if resp.Header.Get("Content-Security-Policy") != ContentSecurityPolicy {
			t.Errorf("login posted with %v: no security headers", hdr)
		}
	}
	c := tc.client(t)
	if resp := postFrom(c, "/ui/login", creds, map[string]string{"Sec-Fetch-Site": "same-origin"}); resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login from the console's own form: %d, want 303 with the cookie", resp.StatusCode)
	}
	_, page := get(t, c, tc.srv.URL+"/ui/messages/Q1QUOTE")
	token := url.Values{"csrf": {csrfOf(t, page)}}
	for _, p := range []string{"/ui/messages/Q1QUOTE/erase", "/ui/logout"} {
		if resp := postFrom(c, p, token, map[string]string{"Sec-Fetch-Site": "cross-site"}); resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s from another site with the token: %d, want 403", p, resp.StatusCode)
		}
	}
	if !tc.store.has("Q1QUOTE") {
		t.Error("erased by a form from another site")
	}
	if resp, _ := get(t, c, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Errorf("logged out by a form from another site: %d", resp.StatusCode)
	}
	// Without the headers (curl, as the README's quickstart logs in).
	tc.login(t, tc.client(t), "alice", aliceKey)
	// From base_url's origin, though a proxy changed Host.
	if resp := postFrom(tc.client(t), "/ui/login", creds, map[string]string{"Origin": "http://127.0.0.1"}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("login from base_url's origin: %d, want 303", resp.StatusCode)
	}
}

// TestMethodNotAllowed: a method a page does not take is 405 with the
// methods it takes, with the security headers, and changes nothing; HEAD
// is GET without the body.
func TestMethodNotAllowed(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	for _, tt := range []struct{ method, path, allow string }{
		{http.MethodPut, "/ui/", "GET"},
		{http.MethodPost, "/ui/overview", "GET"},
		{http.MethodDelete, "/ui/messages/Q1QUOTE", "GET"},
		{http.MethodPut, "/ui/login", "POST"},
	} {
		req, _ := http.NewRequest(tt.method, tc.srv.URL+tt.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), tt.allow) {
			t.Errorf("%s %s: %d, Allow %q, want 405 allowing %s", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"), tt.allow)
		}
		if resp.Header.Get("Content-Security-Policy") != ContentSecurityPolicy {
			t.Errorf("%s %s: no security headers", tt.method, tt.path)
		}
	}
	if !tc.store.has("Q1QUOTE") {
		t.Error("erased by a request that is not the form's")
	}
	resp, err := c.Head(tc.srv.URL + "/ui/messages/Q1QUOTE")
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := readBody(t, resp); resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD: %d with %d bytes, want 200 and no body", resp.StatusCode, len(body))
	}
}

// TestOtherAccountNotFound: a session never sees nor erases another
// account's message: 404, as for one that does not exist.
func TestOtherAccountNotFound(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	for _, id := range []string{"B1SECRET", "NOSUCHID"} {
		resp, body := get(t, c, tc.srv.URL+"/ui/messages/"+id)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", id, resp.StatusCode)
		}
		if strings.Contains(body, "private offer") {
			t.Errorf("GET %s shows bob's subject", id)
		}
	}
	_, page := get(t, c, tc.srv.URL+"/ui/")
	if strings.Contains(page, "B1SECRET") || strings.Contains(page, "private offer") {
		t.Error("alice's list shows bob's message")
	}
	resp, _ := post(t, c, tc.srv.URL+"/ui/messages/B1SECRET/erase", url.Values{"csrf": {csrfOf(t, page)}})
	if resp.StatusCode != http.StatusNotFound || !tc.store.has("B1SECRET") {
		t.Errorf("erase bob's message: %d, want 404 and nothing erased", resp.StatusCode)
	}
	bc := tc.client(t)
	tc.login(t, bc, "bob", bobKey)
	if resp, body := get(t, bc, tc.srv.URL+"/ui/messages/B1SECRET"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "private offer") {
		t.Errorf("bob's own message: %d", resp.StatusCode)
	}
}

// TestSecurityHeaders: every response has the policy; pages with data are
// never cached.
func TestSecurityHeaders(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	check := func(p string, resp *http.Response, noStore bool) {
		t.Helper()
		h := resp.Header
		if got := h.Get("Content-Security-Policy"); got != "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'" {
			t.Errorf("%s: Content-Security-Policy %q", p, got)
		}
		if h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: Referrer-Policy %q, X-Content-Type-Options %q", p, h.Get("Referrer-Policy"), h.Get("X-Content-Type-Options"))
		}
		if noStore && h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q, want no-store", p, h.Get("Cache-Control"))
		}
	}
	resp, _ := get(t, c, tc.srv.URL+"/ui/")
	check("/ui/ (no session)", resp, false)
	resp, _ = get(t, c, tc.srv.URL+"/ui/login")
	check("/ui/login", resp, true)
	tc.login(t, c, "alice", aliceKey)
	for _, p := range []string{"/ui/", "/ui/overview", "/ui/messages/Q1QUOTE", "/ui/messages/B1SECRET", "/ui/static/console.css"} {
		resp, body := get(t, c, tc.srv.URL+p)
		check(p, resp, p != "/ui/static/console.css")
		if strings.Contains(body, "<script") || strings.Contains(body, " style=") {
			t.Errorf("%s has a script or an inline style", p)
		}
	}
}

// TestLogout ends the session: the cookie is cleared, and a copy of it is
// refused by the node afterwards.
func TestLogout(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	u, _ := url.Parse(tc.srv.URL + "/ui/")
	saved := c.Jar.Cookies(u)
	_, page := get(t, c, tc.srv.URL+"/ui/")
	resp, _ := post(t, c, tc.srv.URL+"/ui/logout", url.Values{"csrf": {csrfOf(t, page)}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("logout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if ck := resp.Cookies(); len(ck) != 1 || ck[0].MaxAge >= 0 {
		t.Errorf("logout cookies %+v, want the session cookie deleted", ck)
	}
	if resp, _ := get(t, c, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after logout: %d, want 303", resp.StatusCode)
	}
	replay := tc.client(t)
	replay.Jar.SetCookies(u, saved)
	if resp, _ := get(t, replay, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the logged-out cookie replayed: %d, want 303", resp.StatusCode)
	}
}

// TestSessionEnds: a session ends when it expires, and when its account's
// credentials change or the account goes.
func TestSessionEnds(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	tc.clock.add(DefaultSessionTTL - time.Second)
	if resp, _ := get(t, c, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("before expiry: %d", resp.StatusCode)
	}
	tc.clock.add(time.Second)
	if resp, _ := get(t, c, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("expired: %d, want 303", resp.StatusCode)
	}

	tc.login(t, c, "alice", aliceKey)
	accounts := testAccounts()
	tc.h.SetAccounts(accounts) // the same credentials: the session goes on
	if resp, _ := get(t, c, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after a reload with the same credentials: %d", resp.StatusCode)
	}
	accounts[0].APIKeySHA256 = keySum("a new key for alice 000")
	tc.h.SetAccounts(accounts)
	if resp, _ := get(t, c, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after alice's key changed: %d, want 303", resp.StatusCode)
	}
	tc.login(t, c, "alice", alicePassword)
	tc.h.SetAccounts(accounts[1:])
	if resp, _ := get(t, c, tc.srv.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after alice was removed: %d, want 303", resp.StatusCode)
	}
}

// TestSessionAcrossNodesAndRotation: another node with the same secrets
// accepts the session; after a rotation that keeps the old secret among
// the previous ones it still does, and not once the old secret is gone.
// The session key is derived from the secret, never the secret itself.
func TestSessionAcrossNodesAndRotation(t *testing.T) {
	a := newTestConsole(t, nil)
	b := newTestConsole(t, nil)
	c := a.client(t)
	a.login(t, c, "alice", aliceKey)
	ua, _ := url.Parse(a.srv.URL + "/ui/")
	ub, _ := url.Parse(b.srv.URL + "/ui/")
	c.Jar.SetCookies(ub, c.Jar.Cookies(ua))
	if resp, _ := get(t, c, b.srv.URL+"/ui/messages/Q1QUOTE"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the other node: %d, want 200", resp.StatusCode)
	}
	_, page := get(t, c, a.srv.URL+"/ui/messages/Q2INVOICE")
	if err := b.h.SetSecrets([][]byte{secretA, secretB}); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, c, b.srv.URL+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after rotation with the old secret kept: %d, want 200", resp.StatusCode)
	}
	// A form made before the rotation still posts.
	if resp, _ := post(t, c, b.srv.URL+"/ui/messages/Q2INVOICE/erase", url.Values{"csrf": {csrfOf(t, page)}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("erase with a CSRF token from before the rotation: %d, want 303", resp.StatusCode)
	}
	if err := b.h.SetSecrets([][]byte{secretB}); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, c, b.srv.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after the old secret was dropped: %d, want 303", resp.StatusCode)
	}
	// A cookie signed with the tracking secret itself is refused.
	s := &session{Account: "alice", ID: "x", Expires: a.clock.Now().Add(time.Hour).Unix(), Cred: loadAccounts(testAccounts())["alice"].cred}
	forged := s.encode(consoleKey{session: secretA})
	if decodeSession(forged, *a.h.keys.Load(), a.clock.Now()) != nil {
		t.Error("a cookie signed with the raw tracking secret is accepted")
	}
	if decodeSession(s.encode((*a.h.keys.Load())[0]), *a.h.keys.Load(), a.clock.Now()) == nil {
		t.Error("a well-signed cookie is refused")
	}
}

// TestHostileTextIsText: a subject, an address, a user agent and a URL
// made of markup are shown as text on every page.
func TestHostileTextIsText(t *testing.T) {
	tc := newTestConsole(t, nil)
	evil := `<script>alert(1)</script>"><img src=x onerror=alert(2)>`
	tc.store.put(store.Message{ID: "EVIL1", Account: "alice", From: evil + "@example.com", Subject: evil, AcceptedAt: t0.Add(time.Hour),
		Recipients: []store.Recipient{{Address: `"><img onerror=alert(3)>@example.net`, Tracked: true}}},
		[]string{`javascript:alert(4)//"><img onerror=alert(5)>`}, nil,
		store.Event{Type: store.EventOpen, At: t0.Add(2 * time.Hour), Link: -1, IP: "198.51.100.1", UserAgent: evil, Client: evil, Class: "human", Reasons: []string{evil}})
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	for _, p := range []string{"/ui/", "/ui/messages/EVIL1", "/ui/?q=" + url.QueryEscape(evil)} {
		_, body := get(t, c, tc.srv.URL+p)
		low := strings.ToLower(body)
		if strings.Contains(low, "<script") || strings.Contains(low, "<img") {
			t.Errorf("%s has markup from the data", p)
		}
		mustContain(t, body, html.EscapeString("<script>alert(1)</script>"))
	}
}

// TestStoreFailure: a store that fails shows a page that says so, 503.
func TestStoreFailure(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	tc.store.lookupErr = errors.New("disk on fire")
	for _, p := range []string{"/ui/", "/ui/messages/Q1QUOTE"} {
		resp, body := get(t, c, tc.srv.URL+p)
		if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(body, "disk on fire") {
			t.Errorf("%s: %d, want 503 without the error's text", p, resp.StatusCode)
		}
	}
}

// failLogin posts a wrong secret for alice to the console at base, with
// X-Forwarded-For xff when not "".
func failLogin(t *testing.T, c *http.Client, base, xff string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/ui/login", strings.NewReader(url.Values{"account": {"alice"}, "secret": {"nope"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ = readBody(t, resp)
	return resp
}

// The logged-out sessions a node remembers are bounded: expired ones are
// dropped, and past maxRevocations the one closest to expiring goes.

func TestRevocationsBounded(t *testing.T) {
	var r revocations
	now := time.Unix(1_700_000_000, 0)
	r.add("expiring", now.Unix()+1, now)
	for i := range maxRevocations + 10 {
		r.add(fmt.Sprintf("s%d", i), now.Unix()+3600+int64(i), now)
	}
	if n := len(r.ids); n != maxRevocations {
		t.Errorf("%d ids kept, want %d", n, maxRevocations)
	}
	if r.revoked("expiring") || r.revoked("s0") {
		t.Error("the ids closest to expiring are still kept")
	}
	if !r.revoked(fmt.Sprintf("s%d", maxRevocations+9)) || !r.revoked("s100") {
		t.Error("a recent logout is forgotten")
	}
	// A minute later, the expired ones go.
	later := now.Add(2 * time.Hour)
	r.add("new", later.Unix()+3600, later)
	if r.revoked("s10") || !r.revoked("new") {
		t.Error("expired ids kept, or the new one missing")
	}
}
