package relay

// Attack tests: each one tries an attack against a relay listening on
// loopback and asserts the exact outcome. SECURITY.md lists them.

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// ---- 1. Open relay ----

func TestAttack_openRelay(t *testing.T) {
	// alice may send without AUTH from 192.0.2.0/24 only; the attacker is
	// on 127.0.0.1 and has no password.
	h := newHarness(t, harnessOpts{networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	senders := []string{
		"alice@example.com",              // the account's own address
		"spammer@elsewhere.example",      // a remote sender
		"",                               // the null sender <>
		"postmaster",                     // no domain
		`"alice@example.com"@relay.test`, // quoted local part
		"@relay.test:alice@example.com",  // source route
		"alice%example.com@relay.test",   // percent hack
		"alice@[127.0.0.1]",              // address literal
	}
	rcpts := []string{
		"victim@evil.example",
		"alice@example.com",
		"postmaster",
		"postmaster@relay.test",
		"@relay.test:victim@evil.example",
		"@relay.test,@relay2.test:victim@evil.example",
		"victim%evil.example@relay.test",
		"victim%evil.example@[127.0.0.1]",
		`"victim@evil.example"@relay.test`,
		`"victim%evil.example"@relay.test`,
		"evil.example!victim@relay.test",
		"victim@evil.example@relay.test",
		"victim@[192.0.2.1]",
	}
	verbs := [][2]string{{"MAIL FROM:", "RCPT TO:"}, {"mail from:", "rcpt to:"}, {"MaIl FrOm:", "RcPt To:"}}
	greets := []string{"EHLO attacker.example", "HELO attacker.example", "ehlo relay.test"}
	for i, from := range senders {
		v := verbs[i%len(verbs)]
		c := h.dial("")
		c.expect(greets[i%len(greets)], 250)
		if r := c.cmd(v[0] + "<" + from + ">"); r.code < 500 || r.code > 599 {
			t.Errorf("MAIL <%s>: want 5xx, got %v", from, r)
		}
		for _, to := range rcpts {
			if r := c.cmd(v[1] + "<" + to + ">"); r.code < 500 || r.code > 599 {
				t.Errorf("MAIL <%s> RCPT <%s>: want 5xx, got %v", from, to, r)
			}
		}
		if r := c.cmd("DATA"); r.code < 500 {
			t.Errorf("DATA after refused MAIL/RCPT: want 5xx, got %v", r)
		}
		c.expect("QUIT", 221)
	}

	// RCPT before MAIL, and MAIL before any greeting.
	c := h.dial("")
	c.expect("EHLO attacker.example", 250)
	if r := c.cmd("RCPT TO:<victim@evil.example>"); r.code < 500 {
		t.Errorf("RCPT before MAIL: want 5xx, got %v", r)
	}
	c = h.dial("")
	if r := c.cmd("MAIL FROM:<spammer@elsewhere.example>"); r.code < 500 {
		t.Errorf("MAIL before EHLO: want 5xx, got %v", r)
	}

	// Spoofing the client address or the authenticated identity gets nothing.
	c = h.dial("")
	c.expect("EHLO attacker.example", 250)
	for _, line := range []string{"XCLIENT ADDR=192.0.2.10", "XFORWARD ADDR=192.0.2.10"} {
		if r := c.cmd(line); r.code < 500 {
			t.Errorf("%s: want 5xx, got %v", line, r)
		}
	}
	if r := c.cmd("MAIL FROM:<alice@example.com> AUTH=alice@example.com"); r.code != 530 {
		t.Errorf("MAIL with AUTH= parameter: want 530, got %v", r)
	}

	// Everything in one packet, the way a spam bot pipelines it.
	c = h.dial("")
	c.write("EHLO bot.example\r\nMAIL FROM:<spammer@elsewhere.example>\r\nRCPT TO:<victim@evil.example>\r\n" +
		"DATA\r\nSubject: buy now\r\n\r\nspam\r\n.\r\nQUIT\r\n")
	if r := c.read(); r.code != 250 {
		t.Fatalf("EHLO: %v", r)
	}
	for {
		r := c.read()
		if r.err != nil {
			break
		}
		if r.code == 221 {
			break
		}
		if r.code < 500 {
			t.Errorf("pipelined spam run: a command was accepted: %v", r)
		}
	}

	// The refusals are not an artefact of the harness: alice with AUTH gets through.
	c = h.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	c.expect("RSET", 250)
	h.assertNothingStored()
}

// A peer on one of the account's networks may send; one outside may not,
// even when it claims to be on it.
func TestAttack_openRelay_networkBoundary(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	in := newHarness(t, harnessOpts{networks: nets, remote: "192.0.2.10"})
	c := in.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	c.expect("RCPT TO:<bob@example.net>", 250)
	c.expect("RSET", 250)

	for _, ip := range []string{"192.0.3.10", "::ffff:192.0.3.10", "2001:db8::1"} {
		out := newHarness(t, harnessOpts{networks: nets, remote: ip})
		c := out.dial("")
		c.expect("EHLO app.example", 250)
		c.expect("MAIL FROM:<alice@example.com>", 530)
		out.assertNothingStored()
	}
}

// ---- 2. STARTTLS ----

// CVE-2011-0411 class: what a man in the middle appends after STARTTLS in
// the same packet must not run inside the TLS session.
func TestAttack_startTLSInjection(t *testing.T) {
	h := newHarness(t, harnessOpts{tls: true})
	for _, injected := range []string{
		"RSET\r\n",
		"NOOP\r\nNOOP\r\n",
		"EHLO mitm.example\r\nMAIL FROM:<mitm@evil.example>\r\nRCPT TO:<mitm@evil.example>\r\n",
	} {
		c := h.dial("")
		c.expect("EHLO app.example", 250)
		c.write("STARTTLS\r\n" + injected)
		if r := c.read(); r.code != 220 {
			t.Fatalf("STARTTLS: %v", r)
		}
		if err := c.startTLS(clientTLS()); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		// The server must say nothing until the client speaks.
		c.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if b, err := c.r.ReadByte(); err == nil {
			rest, _ := c.r.ReadString('\n')
			t.Fatalf("injected %q was answered inside TLS: %q", injected, string(b)+rest)
		}
		r := c.expect("EHLO app.example", 250)
		if !strings.Contains(r.text(), "AUTH PLAIN LOGIN") || strings.Contains(r.text(), "STARTTLS") {
			t.Errorf("EHLO inside TLS: %v", r)
		}
		// The victim's transaction gets exactly the victim's recipient.
		c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
		c.expect("MAIL FROM:<alice@example.com>", 250)
		c.expect("RCPT TO:<bob@example.net>", 250)
		c.expect("DATA", 354)
		r = c.expect("Subject: hi\r\n\r\nhello\r\n.", 250)
		id := queueID(t, r.text())
		h.ledger.mu.Lock()
		env := h.ledger.accepted[id]
		h.ledger.mu.Unlock()
		if env == nil {
			// The ledger learns off the SMTP path: wait for it.
			h.ledger.waitStatus(t, id, 0, StatusDelivered)
			h.ledger.mu.Lock()
			env = h.ledger.accepted[id]
			h.ledger.mu.Unlock()
		}
		if env.From != "alice@example.com" || len(env.Recipients) != 1 || env.Recipients[0].Address != "bob@example.net" {
			t.Errorf("injected envelope leaked into the message: %+v", env)
		}
		c.expect("QUIT", 221)
	}
}

// STARTTLS forgets what was said in the clear, AUTH included (RFC 3207).
func TestAttack_startTLSResetsState(t *testing.T) {
	h := newHarness(t, harnessOpts{tls: true})
	c := h.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235) // loopback: allowed in the clear
	c.expect("STARTTLS", 220)
	if err := c.startTLS(clientTLS()); err != nil {
		t.Fatal(err)
	}
	if r := c.cmd("MAIL FROM:<alice@example.com>"); r.code != 502 {
		t.Errorf("MAIL without EHLO after STARTTLS: want 502, got %v", r)
	}
	c.expect("EHLO app.example", 250)
	c.expect("MAIL FROM:<alice@example.com>", 530)
	if r := c.cmd("STARTTLS"); r.code != 502 {
		t.Errorf("second STARTTLS: want 502, got %v", r)
	}
}

func TestAttack_authBeforeTLS_nonLoopback(t *testing.T) {
	h := newHarness(t, harnessOpts{tls: true, remote: "203.0.113.7"})
	c := h.dial("")
	r := c.expect("EHLO app.example", 250)
	if strings.Contains(r.text(), "AUTH") || !strings.Contains(r.text(), "STARTTLS") {
		t.Errorf("EHLO in the clear from the internet: %v", r)
	}
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 538)
	c.expect("AUTH LOGIN", 538)
	c.expect("MAIL FROM:<alice@example.com>", 530)
	c.expect("STARTTLS", 220)
	if err := c.startTLS(clientTLS()); err != nil {
		t.Fatal(err)
	}
	r = c.expect("EHLO app.example", 250)
	if !strings.Contains(r.text(), "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO inside TLS lacks AUTH: %v", r)
	}
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	c.expect("MAIL FROM:<alice@example.com>", 250)

	// Without any TLS configured, such a peer can never AUTH.
	b := newHarness(t, harnessOpts{remote: "203.0.113.7"})
	c = b.dial("")
	r = c.expect("EHLO app.example", 250)
	if strings.Contains(r.text(), "AUTH") || strings.Contains(r.text(), "STARTTLS") {
		t.Errorf("EHLO without TLS: %v", r)
	}
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 538)
	c.expect("STARTTLS", 502)
}

func TestAttack_tlsMinimumVersion(t *testing.T) {
	// newHarness's TLS config sets no minimum: NewServer does.
	h := newHarness(t, harnessOpts{tls: true})
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		c := h.dial("")
		c.expect("EHLO app.example", 250)
		c.expect("STARTTLS", 220)
		err := c.startTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
		if err == nil {
			t.Errorf("TLS version %x: handshake succeeded", v)
		}
	}
	c := h.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("STARTTLS", 220)
	if err := c.startTLS(&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err != nil {
		t.Errorf("TLS 1.2: %v", err)
	}
}

func TestAttack_requireTLS(t *testing.T) {
	// Even alice's own network and loopback get nothing before STARTTLS.
	h := newHarness(t, harnessOpts{tls: true, requireTLS: true, networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	c := h.dial("")
	r := c.expect("EHLO app.example", 250)
	if strings.Contains(r.text(), "AUTH") {
		t.Errorf("EHLO before TLS with require_tls advertises AUTH: %v", r)
	}
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 538)
	r = c.expect("MAIL FROM:<alice@example.com>", 530)
	if !strings.HasPrefix(r.text(), "5.7.0") {
		t.Errorf("MAIL before STARTTLS: %v", r)
	}
	c.expect("STARTTLS", 220)
	if err := c.startTLS(clientTLS()); err != nil {
		t.Fatal(err)
	}
	c.expect("EHLO app.example", 250)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	c.expect("RSET", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	h.assertNothingStored()
}

// ---- 3. Credentials ----

func TestAttack_wrongCredentials(t *testing.T) {
	h := newHarness(t, harnessOpts{accounts: []Account{
		{Name: "alice", PasswordHash: cheapHash, Mode: ModeAll},
		{Name: "netonly", Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Mode: ModeAll},
	}})
	cases := []struct{ what, cmd string }{
		{"wrong password", "AUTH PLAIN " + plainIR("", "alice", "wrong")},
		{"unknown user", "AUTH PLAIN " + plainIR("", "mallory", testPassword)},
		{"empty password", "AUTH PLAIN " + plainIR("", "alice", "")},
		{"account without password", "AUTH PLAIN " + plainIR("", "netonly", "")},
		{"authorize as another account", "AUTH PLAIN " + plainIR("netonly", "alice", testPassword)},
		{"user name case", "AUTH PLAIN " + plainIR("", "ALICE", testPassword)},
		{"password with NUL", "AUTH PLAIN " + plainIR("", "alice", testPassword+"\x00x")}, // malformed: 454
	}
	for i, tc := range cases {
		// A fresh source address each, so the rate limiter stays out of it.
		c := h.dial(fmt.Sprintf("127.0.1.%d", i+1))
		c.expect("EHLO app.example", 250)
		want := 535
		if strings.Contains(tc.what, "NUL") {
			want = 454
		}
		if r := c.cmd(tc.cmd); r.code != want {
			t.Errorf("%s: want %d, got %v", tc.what, want, r)
		}
		c.expect("MAIL FROM:<alice@example.com>", 530)
	}
	// AUTH LOGIN the same way.
	c := h.dial("127.0.1.100")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH LOGIN", 334)
	c.expect(base64.StdEncoding.EncodeToString([]byte("alice")), 334)
	c.expect(base64.StdEncoding.EncodeToString([]byte("wrong")), 535)
	h.assertNothingStored()
}

// Every failed login costs the same, so the time does not tell a guesser
// which user names exist: a known user with a wrong password, an unknown
// user and a user without a password are each checked with exactly one
// bcrypt compare, against a hash of the accounts' cost (here 11, above the
// dummy's floor of 10). The compares are recorded, not timed;
// BenchmarkAccounts_authenticate has the figures.
func TestAttack_authOneCompareOfTheAccountsCost(t *testing.T) {
	const cost = 11
	alice, bob := fakeBcrypt(cost, "alice"), fakeBcrypt(cost, "bob")
	type check struct {
		hash string
		cost int
	}
	var (
		mu     sync.Mutex
		checks []check
	)
	compare, generate := compareHash, generateHash
	t.Cleanup(func() { compareHash, generateHash = compare, generate })
	generateHash = func(_ []byte, cost int) ([]byte, error) { return fakeBcrypt(cost, "dummy"), nil }
	compareHash = func(hash, _ []byte) error {
		c, err := bcrypt.Cost(hash)
		if err != nil {
			t.Errorf("compared against %q: %v", hash, err)
		}
		mu.Lock()
		checks = append(checks, check{string(hash), c})
		mu.Unlock()
		return bcrypt.ErrMismatchedHashAndPassword
	}
	h := newHarness(t, harnessOpts{realBcrypt: true, accounts: []Account{
		{Name: "alice", PasswordHash: alice, Mode: ModeAll},
		{Name: "bob", PasswordHash: bob, Mode: ModeAll},
		{Name: "netonly", Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Mode: ModeAll},
	}})
	var dummy string
	for i, tc := range []struct {
		what, user string
		hash       []byte // the account's own; nil: the dummy
		login      bool   // AUTH LOGIN rather than PLAIN
	}{
		{"known user, wrong password", "alice", alice, false},
		{"another known user", "bob", bob, false},
		{"unknown user", "nobody", nil, false},
		{"user without password", "netonly", nil, false},
		{"user name in another case", "ALICE", nil, false},
		{"unknown user, AUTH LOGIN", "nobody", nil, true},
		{"known user, AUTH LOGIN", "alice", alice, true},
	} {
		mu.Lock()
		checks = nil
		mu.Unlock()
		c := h.dial(fmt.Sprintf("127.0.2.%d", i+1)) // each its own address: no rate limit
		c.expect("EHLO app.example", 250)
		if tc.login {
			c.expect("AUTH LOGIN", 334)
			c.expect(base64.StdEncoding.EncodeToString([]byte(tc.user)), 334)
			c.expect(base64.StdEncoding.EncodeToString([]byte("wrong password")), 535)
		} else {
			c.expect("AUTH PLAIN "+plainIR("", tc.user, "wrong password"), 535)
		}
		mu.Lock()
		got := checks
		mu.Unlock()
		if len(got) != 1 {
			t.Errorf("%s: %d bcrypt compares, want 1", tc.what, len(got))
			continue
		}
		if got[0].cost != cost {
			t.Errorf("%s: compared against a hash of cost %d, want %d", tc.what, got[0].cost, cost)
		}
		switch {
		case tc.hash != nil && got[0].hash != string(tc.hash):
			t.Errorf("%s: compared against %q, not the account's hash", tc.what, got[0].hash)
		case tc.hash == nil && (got[0].hash == string(alice) || got[0].hash == string(bob)):
			t.Errorf("%s: compared against an account's hash", tc.what)
		case tc.hash == nil && dummy != "" && got[0].hash != dummy:
			t.Errorf("%s: a dummy hash of its own", tc.what)
		case tc.hash == nil:
			dummy = got[0].hash
		}
	}
}

// fakeBcrypt is a well-formed bcrypt hash of the given cost that no
// password matches: bcrypt.Cost reads it, and only the test's compare sees it.
func fakeBcrypt(cost int, tag string) []byte {
	h := fmt.Sprintf("$2a$%02d$%s", cost, tag)
	return []byte(h + strings.Repeat(".", 60-len(h)))
}

// BenchmarkAccounts_authenticate times a failed login by what was wrong
// with it, on real bcrypt hashes of cost 10: unknown/known and
// nopassword/known near 1 mean the time does not tell a guesser which user
// names exist.
func BenchmarkAccounts_authenticate(b *testing.B) {
	as := &accounts{list: []Account{{Name: "alice", PasswordHash: testHash}, {Name: "netonly"}}}
	as.dummyHash() // made once, by the first unknown user
	users := []string{"alice", "nobody", "netonly"}
	var took [3]time.Duration
	for range b.N {
		for i, u := range users {
			start := time.Now()
			if _, err := as.authenticate(u, "wrong password"); err == nil {
				b.Fatalf("%s logged in with a wrong password", u)
			}
			took[i] += time.Since(start)
		}
	}
	b.ReportMetric(float64(took[0].Nanoseconds())/float64(b.N), "known-ns/login")
	b.ReportMetric(float64(took[1])/float64(took[0]), "unknown/known")
	b.ReportMetric(float64(took[2])/float64(took[0]), "nopassword/known")
}

// The dummy hash an unknown user is checked against costs what the
// accounts' own hashes cost: hash-password makes cost 12 hashes, and a
// cheaper dummy would tell a guesser which names exist.
func TestAccounts_dummyHashMatchesCost(t *testing.T) {
	h11, err := bcrypt.GenerateFromPassword([]byte("pw"), 11)
	if err != nil {
		t.Fatal(err)
	}
	as := &accounts{list: []Account{{Name: "a", PasswordHash: testHash}, {Name: "b", PasswordHash: h11}, {Name: "c"}}}
	if cost, err := bcrypt.Cost(as.dummyHash()); err != nil || cost != 11 {
		t.Errorf("dummy hash cost %d (%v), want 11", cost, err)
	}
	none := &accounts{}
	if cost, err := bcrypt.Cost(none.dummyHash()); err != nil || cost < 10 {
		t.Errorf("dummy hash without accounts: cost %d (%v)", cost, err)
	}
}

func TestAttack_authRateLimit(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// Five guesses on one connection, then the next is refused, slowly.
	c := h.dial("127.0.3.1")
	c.expect("EHLO guesser.example", 250)
	for i := range 5 {
		c.expect("AUTH PLAIN "+plainIR("", "alice", "guess"+strconv.Itoa(i)), 535)
	}
	start := time.Now()
	r := c.expect("AUTH PLAIN "+plainIR("", "alice", "guess5"), 454)
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("454 came after %v; want a delay of about a second", el)
	}
	if !strings.HasPrefix(r.text(), "4.7.0") {
		t.Errorf("rate limited: %v", r)
	}
	// A new connection from the same address is still refused, right password or not.
	c = h.dial("127.0.3.1")
	c.expect("EHLO guesser.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 454)
	c.expect("AUTH LOGIN "+base64.StdEncoding.EncodeToString([]byte("alice")), 334)
	c.expect(base64.StdEncoding.EncodeToString([]byte(testPassword)), 454)
	// Other addresses are not punished for it.
	c = h.dial("127.0.3.2")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
}

// Guesses sent on many connections at once still count against the one
// budget of the address: the limit is not checked and charged separately.
func TestAttack_authRateLimitParallel(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	const n = 20
	conns := make([]*rawClient, n)
	for i := range conns {
		conns[i] = h.dial("127.0.3.3")
		conns[i].expect("EHLO guesser.example", 250)
	}
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			c.write("AUTH PLAIN " + plainIR("", "alice", "guess"+strconv.Itoa(i)) + "\r\n")
			codes[i] = c.read().code
		})
	}
	wg.Wait()
	var tried, limited int
	for _, code := range codes {
		switch code {
		case 535:
			tried++
		case 454:
			limited++
		default:
			t.Errorf("unexpected reply %d", code)
		}
	}
	t.Logf("%d parallel guesses: %d checked (535), %d refused (454)", n, tried, limited)
	if tried > 5 {
		t.Errorf("%d guesses were checked; the burst allows 5", tried)
	}
	// A right password right after is refused as well.
	c := h.dial("127.0.3.3")
	c.expect("EHLO guesser.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 454)
}

// An IPv6 guesser cannot take a fresh address of its /64 for each guess.
func TestAttack_authRateLimitIPv6(t *testing.T) {
	var mu sync.Mutex
	n := 0
	h := newHarness(t, harnessOpts{tls: true, remotes: func() string {
		mu.Lock()
		defer mu.Unlock()
		n++
		return fmt.Sprintf("2001:db8:1:2::%x", n)
	}})
	guess := func(pass string) int {
		c := h.dial("")
		c.expect("EHLO guesser.example", 250)
		c.expect("STARTTLS", 220)
		if err := c.startTLS(clientTLS()); err != nil {
			t.Fatal(err)
		}
		c.expect("EHLO guesser.example", 250)
		return c.cmd("AUTH PLAIN " + plainIR("", "alice", pass)).code
	}
	for i := range 5 {
		if code := guess("guess" + strconv.Itoa(i)); code != 535 {
			t.Fatalf("guess %d: %d", i, code)
		}
	}
	if code := guess(testPassword); code != 454 {
		t.Errorf("sixth attempt from another address of the same /64: %d, want 454", code)
	}
}

// Successful logins do not use up the budget of an address.
func TestAttack_authRateLimitSparesSuccess(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for range 8 {
		c := h.dial("127.0.3.4")
		c.expect("EHLO app.example", 250)
		c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
		c.expect("QUIT", 221)
	}
}

// ---- 4. Resource limits ----

func TestAttack_maxConnections(t *testing.T) {
	h := newHarness(t, harnessOpts{maxConns: 3})
	var held []*rawClient
	for i := range 3 {
		held = append(held, h.dial(fmt.Sprintf("127.0.4.%d", i+1)))
	}
	c, greet := h.connect("127.0.4.9")
	if greet.code != 421 || !strings.HasPrefix(greet.text(), "4.7.0") {
		t.Fatalf("connection over max_connections: %v", greet)
	}
	if !c.closed(hangGuard) {
		t.Error("connection over the limit left open")
	}
	// A slot that frees up is given to the next client.
	held[0].expect("QUIT", 221)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, greet := h.connect("127.0.4.9")
		if greet.code == 220 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("freed slot never reused: %v", greet)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAttack_maxConnectionsPerIP(t *testing.T) {
	h := newHarness(t, harnessOpts{maxConns: 100, maxPerIP: 2})
	h.dial("127.0.5.1")
	h.dial("127.0.5.1")
	_, greet := h.connect("127.0.5.1")
	if greet.code != 421 {
		t.Fatalf("third connection from one address: %v", greet)
	}
	h.dial("127.0.5.2") // another address is unaffected
}

// A slowloris client that trickles a command byte by byte, or says nothing,
// is cut after the command timeout: it gets 421 4.4.2 and the connection
// closes while it is still trickling.
func TestAttack_slowloris(t *testing.T) {
	h := newHarness(t, harnessOpts{cmdTimeout: 300 * time.Millisecond})
	c := h.dial("")
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// One byte every 50 ms, with no end of line, until the server cuts
		// the connection (or the test gives up): a server that let a
		// trickle reset its timeout would never answer 421.
		for b := byte('a'); ; b = 'a' + (b-'a'+1)%26 {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c.c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.c.Write([]byte{b}); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	c.write("EHLO slow.example.")
	// The fragment read when the timeout struck may be answered (bufio
	// hands it over as a line); then the session ends.
	var replies []reply
	for {
		r := c.read()
		if r.err != nil {
			break
		}
		replies = append(replies, r)
		if r.code == 421 || len(replies) > 2 {
			break
		}
	}
	if n := len(replies); n == 0 || n > 2 || replies[n-1].code != 421 || !strings.HasPrefix(replies[n-1].text(), "4.4.2") {
		t.Errorf("slowloris: replies %v after %d bytes trickled; want at most one answer, then 421 4.4.2", replies, sent.Load())
	}
	if !c.closed(hangGuard) {
		t.Error("slowloris connection left open")
	}
	close(stop)
	<-done

	idle := h.dial("")
	if r := idle.read(); r.code != 421 || !strings.HasPrefix(r.text(), "4.4.2") {
		t.Errorf("idle client: %v", r)
	}
	if !idle.closed(hangGuard) {
		t.Error("idle client left connected")
	}
}

// A client that trickles its DATA, without end, is cut after the data
// timeout with 421 4.4.2, and nothing is stored. The command timeout is
// far beyond the test's patience, so only the data timeout can cut it.
func TestAttack_dataTimeout(t *testing.T) {
	h := newHarness(t, harnessOpts{dataTimeout: 400 * time.Millisecond, cmdTimeout: time.Hour})
	c := h.dial("")
	c.startData("bob@example.net")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c.c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := fmt.Fprintf(c.c, "X-Slow-%d: drip\r\n", i); err != nil {
				return
			}
		}
	}()
	r := c.read()
	if r.code != 421 || !strings.HasPrefix(r.text(), "4.4.2") {
		t.Errorf("trickled DATA: %v", r)
	}
	if !c.closed(hangGuard) {
		t.Error("trickling client left connected")
	}
	h.assertNothingStored()
}

func TestAttack_longLines(t *testing.T) {
	h := newHarness(t, harnessOpts{maxSize: 4 << 20})
	// A command line past the limit closes the connection.
	c := h.dial("")
	c.write("EHLO " + strings.Repeat("a", 100<<10) + "\r\n")
	if r := c.read(); r.code != 500 {
		t.Errorf("100 KiB command line: %v", r)
	}
	if !c.closed(hangGuard) {
		t.Error("connection left open after a command line over the limit")
	}
	// A data line past the limit refuses the message.
	c = h.dial("")
	c.startData("bob@example.net")
	c.write("Subject: x\r\n\r\n" + strings.Repeat("b", 100<<10) + "\r\n.\r\n")
	if r := c.read(); r.code != 500 {
		t.Errorf("100 KiB data line: %v", r)
	}
	c.closed(2 * time.Second)
	h.assertNothingStored()
}

func TestAttack_headerTooLarge(t *testing.T) {
	h := newHarness(t, harnessOpts{maxSize: 8 << 20})
	var b strings.Builder
	line := "X-Pad: " + strings.Repeat("p", 990) + "\r\n"
	for b.Len() < 1<<20+1 {
		b.WriteString(line)
	}
	b.WriteString("Subject: big header\r\n\r\nbody\r\n")
	c := h.dial("")
	r := c.sendRaw(1, b.String())
	if r.code != 552 || !strings.HasPrefix(r.text(), "5.3.4") {
		t.Errorf("1 MiB header: %v", r)
	}
	c.expect("NOOP", 250) // the session goes on, the client got a clean refusal
	h.assertNothingStored()
	// One long folded field is the same.
	c = h.dial("")
	r = c.sendRaw(1, "Subject: x\r\n"+strings.Repeat(" fold "+strings.Repeat("f", 1000)+"\r\n", 1100)+"\r\nbody\r\n")
	if r.code != 552 {
		t.Errorf("1 MiB folded field: %v", r)
	}
	h.assertNothingStored()
}

func TestAttack_messageTooLarge(t *testing.T) {
	h := newHarness(t, harnessOpts{maxSize: 64 << 10})
	body := strings.Repeat(strings.Repeat("z", 998)+"\r\n", 200)
	c := h.dial("")
	r := c.sendRaw(1, "Subject: big\r\n\r\n"+body)
	if r.code != 552 || !strings.HasPrefix(r.text(), "5.3.4") {
		t.Errorf("200 KB message with a 64 KiB limit: %v", r)
	}
	c.expect("NOOP", 250)
	// Declared up front with SIZE, it is refused at MAIL.
	c = h.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	r = c.cmd("MAIL FROM:<alice@example.com> SIZE=10000000")
	if r.code != 552 || !strings.HasPrefix(r.text(), "5.3.4") {
		t.Errorf("MAIL with SIZE over the limit: %v", r)
	}
	h.assertNothingStored()
}

func TestAttack_maxRecipients(t *testing.T) {
	h := newHarness(t, harnessOpts{maxRcpts: 3})
	c := h.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	for i := range 3 {
		c.expect(fmt.Sprintf("RCPT TO:<r%d@example.net>", i), 250)
	}
	for i := 3; i < 6; i++ {
		r := c.cmd(fmt.Sprintf("RCPT TO:<r%d@example.net>", i))
		if r.code != 452 || !strings.HasPrefix(r.text(), "4.5.3") {
			t.Errorf("recipient %d: %v", i+1, r)
		}
	}
}

// Unknown commands: a few are answered, then the connection is closed.
func TestAttack_invalidCommands(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial("")
	c.expect("EHLO scanner.example", 250)
	for _, junk := range []string{"GET / HTTP/1.1", "Host: relay.test", "USER root", "\x16\x03\x01"} {
		if r := c.cmd(junk); r.code != 500 && r.code != 501 {
			t.Errorf("%q: %v", junk, r)
		}
	}
	r := c.read()
	if r.code != 500 || !strings.Contains(r.text(), "Too many errors") {
		t.Errorf("after 4 errors: %v", r)
	}
	if !c.closed(hangGuard) {
		t.Error("connection left open after too many errors")
	}
}

// 200 idle connections that said EHLO cost little memory.
func TestAttack_idleConnectionsMemory(t *testing.T) {
	h := newHarness(t, harnessOpts{maxConns: 1000, maxPerIP: 1000, log: slog.New(slog.DiscardHandler)})
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	goBefore := runtime.NumGoroutine()
	const n = 200
	for i := range n {
		c := h.dial(fmt.Sprintf("127.0.6.%d", i%250+1))
		c.expect("EHLO idle.example", 250)
	}
	after := heap()
	growth := int64(after) - int64(before)
	t.Logf("%d idle connections: heap %d → %d bytes (%+d, %d per connection), goroutines %d → %d",
		n, before, after, growth, growth/n, goBefore, runtime.NumGoroutine())
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB for %d idle connections", growth>>20, n)
	}
}
