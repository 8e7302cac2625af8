package relay

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
)

// A field with white space before its colon (RFC 5322 section 4.5.3,
// obs-optional, which a receiver must accept) is a field: the header goes
// on after it, byte for byte, and the HTML body is instrumented.
func TestDelivery_obsoleteFieldSyntaxKeepsHeader(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	header := crlf("From: Alice <alice@example.com>\n" +
		"Subject : hi\n" +
		"To: Bob <bob@example.net>\n" +
		"MIME-Version: 1.0\n" +
		"Content-Type: text/html; charset=utf-8\n\n")
	body := crlf(`<html><body><p>See <a href="https://example.com/quote">the quote</a>.</p></body></html>` + "\n")
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, header+body)
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	got := h.sink.waitFor(t, 1)[0].Data

	// The header arrives whole, as sent, after the relay's own fields, and
	// ends where it ended: one empty line, then the HTML.
	end := bytes.Index(got, []byte("\r\n\r\n"))
	if end < 0 || !strings.HasSuffix(string(got[:end+4]), header) {
		t.Fatalf("the header did not arrive as sent:\n%s", got)
	}
	if !bytes.HasPrefix(got[end+4:], []byte("<html><body>")) {
		t.Errorf("the body does not start with the HTML:\n%s", got[end+4:])
	}
	hdr, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(got)))
	if err != nil {
		t.Fatal(err)
	}
	if s := hdr.Get("Subject"); s != "hi" {
		t.Errorf("Subject %q upstream, want hi", s)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q upstream", ct)
	}
	html := htmlOf(t, got)
	if !strings.Contains(html, `href="http://t.test/c/`+id) || !strings.Contains(html, "http://t.test/o/"+id) {
		t.Errorf("the HTML was not instrumented:\n%s", html)
	}
}
