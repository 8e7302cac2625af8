package rewrite

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-message"
)

// RFC 5322 section 4.5.3 (obs-optional): white space before the colon of a
// field in a part header. The part's Content-Type and its transfer encoding
// are read through it, and the part is instrumented; its header stays as it
// was but for the Content-Transfer-Encoding, written anew with the part.
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
	want := strings.Replace(in[:strings.Index(in, "<html>")], "Content-Transfer-Encoding\t: quoted-printable", "Content-Transfer-Encoding: quoted-printable", 1)
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

// A re-encoded part gets a clean Content-Transfer-Encoding field, so that a
// strict reader (one that takes "quoted-printable;" for an unknown encoding
// and shows the text as it is) decodes it; the field stays where it was and
// keeps its line ending, the other fields do not change. An encoding that
// is not one of the five is left alone, and so is the part.
func TestTransferEncodingHeaderCleaned(t *testing.T) {
	const doc = `<html><body><p style="color:red">Hi</p><a href="https://example.com/q?a=1&amp;b=2">quote</a></body></html>`
	qp := string(encodeQP(nil, []byte(doc), "\r\n"))
	b64 := string(encodeBase64(nil, []byte(doc), "\r\n"))
	msg := func(cte, body string) string {
		return crlf("From: a@example.com\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"b\"\n\n"+
			"--b\nContent-Type: text/html; charset=us-ascii\n") + "Content-Transfer-Encoding:" + cte + "\r\n" +
			crlf("X-After: kept\n\n") + body + crlf("\n--b--\n")
	}
	for _, c := range []struct{ cte, body, want string }{
		{" quoted-printable;", qp, "quoted-printable"},
		{" BASE64 ;charset=utf-8", b64, "base64"},
		{"  Quoted-Printable ", qp, "quoted-printable"},
		{"\r\n\tquoted-printable", qp, "quoted-printable"},
	} {
		in := msg(c.cte, c.body)
		out, res := rewrite(t, in, allOpts(newRecMinter()))
		if res.HTMLParts != 1 || len(res.Links) != 1 || res.Links[0] != "https://example.com/q?a=1&b=2" {
			t.Fatalf("%q: %+v", c.cte, res)
		}
		wantHead := strings.Replace(in[:strings.Index(in, "X-After: kept\r\n\r\n")], "Content-Transfer-Encoding:"+c.cte+"\r\n",
			"Content-Transfer-Encoding: "+c.want+"\r\n", 1) + "X-After: kept\r\n\r\n"
		if !strings.HasPrefix(out, wantHead) {
			t.Errorf("%q: header:\n%s", c.cte, out[:strings.Index(out, "X-After")])
		}
		html := strictHTML(t, out)
		if !strings.Contains(html, `<p style="color:red">Hi</p>`) || !strings.Contains(html, testBase+"/c/0") || strings.Contains(html, "=3D") {
			t.Errorf("%q: a strict reader sees:\n%s", c.cte, html)
		}
	}

	// A clean field stays byte for byte, LF line endings included.
	in := strings.ReplaceAll(msg(" quoted-printable", qp), "\r\n", "\n")
	if out, _ := rewrite(t, in, allOpts(newRecMinter())); !strings.HasPrefix(out, in[:strings.Index(in, "X-After: kept\n\n")+len("X-After: kept\n\n")]) {
		t.Errorf("a clean field changed:\n%s", out)
	}
	// Two fields: the first, which readers use, is cleaned; the other dropped.
	in = strings.Replace(msg(" quoted-printable;", qp), "X-After", "Content-Transfer-Encoding: 8bit\r\nX-After", 1)
	out, _ := rewrite(t, in, allOpts(newRecMinter()))
	if !strings.Contains(out, "Content-Transfer-Encoding: quoted-printable\r\nX-After: kept\r\n\r\n") || strings.Count(out, "Content-Transfer-Encoding") != 1 {
		t.Errorf("two fields:\n%s", out)
	}

	// Unknown encodings: the message is copied as it is.
	for _, cte := range []string{" x-uuencode", " qp", " quoted printable", " base-64;"} {
		in := msg(cte, qp)
		if out, res := rewrite(t, in, allOpts(newRecMinter())); res.Changed || out != in || res.Skipped != SkipEncoding {
			t.Errorf("%q: %+v", cte, res)
		}
	}
}

// The corpus message whose HTML is labelled "quoted-printable;" comes out
// with a clean field that a strict reader decodes.
func TestTransferEncodingSemicolonCorpus(t *testing.T) {
	corpusFiles(t)
	in, err := os.ReadFile(filepath.Join(corpusDir, "mikel-mail--error_emails--content_transfer_encoding_with_semi_colon.eml"))
	if err != nil {
		t.Fatal(err)
	}
	out, res := rewrite(t, string(in), allOpts(newRecMinter()))
	if res.HTMLParts != 1 {
		t.Fatalf("%+v", res)
	}
	if strings.Contains(out, "quoted-printable;") || !strings.Contains(out, "Content-Type: text/html;\r\n\tcharset=\"us-ascii\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n") {
		t.Errorf("the HTML part's header is not clean")
	}
	html := strictHTML(t, out)
	if strings.Contains(html, "=3D") || !strings.Contains(html, `<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=us-ascii">`) {
		t.Errorf("a strict reader sees quoted-printable codes:\n%.600s", html)
	}
}

// strictHTML returns the decoded text/html part of msg as go-message reads
// it, taking the Content-Transfer-Encoding value as it is: an unknown
// encoding fails the test.
func strictHTML(t *testing.T, msg string) string {
	t.Helper()
	e, err := message.Read(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	var html []byte
	err = e.Walk(func(_ []int, p *message.Entity, err error) error {
		if err != nil {
			return err
		}
		if mt, _, _ := p.Header.ContentType(); mt == "text/html" {
			html, err = io.ReadAll(p.Body)
		}
		return err
	})
	if err != nil {
		t.Fatalf("strict reader: %v", err)
	}
	return string(html)
}
