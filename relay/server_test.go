package relay

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
)

const htmlMsg = `From: Alice <alice@example.com>
To: Bob <bob@example.net>
Subject: Your quote
X-Track: all
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<html><body><p>Hello, see <a href="https://example.com/quote?id=1&amp;k=2">the quote</a>.</p></body></html>
`

func TestServer_openRelayRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client()
	err := c.Mail("alice@example.com", nil)
	if code := smtpCode(err); code != 530 {
		t.Fatalf("MAIL without AUTH from outside every network: want 530, got %v", err)
	}
	for _, to := range []string{"bob@example.net", "@evil.test:bob@example.net", "bob%example.net@relay.test", `"bob@x"@example.net`} {
		if err := c.Rcpt(to, nil); err == nil || smtpCode(err) < 500 {
			t.Errorf("RCPT %s without AUTH: want 5xx, got %v", to, err)
		}
	}
	h.assertNothingStored()
}

func TestServer_wrongPassword(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client()
	err := c.Auth(sasl.NewPlainClient("", "alice", "wrong"))
	if smtpCode(err) != 535 {
		t.Fatalf("wrong password: want 535, got %v", err)
	}
	c2 := h.client()
	err = c2.Auth(sasl.NewPlainClient("", "mallory", testPassword))
	if smtpCode(err) != 535 {
		t.Fatalf("unknown user: want 535, got %v", err)
	}
}

func TestServer_authRateLimited(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var last error
	for i := 0; i < 7; i++ {
		c := h.client()
		last = c.Auth(sasl.NewPlainClient("", "alice", "guess"))
	}
	if smtpCode(last) != 454 {
		t.Fatalf("after repeated failures: want 454, got %v", last)
	}
	// Even the right password is refused while the address is blocked.
	c := h.client()
	if err := c.Auth(sasl.NewPlainClient("", "alice", testPassword)); smtpCode(err) != 454 {
		t.Fatalf("right password while blocked: want 454, got %v", err)
	}
}

func TestServer_authLogin(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client()
	if err := c.Auth(sasl.NewLoginClient("alice", testPassword)); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}
	if err := c.Mail("alice@example.com", nil); err != nil {
		t.Fatal(err)
	}
}

func TestSession_plaintextAuthOnlyOnLoopback(t *testing.T) {
	cases := []struct {
		ip   string
		tls  bool
		want bool
	}{
		{"127.0.0.1", false, true},
		{"::1", false, true},
		{"192.0.2.10", false, false},
		{"192.0.2.10", true, true},
	}
	for _, c := range cases {
		s := &session{ip: netip.MustParseAddr(c.ip), tls: c.tls, srv: &Server{}}
		if got := s.plaintextAuthOK(); got != c.want {
			t.Errorf("%s tls=%v: plaintextAuthOK=%v, want %v", c.ip, c.tls, got, c.want)
		}
		mechs := s.AuthMechanisms()
		if (len(mechs) > 0) != c.want {
			t.Errorf("%s tls=%v: mechanisms %v", c.ip, c.tls, mechs)
		}
		if _, err := s.Auth("PLAIN"); (err == nil) != c.want {
			t.Errorf("%s tls=%v: Auth err=%v", c.ip, c.tls, err)
		}
	}
}

func TestServer_networkAccountSendsWithoutAuth(t *testing.T) {
	h := newHarness(t, harnessOpts{networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	c := h.client()
	reply, err := sendOn(c, "alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	queueID(t, reply)
}

func TestServer_acceptSpoolsAndCaptures(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	reply, err := h.send("alice@example.com", []string{"bob@example.net", "carol@example.org"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	for i := range 2 {
		h.ledger.waitStatus(t, id, i, StatusDelivered)
	}
	out := filepath.Join(h.dir, "outbox")
	var copies []string
	for i := range 2 {
		b, err := os.ReadFile(filepath.Join(out, id+"-"+string(rune('0'+i))+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		copies = append(copies, string(b))
	}
	for i, c := range copies {
		if !strings.Contains(c, "\r\nReceived: from client.test ([127.0.0.1])\r\n\tby relay.test (trackrelay) with ESMTPA id "+id) {
			t.Errorf("copy %d: no Received trace header:\n%s", i, c)
		}
		if !strings.Contains(c, "Message-ID: <"+id) {
			t.Errorf("copy %d: no Message-ID added", i)
		}
		if strings.Contains(strings.ToLower(c), "x-track:") {
			t.Errorf("copy %d: X-Track not removed", i)
		}
		want := "http://t.test/c/" + id + "-" + string(rune('0'+i)) + "-0"
		if !strings.Contains(c, want) {
			t.Errorf("copy %d: no click URL %s:\n%s", i, want, c)
		}
		if !strings.Contains(c, "http://t.test/o/"+id+"-"+string(rune('0'+i))) {
			t.Errorf("copy %d: no open pixel", i)
		}
	}
	h.ledger.mu.Lock()
	links := h.ledger.links[id]
	acc := h.ledger.accepted[id]
	h.ledger.mu.Unlock()
	if len(links) != 1 || links[0] != "https://example.com/quote?id=1&k=2" {
		t.Errorf("links reported: %q", links)
	}
	if acc == nil || acc.Account != "alice" || acc.SubmitIP != "127.0.0.1" || acc.Mode != ModeAll {
		t.Errorf("accepted record: %+v", acc)
	}
	// Delivered messages leave the spool.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := h.spool.Get(id); err == ErrNoSuchMessage {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("delivered message still in the spool")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServer_selfCopiesUntracked(t *testing.T) {
	h := newHarness(t, harnessOpts{selfAddrs: []string{"Me@Example.com"}})
	reply, err := h.send("alice@example.com", []string{"bob@example.net", "me@example.com", "alice@example.com"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	acc := h.ledger.waitAccepted(t, id)
	want := []bool{true, false, false}
	for i, r := range acc.Recipients {
		if r.Tracked != want[i] {
			t.Errorf("recipient %s tracked=%v, want %v", r.Address, r.Tracked, want[i])
		}
	}
	h.ledger.waitStatus(t, id, 1, StatusDelivered)
	b, _ := os.ReadFile(filepath.Join(h.dir, "outbox", id+"-1.eml"))
	if strings.Contains(string(b), "http://t.test") {
		t.Errorf("self copy was instrumented:\n%s", b)
	}
}

func TestServer_xTrackNone(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	msg := strings.Replace(htmlMsg, "X-Track: all", "X-Track: none", 1)
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(msg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	h.ledger.waitStatus(t, id, 0, StatusDelivered)
	b, _ := os.ReadFile(filepath.Join(h.dir, "outbox", id+"-0.eml"))
	if strings.Contains(string(b), "http://t.test") || strings.Contains(strings.ToLower(string(b)), "x-track") {
		t.Errorf("X-Track: none copy was instrumented or kept the header:\n%s", b)
	}
}

func TestServer_limits(t *testing.T) {
	h := newHarness(t, harnessOpts{maxSize: 2000, maxRcpts: 2})
	big := crlf(htmlMsg) + strings.Repeat("x", 3000) + "\r\n"
	_, err := h.send("alice@example.com", []string{"bob@example.net"}, big)
	if smtpCode(err) != 552 {
		t.Fatalf("oversized message: want 552, got %v", err)
	}
	_, err = h.send("alice@example.com", []string{"a@example.net", "b@example.net", "c@example.net"}, crlf(htmlMsg))
	if smtpCode(err) != 452 {
		t.Fatalf("too many recipients: want 452, got %v", err)
	}
	h.assertNothingStored()
}

func TestServer_ehloAdvertises(t *testing.T) {
	h := newHarness(t, harnessOpts{maxSize: 1 << 20})
	all := h.dial("").expect("EHLO client.test", 250).text()
	for _, want := range []string{"SIZE 1048576", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"} {
		if !strings.Contains(all, want) {
			t.Errorf("EHLO lacks %s:\n%s", want, all)
		}
	}
}

func TestHeader_bodyWithoutBlankLine(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, "Subject: hi\r\nthis line is body\r\nmore body\r\n")
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	h.ledger.waitStatus(t, id, 0, StatusDelivered)
	b, _ := os.ReadFile(filepath.Join(h.dir, "outbox", id+"-0.eml"))
	if !strings.Contains(string(b), "Subject: hi\r\n\r\nthis line is body\r\nmore body\r\n") {
		t.Errorf("body not separated from header:\n%q", b)
	}
}

// Right after its 250 a message can be found: in the ledger, or, until the
// ledger has it, through Deliverer.Pending (by queue id and Message-ID, for
// its own account only). A failing ledger never costs the 250.
func TestServer_messageFoundRightAfter250(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.ledger.mu.Lock()
	h.ledger.acceptDelay = 200 * time.Millisecond // the store waits for company
	h.ledger.mu.Unlock()
	msg := strings.Replace(crlf(htmlMsg), "Subject:", "Message-ID: <found.1@example.com>\r\nSubject:", 1)
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	// Pending first: the message leaves it only once the ledger has it.
	env, pending := h.d.Pending("alice", id)
	h.ledger.mu.Lock()
	known := h.ledger.accepted[id] != nil
	h.ledger.mu.Unlock()
	if !known && !pending {
		t.Fatal("right after the 250 the message is neither in the ledger nor pending")
	}
	if pending {
		if env.ID != id {
			t.Errorf("Pending by queue id gave %s", env.ID)
		}
		for _, ref := range []string{"found.1@example.com", "<found.1@example.com>"} {
			if e, ok := h.d.Pending("alice", ref); !ok || e.ID != id {
				t.Errorf("Pending by Message-ID %q: %v %v", ref, e, ok)
			}
		}
		if _, ok := h.d.Pending("mallory", id); ok {
			t.Error("Pending gave another account's message")
		}
	}
	h.ledger.waitAccepted(t, id)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := h.d.Pending("alice", id); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still pending long after the ledger has it")
		}
	}

	h.ledger.mu.Lock()
	h.ledger.acceptDelay = 0
	h.ledger.failAccepted = 1
	h.ledger.mu.Unlock()
	reply, err = h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatalf("a failing ledger refused the message: %v", err)
	}
	id = queueID(t, reply)
	h.ledger.waitAccepted(t, id)
	h.ledger.waitStatus(t, id, 0, StatusDelivered)
}

// SetAccounts swaps the table for the sessions that start afterwards: an
// added account can AUTH, a removed one cannot, and a session that
// authenticated before the swap keeps its account and sends.
func TestServer_setAccounts(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	before := h.client()
	if err := before.Auth(sasl.NewPlainClient("", "alice", testPassword)); err != nil {
		t.Fatal(err)
	}
	if err := h.client().Auth(sasl.NewPlainClient("", "carol", testPassword)); smtpCode(err) != 535 {
		t.Fatalf("carol before SetAccounts: want 535, got %v", err)
	}

	h.srv.SetAccounts([]Account{{Name: "carol", PasswordHash: cheapHash}})
	if _, err := sendOn(before, "alice@example.com", []string{"bob@example.net"}, htmlMsg); err != nil {
		t.Errorf("session authenticated before SetAccounts: %v", err)
	}
	if err := h.client().Auth(sasl.NewPlainClient("", "alice", testPassword)); smtpCode(err) != 535 {
		t.Errorf("alice, removed: want 535, got %v", err)
	}
	c := h.client()
	if err := c.Auth(sasl.NewPlainClient("", "carol", testPassword)); err != nil {
		t.Fatalf("carol after SetAccounts: %v", err)
	}
	if _, err := sendOn(c, "carol@example.com", []string{"bob@example.net"}, htmlMsg); err != nil {
		t.Errorf("carol sends: %v", err)
	}
}
