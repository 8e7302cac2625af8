package relay

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// sendUTF8 submits msg as alice with AUTH PLAIN and SMTPUTF8 on MAIL.
func (h *harness) sendUTF8(from string, to []string, msg string) (string, error) {
	return h.sendWith(&smtp.MailOptions{UTF8: true}, from, to, msg)
}

// wantSMTPError fails unless err is an SMTP reply with code and enhanced code.
func wantSMTPError(t *testing.T, what string, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || se.EnhancedCode != enh {
		t.Errorf("%s: got %v, want %d %d.%d.%d", what, err, code, enh[0], enh[1], enh[2])
	}
}

// utf8Msg is an internationalized message: UTF-8 in From, To and Subject.
const utf8Msg = `From: Zoë <zoë@example.net>
To: Jürgen <user@bücher.example>, 用户@例子.广告
Subject: Grüße aus Köln
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<html><body><p>Grüße, <a href="https://example.com/angebot?id=1">das Angebot</a>.</p></body></html>
`

// asciiHeaderMsg has an all-ASCII header; its body is UTF-8 (8BITMIME, not
// SMTPUTF8, covers that).
const asciiHeaderMsg = `From: Alice <alice@example.com>
Subject: Your quote
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<html><body><p>Grüße, <a href="https://example.com/quote?id=1">the quote</a>.</p></body></html>
`

func TestServer_smtputf8OfferedAndAccepted(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true, upSMTPUTF8: true})
	c := h.client()
	if ok, _ := c.Extension("SMTPUTF8"); !ok {
		t.Fatal("EHLO does not offer SMTPUTF8")
	}
	rcpts := []string{"user@bücher.example", "user@xn--bcher-kva.example", "用户@例子.广告"}
	reply, err := h.sendUTF8("zoë@example.net", rcpts, crlf(utf8Msg))
	if err != nil {
		t.Fatalf("SMTPUTF8 submission: %v", err)
	}
	id := queueID(t, reply)
	env := h.ledger.waitAccepted(t, id)
	if !env.SMTPUTF8 || env.From != "zoë@example.net" {
		t.Errorf("spooled envelope: SMTPUTF8 %v, from %q", env.SMTPUTF8, env.From)
	}
	for i, rc := range env.Recipients {
		if rc.Address != rcpts[i] {
			t.Errorf("recipient %d recorded as %q, want %q", i, rc.Address, rcpts[i])
		}
	}
	msgs := h.sink.waitFor(t, 3)
	got := map[string]sunk{}
	for _, m := range msgs {
		got[m.To] = m
	}
	for _, r := range rcpts {
		m, ok := got[r]
		if !ok {
			t.Errorf("no copy reached the upstream with RCPT <%s>; got %v", r, keys(got))
			continue
		}
		if !m.UTF8 || m.From != "zoë@example.net" {
			t.Errorf("copy to %s: MAIL FROM <%s>, SMTPUTF8 %v; want <zoë@example.net> with SMTPUTF8", r, m.From, m.UTF8)
		}
		for _, want := range []string{"Subject: Grüße aus Köln", "From: Zoë <zoë@example.net>", "with UTF8SMTPA id " + id} {
			if !bytes.Contains(m.Data, []byte(want)) {
				t.Errorf("copy to %s lacks %q:\n%s", r, want, m.Data)
			}
		}
	}
}

func keys(m map[string]sunk) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestServer_nonASCIIAddressNeedsSMTPUTF8(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client()
	if err := c.Auth(sasl.NewPlainClient("", "alice", testPassword)); err != nil {
		t.Fatal(err)
	}
	// RFC 6531 section 3.5: 553 with X.6.7 for a non-ASCII address in a
	// transaction without SMTPUTF8.
	wantSMTPError(t, "MAIL FROM:<zoë@example.net> without SMTPUTF8", c.Mail("zoë@example.net", nil),
		553, smtp.EnhancedCode{5, 6, 7})
	wantSMTPError(t, "MAIL FROM with an invalid A-label", c.Mail("alice@xn--zz.example", nil),
		553, smtp.EnhancedCode{5, 1, 7})
	if err := c.Mail("alice@example.com", nil); err != nil {
		t.Fatal(err)
	}
	wantSMTPError(t, "RCPT TO:<zoë@example.net> without SMTPUTF8", c.Rcpt("zoë@example.net", nil),
		553, smtp.EnhancedCode{5, 6, 7})
	wantSMTPError(t, "RCPT TO:<user@bücher.example> without SMTPUTF8", c.Rcpt("user@bücher.example", nil),
		553, smtp.EnhancedCode{5, 6, 7})
	wantSMTPError(t, "RCPT with an invalid A-label", c.Rcpt("user@xn--zz.example", nil),
		553, smtp.EnhancedCode{5, 1, 3})
	// An A-label is ASCII: no SMTPUTF8 needed.
	if err := c.Rcpt("user@xn--bcher-kva.example", nil); err != nil {
		t.Errorf("RCPT with a valid A-label: %v", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	// With SMTPUTF8, a label must still be a valid U-label.
	if err := c.Mail("alice@example.com", &smtp.MailOptions{UTF8: true}); err != nil {
		t.Fatal(err)
	}
	wantSMTPError(t, "RCPT with an invalid U-label", c.Rcpt("user@bü_cher.example", nil),
		553, smtp.EnhancedCode{5, 1, 3})
	if err := c.Rcpt("zoë@example.net", nil); err != nil {
		t.Errorf("RCPT TO:<zoë@example.net> with SMTPUTF8: %v", err)
	}
}

func TestServer_selfAddressMatchesIDNForms(t *testing.T) {
	h := newHarness(t, harnessOpts{selfAddrs: []string{"alice@bücher.example"}})
	reply, err := h.send("alice@example.com", []string{"alice@xn--bcher-kva.example", "bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	env := h.ledger.waitAccepted(t, queueID(t, reply))
	if env.Recipients[0].Tracked || !env.Recipients[1].Tracked {
		t.Errorf("tracked: self address in A-label form %v (want false), other %v (want true)",
			env.Recipients[0].Tracked, env.Recipients[1].Tracked)
	}
}

func TestDelivery_smtputf8UpstreamWithoutItBounces(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	// zoë is a Bcc: the header stays ASCII, so bob's copy can go.
	reply, err := h.sendUTF8("alice@example.com", []string{"zoë@example.net", "bob@example.net"},
		crlf("To: bob@example.net\n"+asciiHeaderMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	r := h.ledger.waitStatus(t, id, 0, StatusBounced)
	if !strings.HasPrefix(r.LastResponse, "553 5.6.7 ") || r.Attempts != 1 {
		t.Errorf("copy to zoë: %d attempts, last response %q; want one, 553 5.6.7", r.Attempts, r.LastResponse)
	}
	h.ledger.waitStatus(t, id, 1, StatusDelivered)
	msgs := h.sink.waitFor(t, 2)
	var dsn *sunk
	for i, m := range msgs {
		switch m.To {
		case "zoë@example.net":
			t.Errorf("a copy to zoë reached an upstream without SMTPUTF8")
		case "bob@example.net":
			if m.UTF8 {
				t.Errorf("bob's copy went with SMTPUTF8 to an upstream that does not offer it")
			}
		case "alice@example.com":
			dsn = &msgs[i]
		}
	}
	if dsn == nil {
		t.Fatalf("no bounce reached the sender; sink: %d messages", len(msgs))
	}
	e, err := message.Read(bytes.NewReader(dsn.Data))
	if err != nil {
		t.Fatal(err)
	}
	if mt, params, _ := e.Header.ContentType(); mt != "multipart/report" || params["report-type"] != "global-delivery-status" {
		t.Errorf("bounce content type %s %v", mt, params)
	}
	for _, want := range []string{"Content-Type: message/global-delivery-status", "Final-Recipient: utf-8; zoë@example.net",
		"Action: failed", "Status: 5.6.7", "Diagnostic-Code: smtp; 553 5.6.7 Upstream does not offer SMTPUTF8",
		"Content-Type: text/plain; charset=utf-8", "<zoë@example.net>: 553 5.6.7"} {
		if !bytes.Contains(dsn.Data, []byte(want)) {
			t.Errorf("bounce lacks %q:\n%s", want, dsn.Data)
		}
	}
}

func TestDelivery_smtputf8NotNeededGoesWithoutIt(t *testing.T) {
	// Declared, but nothing non-ASCII but a U-label domain: the copy goes
	// to an upstream without SMTPUTF8, its domain in A-labels.
	h := newHarness(t, harnessOpts{upstream: true})
	reply, err := h.sendUTF8("alice@example.com", []string{"user@bücher.example"},
		crlf("To: user@xn--bcher-kva.example\n"+asciiHeaderMsg))
	if err != nil {
		t.Fatal(err)
	}
	h.ledger.waitStatus(t, queueID(t, reply), 0, StatusDelivered)
	m := h.sink.waitFor(t, 1)[0]
	if m.To != "user@xn--bcher-kva.example" || m.From != "alice@example.com" || m.UTF8 {
		t.Errorf("upstream got MAIL FROM <%s> (SMTPUTF8 %v) RCPT TO <%s>; want <alice@example.com>, no SMTPUTF8, <user@xn--bcher-kva.example>",
			m.From, m.UTF8, m.To)
	}
}

func TestDelivery_smtputf8HeaderNeedsUpstreamSupport(t *testing.T) {
	partHeader := crlf(`From: Alice <alice@example.com>
To: bob@example.net
Subject: Angebot
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="B"

--B
Content-Type: text/plain; charset=utf-8

Anbei das Angebot.
--B
Content-Type: application/pdf
Content-Disposition: attachment; filename="Angebot für Zoë.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--B--
`)
	for _, tc := range []struct{ name, msg string }{
		{"message header", crlf(utf8Msg)},
		{"part header", partHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, offered := range []bool{false, true} {
				h := newHarness(t, harnessOpts{upstream: true, upSMTPUTF8: offered})
				reply, err := h.sendUTF8("alice@example.com", []string{"bob@example.net"}, tc.msg)
				if err != nil {
					t.Fatal(err)
				}
				id := queueID(t, reply)
				if !offered {
					r := h.ledger.waitStatus(t, id, 0, StatusBounced)
					if !strings.HasPrefix(r.LastResponse, "554 5.6.9 ") {
						t.Errorf("upstream without SMTPUTF8: last response %q, want 554 5.6.9", r.LastResponse)
					}
					continue
				}
				h.ledger.waitStatus(t, id, 0, StatusDelivered)
				if m := h.sink.waitFor(t, 1)[0]; !m.UTF8 || m.To != "bob@example.net" {
					t.Errorf("upstream with SMTPUTF8 got RCPT <%s>, SMTPUTF8 %v", m.To, m.UTF8)
				}
			}
		})
	}
}

func TestDelivery_bounceToUTF8SenderUsesSMTPUTF8(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true, upSMTPUTF8: true})
	h.sink.reply = func(rcpt string, n int) error {
		if rcpt == "nobody@example.net" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	reply, err := h.sendUTF8("zoë@example.net", []string{"nobody@example.net"}, crlf(utf8Msg))
	if err != nil {
		t.Fatal(err)
	}
	h.ledger.waitStatus(t, queueID(t, reply), 0, StatusBounced)
	dsn := h.sink.waitFor(t, 1)[0]
	if dsn.To != "zoë@example.net" || dsn.From != "" || !dsn.UTF8 {
		t.Fatalf("bounce went MAIL FROM <%s> (SMTPUTF8 %v) RCPT TO <%s>; want <>, SMTPUTF8, <zoë@example.net>", dsn.From, dsn.UTF8, dsn.To)
	}
	for _, want := range []string{"To: <zoë@example.net>", "report-type=delivery-status",
		"Final-Recipient: rfc822; nobody@example.net", "Status: 5.1.1",
		"Content-Type: message/global-headers", "Subject: Grüße aus Köln"} {
		if !bytes.Contains(dsn.Data, []byte(want)) {
			t.Errorf("bounce lacks %q:\n%s", want, dsn.Data)
		}
	}
}

func TestDKIMSign_internationalizedFromDomain(t *testing.T) {
	for _, configured := range []string{"xn--bcher-kva.example", "Bücher.example"} {
		s, err := NewDKIMSigner([]DKIMKey{{Domain: configured, Selector: "s1", Signer: testEdKey()}})
		if err != nil {
			t.Fatal(err)
		}
		z := dkimDNS{}
		z.add(t, "s1", "xn--bcher-kva.example", testEdKey())
		msg := crlf(`From: Zoë <zoë@bücher.example>
To: Jürgen <user@bücher.example>
Subject: Grüße
Date: Thu, 16 Apr 2026 07:30:00 +0200
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Grüße
`)
		sig, err := s.Sign(strings.NewReader(msg))
		if err != nil {
			t.Fatalf("key configured as %s: %v", configured, err)
		}
		signed := []byte(sig + msg)
		if d := dkimTag(sigField(t, signed), "d"); d != "xn--bcher-kva.example" {
			t.Errorf("key configured as %s: d=%s, want the A-label form", configured, d)
		}
		if d := verifyDKIM(t, bytes.NewReader(signed), z); len(d) != 1 {
			t.Errorf("key configured as %s: verified %v", configured, d)
		}
	}
}

func TestUTF8Headers(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		want      bool
	}{
		{"ascii", "Subject: hi\r\n\r\nGrüße\r\n", false},
		{"subject", "Subject: Grüße\r\n\r\nhi\r\n", true},
		{"folded continuation", "Subject: hello\r\n wörld\r\n\r\nhi\r\n", true},
		{"nested part", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" +
			"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nGrüße\r\n" +
			"--b\r\nContent-Type: text/plain; name=\"ä.txt\"\r\n\r\nx\r\n--b--\r\n--a--\r\n", true},
		{"ascii parts, utf-8 content", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n--a--\r\n", false},
		{"message/rfc822", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" +
			"Content-Type: message/rfc822\r\n\r\nSubject: Grüße\r\n\r\nx\r\n--a--\r\n", true},
		{"message/global is content", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" +
			"Content-Type: message/global\r\n\r\nSubject: Grüße\r\n\r\nx\r\n--a--\r\n", false},
		{"unparsable content type", "Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\nX-A: ä\r\n", false},
	} {
		got, err := utf8Headers(strings.NewReader(tc.msg))
		if err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := utf8Headers(io.MultiReader(strings.NewReader("Subject: a\r\n"), errReader{})); err == nil {
		t.Error("a read error is not reported")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestASCIIAddress(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"alice@example.com", "alice@example.com", true},
		{"", "", true},
		{"user@bücher.example", "user@xn--bcher-kva.example", true},
		{"user@Bücher.EXAMPLE", "user@xn--bcher-kva.EXAMPLE", true},
		{"用户@例子.广告", "", false},
		{"zoë@xn--bcher-kva.example", "", false},
	} {
		got, ok := asciiAddress(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("asciiAddress(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	if !sameAddress("Alice@bücher.example", "alice@XN--BCHER-KVA.example") || sameAddress("alice@bücher.example", "alice@bucher.example") {
		t.Error("sameAddress does not compare domains in A-label form")
	}
}

func TestUTF8AddrUnitext(t *testing.T) {
	if got, want := utf8AddrUnitext("zoë+tag=x\\y z@bücher.example"), `zoë\x{2B}tag\x{3D}x\x{5C}y\x{20}z@bücher.example`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
