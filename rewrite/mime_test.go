package rewrite

import (
	"strings"
	"testing"
)

// Parts copied in blocks of lines: lines that start with "--" but are not
// delimiters (inside an attachment, or a prefix of an outer boundary),
// nested multiparts and padded delimiters, at sizes that put block edges
// anywhere in the read buffer. Every byte but the instrumented HTML must
// come out as it went in, and the HTML parts after the copied parts must
// still be found and instrumented.
func TestBlockCopyKeepsDelimiters(t *testing.T) {
	for _, size := range []int{0, 1, 100, 4095, 4096, 4097, 70000, 300000} {
		var att strings.Builder
		for i := 0; att.Len() < size; i++ {
			switch i % 7 {
			case 3:
				att.WriteString("--outer-not-quite\n")
			case 5:
				att.WriteString("--inner x\n") // not a delimiter of inner
			default:
				att.WriteString(strings.Repeat("QUJD", 19) + "\n")
			}
		}
		msg := crlf("From: a@example.com\n" +
			"MIME-Version: 1.0\n" +
			"Content-Type: multipart/mixed; boundary=\"outer\"\n\n" +
			"preamble\n--not-a-delimiter\n" +
			"--outer\n" +
			"Content-Type: multipart/alternative; boundary=\"inner\"\n\n" +
			"--inner\nContent-Type: text/plain\n\nplain text\n--inner-ish\n" +
			"--inner \t\nContent-Type: text/html\n\n<html><body><a href=\"https://example.com/a\">a</a></body></html>\n" +
			"--inner--\nepilogue of inner\n--out\n" +
			"--outer\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n" +
			att.String() +
			"--outer\nContent-Type: text/html\n\n<html><body><a href=\"https://example.com/b\">b</a></body></html>\n" +
			"--outer--\nepilogue\n--outer\n")
		out, res := rewrite(t, msg, allOpts(newRecMinter()))
		if res.HTMLParts != 2 || len(res.Links) != 2 {
			t.Fatalf("size %d: %d HTML parts and links %v, want 2 and 2", size, res.HTMLParts, res.Links)
		}
		// Everything up to the second HTML part is unchanged but for the
		// first HTML part; the attachment is there byte for byte.
		if !strings.Contains(out, crlf("--outer\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n")+crlf(att.String())+"--outer\r\n") {
			t.Fatalf("size %d: attachment or its delimiters changed", size)
		}
		if !strings.HasPrefix(out, msg[:strings.Index(msg, "<html>")]) {
			t.Fatalf("size %d: the start of the message changed", size)
		}
		if !strings.HasSuffix(out, crlf("--outer--\nepilogue\n--outer\n")) {
			t.Fatalf("size %d: the end of the message changed", size)
		}
	}
}
