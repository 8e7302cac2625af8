package rewrite

import (
	"strings"
	"testing"
)

// RFC 5322 section 4.5.3 (obs-optional): white space before the colon of a
// field in a part header. The part's Content-Type and its transfer encoding
// are read through it, and the part is instrumented; its header stays as it
// was.
func TestObsoleteSyntaxInPartHeader(t *testing.T) {
	partHead := crlf("Content-Type : text/html; charset=utf-8\n" +
		"Content-Transfer-Encoding\t: quoted-printable\n" +
		"Content-Description: folded with\n \n a blank line (obs-FWS)\n\n")
	in := crlf("From: a@example.com\nSubject : hi\nMIME-Version: 1.0\n"+
		"Content-Type: multipart/alternative; boundary=\"b\"\n\n"+
		"--b\nContent-Type: text/plain\n\nhi\n--b\n") + partHead +
		crlf("<html><body><a href=3D\"https://example.com/a?x=3D1\">a</a></body></html>\n--b--\n")
	out, res := rewrite(t, in, allOpts(newRecMinter()))
	if res.HTMLParts != 1 || len(res.Links) != 1 || res.Links[0] != "https://example.com/a?x=1" {
		t.Fatalf("HTMLParts %d, Links %q: the part was not read as quoted-printable HTML", res.HTMLParts, res.Links)
	}
	want := in[:strings.Index(in, "<html>")]
	if !strings.HasPrefix(out, want) {
		t.Errorf("headers changed:\n%s", out)
	}
	hs := htmlOf(t, out)
	if len(hs) != 1 || pixelCount(hs[0]) != 1 {
		t.Errorf("decoded HTML: %q", hs)
	}
}

// A DKIM-Signature in obsolete syntax after a broken header line still
// keeps the message from being edited.
func TestLateDKIMSignatureInObsoleteSyntax(t *testing.T) {
	in := crlf("From: a@example.com\n" +
		"Content-Type: multipart/alternative; boundary=b\n" +
		"this line breaks the header\n" +
		"DKIM-Signature : v=1; a=rsa-sha256; d=example.com; s=s; b=abc\n\n" +
		"--b\nContent-Type: text/html\n\n<body><a href=\"https://x.example/1\">1</a></body>\n--b--\n")
	if out, res := rewrite(t, in, allOpts(newRecMinter())); res.Changed || out != in || res.Skipped != SkipDKIM {
		t.Errorf("late obsolete-syntax DKIM-Signature: %+v", res)
	}
}
