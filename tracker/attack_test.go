package tracker

// Attack tests: each one tries an attack against the tracker served on
// loopback and asserts the exact outcome. SECURITY.md lists them.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// rawGet sends one request exactly as written (no client-side cleaning
// of the path) and returns the response with its body.
func rawGet(t *testing.T, srvURL, method, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(srvURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n", method, path)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %.60s: %v", method, path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// tokenEncoding and tagLen are the token format's (package token), to
// forge variants of a token's bytes.
var tokenEncoding = base64.RawURLEncoding.Strict()

const tagLen = 16

// decodeRaw gives the bytes of a token, to forge variants.
func decodeRaw(t *testing.T, tok string) []byte {
	t.Helper()
	b, err := tokenEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAttack_forgedTokens(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	dest := "https://example.com/quote?id=1"
	open := e.keys.OpenToken(e.msg.ID, 0)
	click := e.keys.ClickToken(e.msg.ID, 0, 0, dest)
	otherMsg := e.keys.ClickToken("Q9Z9Z9", 0, 0, "https://evil.example/")
	otherRcpt := e.keys.ClickToken(e.msg.ID, 1, 0, dest)
	sameID, _ := token.NewKeyring(token.Key{ID: 1, Secret: testSecret('z')})
	unknownID, _ := token.NewKeyring(token.Key{ID: 77, Secret: testSecret('a')})

	raw := decodeRaw(t, click)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		return tokenEncoding.EncodeToString(b)
	}
	// Splice: one message's body under another's tag, and the other way round.
	rawOther := decodeRaw(t, otherMsg)
	splice := func(body, tag []byte) string {
		return tokenEncoding.EncodeToString(append(append([]byte(nil), body[:len(body)-tagLen]...), tag[len(tag)-tagLen:]...))
	}
	rawRcpt := decodeRaw(t, otherRcpt)
	// A destination swapped in with the length byte fixed up, old tag kept.
	swapped := func() string {
		evil := "https://evil.example/?"
		body := raw[:len(raw)-tagLen]
		i := len(body) - len(dest)
		b := append([]byte(nil), body[:i-1]...)
		b = append(b, byte(len(evil)))
		b = append(b, evil...)
		return tokenEncoding.EncodeToString(append(b, raw[len(raw)-tagLen:]...))
	}()

	cases := map[string]string{
		"truncated by 1":          "/c/" + click[:len(click)-1],
		"truncated by 4":          "/c/" + click[:len(click)-4],
		"truncated to half":       "/c/" + click[:len(click)/2],
		"tag removed":             "/c/" + tokenEncoding.EncodeToString(raw[:len(raw)-tagLen]),
		"tag shortened to 64 bit": "/c/" + tokenEncoding.EncodeToString(raw[:len(raw)-8]),
		"kind byte flipped":       "/c/" + flip(0),
		"key id flipped":          "/c/" + flip(1),
		"message flipped":         "/c/" + flip(3),
		"destination flipped":     "/c/" + flip(len(raw)-tagLen-2),
		"tag flipped":             "/c/" + flip(len(raw)-1),
		"destination swapped":     "/c/" + swapped,
		"cross-message splice":    "/c/" + splice(raw, rawOther),
		"cross-message splice 2":  "/c/" + splice(rawOther, raw),
		"cross-recipient splice":  "/c/" + splice(raw, rawRcpt),
		"wrong key, same id":      "/c/" + sameID.ClickToken(e.msg.ID, 0, 0, "https://evil.example/"),
		"unknown key id":          "/c/" + unknownID.ClickToken(e.msg.ID, 0, 0, "https://evil.example/"),
		"open token as click":     "/c/" + open,
		"click token as open":     "/o/" + click + ".gif",
		"padding added":           "/c/" + click + "==",
		"std base64 alphabet":     "/c/" + strings.NewReplacer("-", "+", "_", "/").Replace(click) + "+/",
		"double extension":        "/o/" + open + ".gif.gif",
		"trailing path":           "/c/" + click + "/https://evil.example/",
		"CRLF injection":          "/c/" + click + "%0d%0aLocation:%20https://evil.example/",
		"NUL byte":                "/c/" + click + "%00",
		"oversized (100 KB)":      "/c/" + strings.Repeat("A", 100<<10),
		"just over token.MaxLen":  "/o/" + strings.Repeat("A", token.MaxLen+1) + ".gif",
		"empty":                   "/c/",
		"empty with extension":    "/o/.gif",
	}
	for what, path := range cases {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, _ := rawGet(t, e.srv.URL, method, path, nil)
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
				t.Errorf("%s %s: %d, Location %q", method, what, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	}
	// A 1 MB path fits net/http's default header limit and is refused by
	// its length alone; past the limit the HTTP server refuses it itself.
	resp, _ := rawGet(t, e.srv.URL, http.MethodGet, "/c/"+strings.Repeat("A", 1<<20), nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("1 MB path: %d", resp.StatusCode)
	}
	resp, _ = rawGet(t, e.srv.URL, http.MethodGet, "/c/"+strings.Repeat("A", 2<<20), nil)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("2 MB path: %d", resp.StatusCode)
	}
	if n := len(e.view(t).Events); n != 0 {
		t.Errorf("forged tokens recorded %d events", n)
	}
	// The genuine token still works: the refusals are not an artefact.
	if resp, _ := rawGet(t, e.srv.URL, http.MethodGet, "/c/"+click, nil); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != dest {
		t.Errorf("genuine click: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// Only what was signed is a redirect target, exactly, and only http(s).
func TestAttack_noOpenRedirect(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	dest := "https://example.com/a?b=1"
	click := strings.TrimPrefix(e.mint.ClickURL(0, dest), e.srv.URL)
	for _, path := range []string{
		click + "?url=https://evil.example/",
		click + "?next=//evil.example&redirect=https://evil.example/",
	} {
		resp, _ := rawGet(t, e.srv.URL, http.MethodGet, path, nil)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != dest {
			t.Errorf("%s: %d to %q", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// A raw '#' in the request target (browsers never send one) is part of
	// the path, so the token no longer verifies.
	if resp, _ := rawGet(t, e.srv.URL, http.MethodGet, click+"#https://evil.example/", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("raw fragment: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, bad := range []string{
		"javascript:alert(document.domain)", "JaVaScRiPt:alert(1)", " javascript:alert(1)",
		"data:text/html;base64,PHNjcmlwdD4=", "vbscript:msgbox", "file:///etc/passwd", "ftp://evil.example/",
		"//evil.example/", "/\\evil.example/", "\\\\evil.example", "http:/evil.example", "http:evil.example",
		"https:///evil.example", "http://", "https://?x", "https://#x", "mailto:x@evil.example", "",
	} {
		resp, _ := e.do(t, http.MethodGet, e.mint.ClickURL(0, bad), nil)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
			t.Errorf("signed %q: %d to %q", bad, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// Control characters in a signed destination never split the header.
	resp, _ := e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/\r\nSet-Cookie: session=evil"), nil)
	if resp.Header.Get("Set-Cookie") != "" || strings.ContainsAny(resp.Header.Get("Location"), "\r\n ") {
		t.Errorf("header injection through the destination: %v", resp.Header)
	}
}

func TestAttack_methods(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	open := strings.TrimPrefix(e.mint.OpenURL(), e.srv.URL)
	click := strings.TrimPrefix(e.mint.ClickURL(0, "https://example.com/"), e.srv.URL)
	for _, path := range []string{open, click} {
		for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"} {
			resp, _ := rawGet(t, e.srv.URL, m, path, map[string]string{"Content-Length": "0"})
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" || resp.Header.Get("Location") != "" {
				t.Errorf("%s %.20s: %d Allow %q", m, path, resp.StatusCode, resp.Header.Get("Allow"))
			}
		}
	}
	if n := len(e.view(t).Events); n != 0 {
		t.Errorf("refused methods recorded %d events", n)
	}
	if resp, body := rawGet(t, e.srv.URL, "HEAD", open, nil); resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD pixel: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := rawGet(t, e.srv.URL, "HEAD", click, nil); resp.StatusCode != http.StatusFound {
		t.Errorf("HEAD click: %d", resp.StatusCode)
	}
	for _, m := range []string{"POST", "PUT", "PATCH"} {
		resp, _ := rawGet(t, e.srv.URL, m, "/api/v1/messages/"+e.msg.ID, map[string]string{"Authorization": "Bearer " + aliceKey, "Content-Length": "0"})
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s message: %d", m, resp.StatusCode)
		}
		resp, _ = rawGet(t, e.srv.URL, m, "/api/v1/events", map[string]string{"Authorization": "Bearer " + aliceKey, "Content-Length": "0"})
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s events: %d", m, resp.StatusCode)
		}
	}
}

func TestAttack_securityHeaders(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	check := func(what string, resp *http.Response, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if got := resp.Header.Get(k); !strings.Contains(got, v) {
				t.Errorf("%s: %s is %q, want %q", what, k, got, v)
			}
		}
		for _, k := range []string{"Server", "X-Powered-By", "Access-Control-Allow-Origin", "Set-Cookie"} {
			if v := resp.Header.Get(k); v != "" {
				t.Errorf("%s: %s: %q", what, k, v)
			}
		}
	}
	origin := map[string]string{"Origin": "https://evil.example"}
	resp, _ := rawGet(t, e.srv.URL, "GET", strings.TrimPrefix(e.mint.OpenURL(), e.srv.URL), origin)
	check("pixel", resp, map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Type": "image/gif"})
	resp, _ = rawGet(t, e.srv.URL, "GET", strings.TrimPrefix(e.mint.ClickURL(0, "https://example.com/"), e.srv.URL), origin)
	check("redirect", resp, map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})
	resp, _ = rawGet(t, e.srv.URL, "GET", "/c/forged", origin)
	check("bad token", resp, map[string]string{"X-Content-Type-Options": "nosniff"})
	auth := map[string]string{"Authorization": "Bearer " + aliceKey, "Origin": "https://evil.example"}
	resp, _ = rawGet(t, e.srv.URL, "GET", "/api/v1/messages/"+e.msg.ID, auth)
	check("API message", resp, map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Type": "application/json"})
	resp, _ = rawGet(t, e.srv.URL, "GET", "/api/v1/events", auth)
	check("API events", resp, map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Type": "application/json"})
	resp, _ = rawGet(t, e.srv.URL, "GET", "/api/v1/messages/"+e.msg.ID, origin)
	check("API 401", resp, map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
}

// No CORS: a browser page elsewhere cannot read the API, and a preflight
// is not granted.
func TestAttack_noCORS(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	for _, path := range []string{"/api/v1/messages/" + e.msg.ID, "/api/v1/events"} {
		resp, _ := rawGet(t, e.srv.URL, "OPTIONS", path, map[string]string{
			"Origin": "https://evil.example", "Access-Control-Request-Method": "GET",
			"Access-Control-Request-Headers": "authorization",
		})
		if resp.StatusCode < 400 {
			t.Errorf("preflight %s: %d", path, resp.StatusCode)
		}
		for k := range resp.Header {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("preflight %s: %s: %s", path, k, resp.Header.Get(k))
			}
		}
		resp, _ = rawGet(t, e.srv.URL, "GET", path, map[string]string{"Origin": "https://evil.example", "Authorization": "Bearer " + aliceKey})
		for k := range resp.Header {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("GET %s: %s: %s", path, k, resp.Header.Get(k))
			}
		}
	}
}

func TestAttack_pathTraversal(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	auth := map[string]string{"Authorization": "Bearer " + aliceKey}
	id := e.msg.ID
	for _, path := range []string{
		"/o/../api/v1/messages/" + id,
		"/c/../api/v1/messages/" + id,
		"/o/..%2fapi%2fv1%2fmessages%2f" + id,
		"/o/%2e%2e/api/v1/messages/" + id,
		"/o/%2e%2e%2f%2e%2e%2fapi/v1/messages/" + id,
		"/healthz/../api/v1/messages/" + id,
		"//api/v1/messages/" + id,
		"/API/v1/messages/" + id,
		"/api/v1/messages/../messages/" + id,
		"/api/v1/messages/" + id + "/..",
		"/api/v1/messages/%2e%2e%2f" + id,
		"/api/v1/messages/..%2f..%2f..%2fetc%2fpasswd",
		"/api/v1/../v1/messages/" + id,
		"/api/v1/events/../messages/" + id,
		"/o/../../../../etc/passwd",
		"/c/..%5c..%5cwindows%5cwin.ini",
	} {
		resp, body := rawGet(t, e.srv.URL, "GET", path, auth)
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
		if strings.Contains(body, e.msg.From) || strings.Contains(body, "root:") {
			t.Errorf("%s leaked: %.200s", path, body)
		}
	}
}

// Requests are bounded: headers by the HTTP server, bodies are never read.
func TestAttack_requestSize(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	open := strings.TrimPrefix(e.mint.OpenURL(), e.srv.URL)
	hdr := map[string]string{}
	for i := range 200 {
		hdr[fmt.Sprintf("X-Junk-%d", i)] = strings.Repeat("j", 8<<10)
	}
	resp, _ := rawGet(t, e.srv.URL, "GET", open, hdr)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("1.6 MB of headers: %d", resp.StatusCode)
	}
	// A body announced but never sent does not hold the answer back: the
	// client sends none of it, so an answer at all (rawGet gives up after
	// 10 s; the test server has no read timeout) shows that nothing waited
	// for it.
	resp, _ = rawGet(t, e.srv.URL, "GET", open, map[string]string{"Content-Length": "1073741824"})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET with a 1 GiB body announced: %d", resp.StatusCode)
	}
	resp, _ = rawGet(t, e.srv.URL, "DELETE", "/api/v1/messages/"+e.msg.ID, map[string]string{"Content-Length": "1073741824"})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("DELETE with a 1 GiB body announced: %d", resp.StatusCode)
	}
	// A long user agent is cut before it is stored.
	e.do(t, http.MethodGet, e.mint.OpenURL(), http.Header{"User-Agent": {strings.Repeat("U", 32<<10)}})
	longest := 0
	for _, ev := range e.view(t).Events {
		longest = max(longest, len(ev.UserAgent))
	}
	if longest == 0 || longest > maxUserAgent {
		t.Errorf("a 32 KiB user agent was kept as %d bytes", longest)
	}
}

// A script hammering one pixel cannot grow the store without bound.
func TestAttack_hitFloodBounded(t *testing.T) {
	store := testStore(t, bolt.Options{MaxEventsPerRecipient: 10})
	e := newTestEnv(t, store, nil)
	for range 60 {
		e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	}
	v := e.view(t)
	if len(v.Events) > 10 {
		t.Errorf("%d events kept in detail; the cap is 10", len(v.Events))
	}
}

// ---- API ----

type apiClient struct {
	t   *testing.T
	e   *testEnv
	key string
}

func (a apiClient) do(method, path string) (*http.Response, string) {
	a.t.Helper()
	hdr := map[string]string{}
	if a.key != "" {
		hdr["Authorization"] = "Bearer " + a.key
	}
	return rawGet(a.t, a.e.srv.URL, method, path, hdr)
}

func TestAttack_apiIsolation(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	ctx := context.Background()
	bobMsg := testMessage()
	bobMsg.ID, bobMsg.MessageID, bobMsg.Account = "QB0B00", "bob-1@mail.example.com", "bob"
	if err := e.store.PutMessage(ctx, bobMsg); err != nil {
		t.Fatal(err)
	}
	// Hits on both messages, so that both feeds have something.
	e.do(t, http.MethodGet, e.mint.OpenURL(), nil)
	e.do(t, http.MethodGet, e.keys.Minter(e.srv.URL, bobMsg.ID, 0).OpenURL(), nil)
	alice := apiClient{t, e, aliceKey}
	bob := apiClient{t, e, bobKey}

	// GET another account's message, by queue id or Message-ID: 404, the
	// same answer as a message that does not exist.
	_, missing := bob.do("GET", "/api/v1/messages/NOSUCH")
	for _, ref := range []string{e.msg.ID, "%3C" + strings.ReplaceAll(e.msg.MessageID, "/", "%2F") + "%3E", strings.ReplaceAll(e.msg.MessageID, "/", "%2F")} {
		resp, body := bob.do("GET", "/api/v1/messages/"+ref)
		if resp.StatusCode != http.StatusNotFound || body != missing {
			t.Errorf("bob GET alice's %s: %d %q", ref, resp.StatusCode, body)
		}
	}
	// The events feed holds only the account's own.
	feed := func(c apiClient, after string) store.FeedPage {
		resp, body := c.do("GET", "/api/v1/events?limit=1000&after="+after)
		var p store.FeedPage
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &p); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	ap := feed(alice, "")
	bp := feed(bob, "")
	if len(ap.Events) == 0 || len(bp.Events) == 0 {
		t.Fatalf("feeds: alice %d, bob %d entries", len(ap.Events), len(bp.Events))
	}
	for _, ev := range bp.Events {
		if ev.Message != bobMsg.ID {
			t.Errorf("bob's feed holds %+v", ev)
		}
	}
	for _, ev := range ap.Events {
		if ev.Message != e.msg.ID {
			t.Errorf("alice's feed holds %+v", ev)
		}
	}
	// Alice's cursors do not open her feed to bob.
	for _, cur := range []string{"", "0", ap.Next, "-1", "%00", "AAAAAAAAAAAA"} {
		for _, ev := range feed(bob, cur).Events {
			if ev.Message != bobMsg.ID {
				t.Errorf("bob with cursor %q reads %+v", cur, ev)
			}
		}
	}
	// DELETE another account's message: 404, and nothing is erased.
	resp, body := bob.do("DELETE", "/api/v1/messages/"+e.msg.ID)
	if resp.StatusCode != http.StatusNotFound || body != missing {
		t.Errorf("bob DELETE alice's: %d %q", resp.StatusCode, body)
	}
	if len(e.view(t).Events) != 1 {
		t.Errorf("alice's events after bob's DELETE: %d", len(e.view(t).Events))
	}
	// Alice can still read, then erase, her own.
	if resp, _ := alice.do("GET", "/api/v1/messages/"+e.msg.ID); resp.StatusCode != http.StatusOK {
		t.Errorf("alice GET her own: %d", resp.StatusCode)
	}
	if resp, _ := alice.do("DELETE", "/api/v1/messages/"+e.msg.ID); resp.StatusCode != http.StatusNoContent {
		t.Errorf("alice DELETE her own: %d", resp.StatusCode)
	}
	if resp, _ := bob.do("GET", "/api/v1/messages/"+bobMsg.ID); resp.StatusCode != http.StatusOK {
		t.Errorf("bob GET his own after alice's erase: %d", resp.StatusCode)
	}
}

// 401 for a missing or wrong key, whatever the ref: before authentication
// nothing tells whether a message exists.
func TestAttack_apiKeys(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	last := aliceKey[:len(aliceKey)-1] + string(aliceKey[len(aliceKey)-1]^1)
	for _, key := range []string{
		"", last, aliceKey[:len(aliceKey)-1], aliceKey + "x", strings.ToUpper(aliceKey),
		keySum(aliceKey), // the stored hash is not a key
		aliceKey + "\x00", " ",
	} {
		for _, path := range []string{"/api/v1/messages/" + e.msg.ID, "/api/v1/messages/NOSUCH", "/api/v1/events"} {
			for _, m := range []string{"GET", "DELETE"} {
				if m == "DELETE" && path == "/api/v1/events" {
					continue
				}
				hdr := http.Header{}
				if key != "" {
					hdr.Set("Authorization", "Bearer "+key)
				}
				req, err := http.NewRequest(m, e.srv.URL+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header = hdr
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					// net/http refuses to send a NUL in a header: not an attack that reaches us.
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("%s %s with key %q: %d", m, path, key, resp.StatusCode)
				}
			}
		}
	}
	if n := len(e.view(t).Events); n != 0 {
		t.Errorf("unexpected events: %d", n)
	}
	if v := e.view(t); v == nil {
		t.Error("message erased by unauthenticated DELETE")
	}
	// Two accounts configured with the same key: neither is let in.
	e2 := newTestEnv(t, nil, func(c *Config) {
		c.Accounts = []Account{{Name: "alice", APIKeySHA256: keySum(aliceKey)}, {Name: "mallory", APIKeySHA256: keySum(aliceKey)}}
	})
	resp, _ := rawGet(t, e2.srv.URL, "GET", "/api/v1/messages/"+e2.msg.ID, map[string]string{"Authorization": "Bearer " + aliceKey})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("key shared by two accounts: %d", resp.StatusCode)
	}
}
