package rewrite

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime/quotedprintable"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// htmlMessage wraps an HTML body into a single-part CRLF message.
func htmlMessage(extraHeaders, body string) string {
	return crlf("From: a@example.com\nTo: b@example.org\nSubject: t\n" + extraHeaders +
		"MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n" + body)
}

// trackedHTML rewrites an HTML body with every option on and returns the new
// HTML, the result and the minter.
func trackedHTML(t *testing.T, extraHeaders, body string) (string, Result, *recMinter) {
	t.Helper()
	m := newRecMinter()
	out, res := rewrite(t, htmlMessage(extraHeaders, body), allOpts(m))
	hs := htmlOf(t, out)
	if len(hs) != 1 {
		t.Fatalf("%d html parts", len(hs))
	}
	if len(m.bad) > 0 {
		t.Fatalf("minter: %v", m.bad)
	}
	return strings.ReplaceAll(hs[0], "\r\n", "\n"), res, m
}

func TestLinkSchemes(t *testing.T) {
	body := `<html><body>
<a href="http://a.example/1">one</a>
<a href="HTTPS://b.example/2">two</a>
<map><area href="https://c.example/3" alt="x"></map>
<a href="mailto:x@example.com">m</a>
<a href="tel:+123">t</a>
<a href="sms:+123">s</a>
<a href="#top">f</a>
<a href="cid:img1">c</a>
<a href="data:text/plain,hi">d</a>
<a href="javascript:alert(1)">j</a>
<a href="/relative/path">r</a>
<a href="relative.html">r2</a>
<a href="//proto.example/rel">pr</a>
<a href="ftp://files.example/x">ftp</a>
<a href="http:///nohost">nh</a>
<a>no href</a>
</body></html>`
	doc, res, m := trackedHTML(t, "", body)
	want := []string{"http://a.example/1", "HTTPS://b.example/2", "https://c.example/3"}
	if !slices.Equal(res.Links, want) {
		t.Fatalf("Links = %q, want %q", res.Links, want)
	}
	for i, d := range want {
		if m.dests[i] != d {
			t.Errorf("minted %d = %q, want %q", i, m.dests[i], d)
		}
	}
	var got []string
	for _, l := range linksOf(doc) {
		if i, ok := clickIndex(l.href); ok {
			got = append(got, want[i])
		} else {
			got = append(got, l.href)
		}
	}
	wantHrefs := []string{"http://a.example/1", "HTTPS://b.example/2", "https://c.example/3",
		"mailto:x@example.com", "tel:+123", "sms:+123", "#top", "cid:img1", "data:text/plain,hi",
		"javascript:alert(1)", "/relative/path", "relative.html", "//proto.example/rel",
		"ftp://files.example/x", "http:///nohost"}
	if !slices.Equal(got, wantHrefs) {
		t.Fatalf("hrefs:\n got %q\nwant %q", got, wantHrefs)
	}
	if res.Pixels != 1 || pixelCount(doc) != 1 || res.HTMLParts != 1 {
		t.Fatalf("pixels %d/%d, parts %d", res.Pixels, pixelCount(doc), res.HTMLParts)
	}
}

func TestLinkDestinationExact(t *testing.T) {
	cases := []struct{ href, dest string }{
		{`https://x.example/a?b=1&amp;c=2`, `https://x.example/a?b=1&c=2`},
		{`https://x.example/p%20q%2Fr?s=a+b&amp;t=%E2%82%AC`, `https://x.example/p%20q%2Fr?s=a+b&t=%E2%82%AC`},
		{`https://user@x.example/[v6]?q=[1]&amp;r={2}`, `https://user@x.example/[v6]?q=[1]&r={2}`},
		{`https://x.example/?a=1&copy=2&amp;reg=3&not`, `https://x.example/?a=1&copy=2&reg=3¬`},
		{`https://x.example/?x=&#38;&#x26;y`, `https://x.example/?x=&&y`},
		{"\n   https://x.example/trim  \n", `https://x.example/trim`},
		{"https://x.example/long/\npath", `https://x.example/long/path`},
		{`https://x.example/` + strings.Repeat("segment/", 300) + `end`, `https://x.example/` + strings.Repeat("segment/", 300) + `end`},
	}
	for _, c := range cases {
		doc, res, m := trackedHTML(t, "", `<body><a href="`+c.href+`">go</a></body>`)
		if len(res.Links) != 1 || res.Links[0] != c.dest || m.dests[0] != c.dest {
			t.Errorf("href %q: dest %q (links %q), want %q", c.href, m.dests[0], res.Links, c.dest)
			continue
		}
		ls := linksOf(doc)
		if len(ls) != 1 || ls[0].href != testBase+`/c/0?k=v&q="x"` {
			t.Errorf("href %q rewritten to %q", c.href, ls)
		}
		if !strings.Contains(doc, `href="`+testBase+`/c/0?k=v&amp;q=&quot;x&quot;"`) {
			t.Errorf("href not attribute-escaped: %s", doc)
		}
	}
}

func TestUnquotedAndUpperCaseAttributes(t *testing.T) {
	body := `<BODY><A HREF=https://x.example/u?a=1&amp;b=2 TARGET=_blank>Up</A>` +
		`<a class=x href = 'https://x.example/s' >Single</a>` +
		`<a title="a>b" Href="https://x.example/gt">Gt</a></BODY>`
	doc, res, _ := trackedHTML(t, "", body)
	want := []string{"https://x.example/u?a=1&b=2", "https://x.example/s", "https://x.example/gt"}
	if !slices.Equal(res.Links, want) {
		t.Fatalf("Links = %q", res.Links)
	}
	q := `"` + testBase + `/c/%d?k=v&amp;q=&quot;x&quot;"`
	for _, s := range []string{
		`<A HREF=` + strings.Replace(q, "%d", "0", 1) + ` TARGET=_blank>Up</A>`,
		`<a class=x href = ` + strings.Replace(q, "%d", "1", 1) + ` >Single</a>`,
		`<a title="a>b" Href=` + strings.Replace(q, "%d", "2", 1) + `>Gt</a>`,
	} {
		if !strings.Contains(doc, s) {
			t.Errorf("missing %s in\n%s", s, doc)
		}
	}
}

func TestLeftAlone(t *testing.T) {
	hdr := "List-Unsubscribe: <mailto:u@example.com>,\n <https://news.example/unsub?u=1&l=2>\n"
	body := `<body>
<a href="https://x.example/notrack" data-notrack>a</a>
<a data-notrack="" href="https://x.example/notrack2">b</a>
<a href="https://t.example.com/c/already">c</a>
<a href="https://T.EXAMPLE.COM">c2</a>
<a href="https://t.example.com.evil.example/x">evil</a>
<a href="https://news.example/unsub?u=1&amp;l=2">unsub</a>
<a href="https://x.example/v">https://x.example/v</a>
<a href="https://x.example/w"> <b>www.x.example</b></a>
<a href="https://x.example/n">Nice text</a>
</body>`
	doc, res, _ := trackedHTML(t, hdr, body)
	if want := []string{"https://t.example.com.evil.example/x", "https://x.example/n"}; !slices.Equal(res.Links, want) {
		t.Fatalf("Links = %q, want %q", res.Links, want)
	}
	for _, s := range []string{
		`<a href="https://x.example/notrack">a</a>`,
		`<a href="https://x.example/notrack2">b</a>`,
		`<a href="https://t.example.com/c/already">c</a>`,
		`<a href="https://news.example/unsub?u=1&amp;l=2">unsub</a>`,
		`<a href="https://x.example/v">https://x.example/v</a>`,
		`<a href="https://x.example/w"> <b>www.x.example</b></a>`,
	} {
		if !strings.Contains(doc, s) {
			t.Errorf("missing %s in\n%s", s, doc)
		}
	}
	if strings.Contains(doc, "data-notrack") {
		t.Errorf("data-notrack kept")
	}
}

func TestSameDestinationSharesIndexAcrossParts(t *testing.T) {
	in := crlf(`From: a@example.com
Content-Type: multipart/mixed; boundary=b1

--b1
Content-Type: text/html

<body><a href="https://x.example/1">1</a><a href="https://x.example/2">2</a></body>
--b1
Content-Type: text/html

<body><a href="https://x.example/2">2</a><a href="https://x.example/3">3</a></body>
--b1--
`)
	m := newRecMinter()
	out, res := rewrite(t, in, allOpts(m))
	if want := []string{"https://x.example/1", "https://x.example/2", "https://x.example/3"}; !slices.Equal(res.Links, want) {
		t.Fatalf("Links = %q", res.Links)
	}
	if res.HTMLParts != 2 || res.Pixels != 2 {
		t.Fatalf("parts %d pixels %d", res.HTMLParts, res.Pixels)
	}
	hs := htmlOf(t, out)
	var idx []int
	for _, h := range hs {
		for _, l := range linksOf(h) {
			i, _ := clickIndex(l.href)
			idx = append(idx, i)
		}
	}
	if !slices.Equal(idx, []int{0, 1, 1, 2}) {
		t.Fatalf("indexes %v", idx)
	}
}

func TestOutlookVMLButton(t *testing.T) {
	body := `<body><div><!--[if mso]>
  <v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" HREF="https://x.example/cta?a=1&amp;b=2" style="height:40px;width:200px" arcsize="10%" fillcolor="#1a73e8">
    <w:anchorlock/><center style="color:#fff">Book now</center>
  </v:roundrect>
<![endif]--><!--[if !mso]><!-- --><a href="https://x.example/cta?a=1&amp;b=2">Book now</a><!--<![endif]--></div>
<!-- a plain comment <a href="https://x.example/not-a-link">x</a> -->
</body>`
	doc, res, _ := trackedHTML(t, "", body)
	if want := []string{"https://x.example/cta?a=1&b=2"}; !slices.Equal(res.Links, want) {
		t.Fatalf("Links = %q", res.Links)
	}
	ls := linksOf(doc)
	if len(ls) != 2 || ls[0].tag != "v:roundrect" {
		t.Fatalf("links %q", ls)
	}
	for _, l := range ls {
		if i, ok := clickIndex(l.href); !ok || i != 0 {
			t.Errorf("%s href %q", l.tag, l.href)
		}
	}
	if !strings.Contains(doc, `<!-- a plain comment <a href="https://x.example/not-a-link">x</a> -->`) {
		t.Errorf("plain comment changed")
	}
}

func TestQuotedHistory(t *testing.T) {
	old := `<img src="` + testBase + `/o/OLDTOKEN.gif" width="1" height="1" alt="">`
	body := `<body><p>Thanks! <a href="https://x.example/new">new</a></p>
<div class="gmail_quote"><div>On Monday someone wrote:</div>
<blockquote type="cite">` + old + `<div><a href="https://x.example/old1">old</a></div></blockquote>
<div><a href="https://x.example/old2">still quoted</a></div></div>
<p><a href="https://x.example/after">after</a></p>
<BLOCKQUOTE TYPE=CITE><blockquote>nested</blockquote><a href="https://x.example/old3">q</a><IMG SRC='` + testBase + `/o/X'></BLOCKQUOTE>
<blockquote><a href="https://x.example/plainquote">not history</a></blockquote>
</body>`
	doc, res, _ := trackedHTML(t, "", body)
	want := []string{"https://x.example/new", "https://x.example/after", "https://x.example/plainquote"}
	if !slices.Equal(res.Links, want) {
		t.Fatalf("Links = %q, want %q", res.Links, want)
	}
	if strings.Contains(doc, "OLDTOKEN") || strings.Contains(doc, "/o/X") {
		t.Errorf("old pixel kept:\n%s", doc)
	}
	if res.PixelsRemoved != 2 {
		t.Errorf("PixelsRemoved = %d", res.PixelsRemoved)
	}
	for _, s := range []string{"https://x.example/old1", "https://x.example/old2", "https://x.example/old3"} {
		if !strings.Contains(doc, `"`+s+`"`) {
			t.Errorf("%s changed", s)
		}
	}
}

func TestOutlookReplySeparator(t *testing.T) {
	for _, sep := range []string{
		`<div id="appendonsend"></div><hr><div id="divRplyFwdMsg" dir="ltr"><b>From:</b> x</div>`,
		`<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in 0in"><p><b>From:</b> x</p></div>`,
	} {
		body := `<body><a href="https://x.example/mine">mine</a>` + sep +
			`<div><a href="https://x.example/theirs">theirs</a><img src="` + testBase + `/o/OLD"></div></body>`
		doc, res, _ := trackedHTML(t, "", body)
		if !slices.Equal(res.Links, []string{"https://x.example/mine"}) {
			t.Errorf("Links = %q", res.Links)
		}
		if strings.Contains(doc, "/o/OLD") || !strings.Contains(doc, `"https://x.example/theirs"`) {
			t.Errorf("history instrumented:\n%s", doc)
		}
	}
}

func TestPixelPlacement(t *testing.T) {
	pix := `<img src="` + testBase + `/o/OPENTOKEN.gif"`
	cases := []struct{ in, before, after string }{
		{`<!DOCTYPE html><html><head><title>x</title><style>p{}</style></head><body class="b">` + "\n<p>hi</p></body></html>", `<body class="b">`, "\n<p>hi</p>"},
		{`<html><head><title>t</title></head><table><tr><td>x</td></tr></table></html>`, `</head>`, `<table>`},
		{`Hello <b>world</b>`, ``, `Hello`},
		{`<head><meta charset="utf-8"></head>`, `<meta charset="utf-8"></head>`, ``},
	}
	for _, c := range cases {
		doc, res, _ := trackedHTML(t, "", c.in)
		i := strings.Index(doc, pix)
		if i < 0 || res.Pixels != 1 || pixelCount(doc) != 1 {
			t.Errorf("%q: pixels %d in\n%s", c.in, pixelCount(doc), doc)
			continue
		}
		j := i + strings.Index(doc[i:], "/>") + 2
		if !strings.HasSuffix(doc[:i], c.before) || !strings.HasPrefix(doc[j:], c.after) {
			t.Errorf("%q: pixel misplaced:\n%s", c.in, doc)
		}
		if doc[:i]+doc[j:] != c.in {
			t.Errorf("%q: other bytes changed:\n%s", c.in, doc)
		}
	}
}

func TestOptions(t *testing.T) {
	body := `<body><a href="https://x.example/1">1</a></body>`
	in := htmlMessage("", body)
	m := newRecMinter()

	out, res := rewrite(t, in, Options{Opens: true, Minter: m})
	if len(res.Links) != 0 || res.Pixels != 1 || !strings.Contains(out, `href="https://x.example/1"`) {
		t.Errorf("opens only: %+v", res)
	}
	out, res = rewrite(t, in, Options{Clicks: true, Minter: m})
	if len(res.Links) != 1 || res.Pixels != 0 || strings.Contains(out, "/o/") {
		t.Errorf("clicks only: %+v", res)
	}
	_, res = rewrite(t, in, Options{Minter: m})
	if res.Changed || res.Skipped != SkipNothingToDo {
		t.Errorf("nothing: %+v", res)
	}
	_, res = rewrite(t, htmlMessage("", "<p>no links</p>"), Options{Clicks: true, Minter: m})
	if res.Changed || res.Skipped != SkipNothingToDo {
		t.Errorf("no links: %+v", res)
	}
	if _, err := Message(io.Discard, strings.NewReader(in), Options{Opens: true}); !errors.Is(err, ErrMinter) {
		t.Errorf("nil minter: %v", err)
	}
}

func TestQuotedPrintable(t *testing.T) {
	// A soft break inside the href and =3D escapes, as encoders write them.
	in := crlf(`From: a@example.com
Content-Type: text/html; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Gr=C3=BC=C3=9Fe</p><a href=3D"https://x.example/path?utm_sou=
rce=3Dnews&amp;utm_medium=3Demail&amp;id=3D42">Read</a>
<p>trailing space =20
and tab=09</p></body></html>
`)
	m := newRecMinter()
	out, res := rewrite(t, in, allOpts(m))
	if want := "https://x.example/path?utm_source=news&utm_medium=email&id=42"; len(res.Links) != 1 || res.Links[0] != want {
		t.Fatalf("Links = %q", res.Links)
	}
	head, body, _ := strings.Cut(out, "\r\n\r\n")
	if head+"\r\n\r\n" != in[:strings.Index(in, "\r\n\r\n")+4] {
		t.Errorf("header changed")
	}
	checkQPLines(t, body, "\r\n")
	dec, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	d := string(dec)
	if !strings.Contains(d, "<p>Grüße</p>") || !strings.Contains(d, "trailing space  \r\nand tab\t</p>") {
		t.Errorf("content changed:\n%s", d)
	}
	if !strings.HasSuffix(body, "</html>\r\n") {
		t.Errorf("final line ending lost: %q", body[len(body)-20:])
	}
}

// checkQPLines checks line lengths and endings of a quoted-printable body.
func checkQPLines(t *testing.T, body, eol string) {
	t.Helper()
	if eol == "\n" && strings.Contains(body, "\r") {
		t.Errorf("CR in an LF body")
	}
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSuffix(l, "\r")
		if len(l) > 76 {
			t.Errorf("QP line of %d chars: %q", len(l), l)
		}
		if strings.HasSuffix(l, " ") || strings.HasSuffix(l, "\t") {
			t.Errorf("QP line ends in white space: %q", l)
		}
	}
}

func TestBase64(t *testing.T) {
	html := "<html><body><a href=\"https://x.example/b64?a=1&amp;b=2\">x</a>" + strings.Repeat("<p>filler</p>\r\n", 20) + "</body></html>"
	enc := base64.StdEncoding.EncodeToString([]byte(html))
	var wrapped []string
	for i := 0; i < len(enc); i += 76 {
		wrapped = append(wrapped, enc[i:min(i+76, len(enc))])
	}
	for _, eol := range []string{"\r\n", "\n"} {
		in := strings.ReplaceAll("From: a@example.com\nContent-Type: multipart/alternative; boundary=\"zz\"\n\n--zz\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\n", "\n", eol) +
			strings.Join(wrapped, eol) + eol + "--zz--" + eol
		m := newRecMinter()
		out, res := rewrite(t, in, allOpts(m))
		if len(res.Links) != 1 || res.Links[0] != "https://x.example/b64?a=1&b=2" {
			t.Fatalf("Links = %q", res.Links)
		}
		start := strings.Index(out, "base64"+eol+eol) + len("base64"+eol+eol)
		end := strings.Index(out, eol+"--zz--")
		lines := strings.Split(out[start:end], eol)
		for i, l := range lines {
			if len(l) > 76 || i < len(lines)-1 && len(l) != 76 || strings.Contains(l, "\r") {
				t.Errorf("eol %q: base64 line %d: %q", eol, i, l)
			}
		}
		hs := htmlOf(t, out)
		if len(hs) != 1 || pixelCount(hs[0]) != 1 || !strings.Contains(hs[0], strings.Repeat("<p>filler</p>\r\n", 20)) {
			t.Errorf("decoded html wrong")
		}
	}
}

func TestSevenBitLongLineBecomesQP(t *testing.T) {
	// A 7bit line just under 998 bytes that a long click URL pushes over.
	line := `<p><a href="https://x.example/s">short</a>` + strings.Repeat("x", 900) + `</p>`
	in := crlf("From: a@example.com\nSubject: s\nContent-Type: text/html\nContent-Transfer-Encoding: 7bit\nX-After: kept\n\n<body>\n" + line + "\n</body>\n")
	long := &longMinter{newRecMinter()}
	out, res := rewrite(t, in, Options{Clicks: true, Opens: true, Minter: long})
	if !res.Changed {
		t.Fatal("not changed")
	}
	wantHead := crlf("From: a@example.com\nSubject: s\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\nX-After: kept\n\n")
	if !strings.HasPrefix(out, wantHead) {
		t.Fatalf("header:\n%s", out[:200])
	}
	checkQPLines(t, out[len(wantHead):], "\r\n")
	hs := htmlOf(t, out)
	if len(hs) != 1 || !strings.Contains(hs[0], strings.Repeat("x", 900)+"</p>\r\n</body>") {
		t.Fatalf("decoded html wrong")
	}

	// Short enough: stays 7bit, only the href changes.
	out, _ = rewrite(t, in, Options{Clicks: true, Minter: newRecMinter()})
	if !strings.Contains(out, "Content-Transfer-Encoding: 7bit") || !strings.Contains(out, strings.Repeat("x", 900)) {
		t.Errorf("short URL switched encoding")
	}

	// No Content-Transfer-Encoding at all: one is added at the end of the header.
	in = "From: a@example.com\nContent-Type: text/html\n\n" + line + "\n"
	out, _ = rewrite(t, in, Options{Clicks: true, Minter: long})
	if !strings.HasPrefix(out, "From: a@example.com\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n") {
		t.Errorf("header:\n%s", out[:120])
	}
	checkQPLines(t, out, "\n")
}

// longMinter mints click URLs of 300 bytes.
type longMinter struct{ *recMinter }

func (m *longMinter) ClickURL(i int, dest string) string {
	return m.recMinter.ClickURL(i, dest) + "&pad=" + strings.Repeat("p", 270)
}

func TestLineEndingsKept(t *testing.T) {
	lf := `From: a@example.com
Content-Type: multipart/alternative; boundary="b"

preamble
--b
Content-Type: text/plain

plain https://x.example/p
--b
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><a href=3D"https://x.example/q">q</a>
</body></html>
--b--
epilogue
`
	for _, in := range []string{lf, crlf(lf)} {
		out, res := rewrite(t, in, allOpts(newRecMinter()))
		if res.HTMLParts != 1 || len(res.Links) != 1 {
			t.Fatalf("%+v", res)
		}
		crs := strings.Count(out, "\r\n")
		lfs := strings.Count(out, "\n")
		if in == lf && crs != 0 || in != lf && crs != lfs {
			t.Errorf("line endings mixed: %d CRLF of %d LF", crs, lfs)
		}
		i := strings.Index(in, "--b\r\nContent-Type: text/html")
		if i < 0 {
			i = strings.Index(in, "--b\nContent-Type: text/html")
		}
		if !strings.HasPrefix(out, in[:i]) || !strings.HasSuffix(out, in[strings.LastIndex(in, "--b--"):]) {
			t.Errorf("bytes outside the html part changed")
		}
	}
}

const nestedMessage = `From: a@example.com
To: b@example.org
Subject: nested
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mixed"

This is a multi-part message in MIME format.
--mixed
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

See https://x.example/plain
--alt
Content-Type: multipart/related; boundary="rel"; type="text/html"

--rel
Content-Type: text/html; charset=utf-8

<html><body><img src="cid:logo"><a href="https://x.example/rel">go</a></body></html>
--rel
Content-Type: image/png
Content-ID: <logo>
Content-Transfer-Encoding: base64

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==
--rel--

--alt--
--mixed
Content-Type: message/rfc822

From: old@example.com
Content-Type: text/html

<body><a href="https://x.example/inner">inner</a></body>
--mixed
Content-Type: text/html; name="page.html"
Content-Disposition: attachment; filename="page.html"

<body><a href="https://x.example/attached">attached</a></body>
--mixed--
epilogue text
`

func TestNestedMultipart(t *testing.T) {
	for _, in := range []string{nestedMessage, crlf(nestedMessage)} {
		out, res := rewrite(t, in, allOpts(newRecMinter()))
		if res.HTMLParts != 1 || !slices.Equal(res.Links, []string{"https://x.example/rel"}) {
			t.Fatalf("%+v", res)
		}
		before := leaves(t, in)
		after := leaves(t, out)
		if len(before) != len(after) {
			t.Fatalf("%d leaves, want %d", len(after), len(before))
		}
		for i := range before {
			if before[i].mediaType != after[i].mediaType {
				t.Errorf("leaf %d: %s, want %s", i, after[i].mediaType, before[i].mediaType)
			}
			if i != 1 && !bytes.Equal(before[i].body, after[i].body) {
				t.Errorf("leaf %d (%s) changed", i, before[i].mediaType)
			}
		}
		// Everything but the one html part is byte for byte the same.
		nl := "\n"
		if strings.Contains(in, "\r\n") {
			nl = "\r\n"
		}
		start := strings.Index(in, "<html><body><img")
		end := strings.Index(in, "</html>") + len("</html>")
		if !strings.HasPrefix(out, in[:start]) || !strings.HasSuffix(out, in[end:]) {
			t.Errorf("bytes outside the html part changed")
		}
		if !strings.Contains(out, "--rel"+nl+"Content-Type: image/png") {
			t.Errorf("structure")
		}
	}
}

func TestPassThrough(t *testing.T) {
	body := `<body><a href="https://x.example/1">1</a></body>`
	cases := []struct {
		name, in, skip string
	}{
		{"dkim", crlf("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; b=abc\nFrom: a@example.com\nContent-Type: text/html\n\n" + body + "\n"), SkipDKIM},
		{"plain", crlf("From: a@example.com\n\nhttps://x.example/\n"), SkipNoHTML},
		{"utf16", "From: a@example.com\r\nContent-Type: text/html; charset=UTF-16LE\r\nContent-Transfer-Encoding: base64\r\n\r\nPABhAD4A\r\n", SkipCharset},
		{"iso2022", crlf("From: a@example.com\nContent-Type: text/html; charset=ISO-2022-JP\n\n" + body + "\n"), SkipCharset},
		{"bom", "From: a@example.com\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n//48AGEAIABoAHIAZQBmAD0AIgBoAHQAdABwADoALwAvAHgAIgA+AA==\r\n", SkipCharset},
		{"uuencode", crlf("From: a@example.com\nContent-Type: text/html\nContent-Transfer-Encoding: x-uuencode\n\n" + body + "\n"), SkipEncoding},
		{"bad base64", crlf("From: a@example.com\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\n!!!notbase64\n"), SkipEncoding},
		{"signed", crlf("From: a@example.com\nContent-Type: multipart/signed; boundary=s; protocol=\"application/pkcs7-signature\"\n\n--s\nContent-Type: text/html\n\n" + body + "\n--s\nContent-Type: application/pkcs7-signature\n\nAAAA\n--s--\n"), SkipNoHTML},
		{"rfc822 only", crlf("From: a@example.com\nContent-Type: message/rfc822\n\nFrom: b@example.com\nContent-Type: text/html\n\n" + body + "\n"), SkipNoHTML},
		{"no boundary", crlf("From: a@example.com\nContent-Type: multipart/mixed\n\n--x\nContent-Type: text/html\n\n" + body + "\n--x--\n"), SkipNoHTML},
		{"boundary never seen", crlf("From: a@example.com\nContent-Type: multipart/mixed; boundary=nope\n\n--x\nContent-Type: text/html\n\n" + body + "\n--x--\n"), SkipNoHTML},
		{"header only", "From: a@example.com\r\nSubject: x\r\n", SkipNoHTML},
		{"empty", "", SkipNoHTML},
	}
	for _, c := range cases {
		out, res := rewrite(t, c.in, allOpts(newRecMinter()))
		if out != c.in || res.Changed || res.Skipped != c.skip {
			t.Errorf("%s: changed %v skipped %q, want %q", c.name, res.Changed, res.Skipped, c.skip)
		}
	}
}

func TestEightBitCharsetKept(t *testing.T) {
	body := "<body><p>caf\xe9 \xa9</p><a href=\"https://x.example/\xe9\">x</a></body>"
	in := "From: a@example.com\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body + "\r\n"
	out, res := rewrite(t, in, allOpts(newRecMinter()))
	if len(res.Links) != 1 || res.Links[0] != "https://x.example/\xe9" {
		t.Fatalf("Links = %q", res.Links)
	}
	if !strings.Contains(out, "<p>caf\xe9 \xa9</p>") {
		t.Errorf("8-bit text changed")
	}
}

func TestMalformed(t *testing.T) {
	body := `<body><a href="https://x.example/1">1</a></body>`
	// A missing close delimiter is tolerated: the parts found are instrumented.
	in := crlf("From: a@example.com\nContent-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/html\n\n" + body + "\n")
	out, res := rewrite(t, in, allOpts(newRecMinter()))
	if res.HTMLParts != 1 || !strings.HasPrefix(out, in[:strings.Index(in, "<body>")]) {
		t.Errorf("missing close delimiter: %+v", res)
	}
	// A header block too large is an error.
	huge := "From: a@example.com\r\nX-Big: " + strings.Repeat("a", MaxHeaderBytes) + "\r\n\r\nbody\r\n"
	if _, err := Message(io.Discard, strings.NewReader(huge), allOpts(newRecMinter())); err == nil {
		t.Errorf("huge header accepted")
	}
	// A read error is reported.
	r := io.MultiReader(strings.NewReader(htmlMessage("", "<body>")), errReader{})
	if _, err := Message(io.Discard, r, allOpts(newRecMinter())); err == nil {
		t.Errorf("read error lost")
	}
	// A panic (here in the minter) becomes an error.
	if _, err := Message(io.Discard, strings.NewReader(htmlMessage("", body)), allOpts(panicMinter{})); err == nil {
		t.Errorf("panic not turned into an error")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

type panicMinter struct{ testURLs }

func (panicMinter) OpenURL() string             { panic("boom") }
func (panicMinter) ClickURL(int, string) string { panic("boom") }

func TestLargeHTMLPassesThrough(t *testing.T) {
	big := "<body>" + strings.Repeat("<p>0123456789abcdef</p>\r\n", MaxHTMLBytes/24+10) + "</body>"
	in := htmlMessage("", big)
	out, res := rewrite(t, in, allOpts(newRecMinter()))
	if res.Changed || res.Skipped != SkipTooLarge || out != in {
		t.Errorf("%+v", res)
	}
}

func TestScanAttrsAgreesWithTokenizer(t *testing.T) {
	for _, tag := range []string{
		`<a href="x" HREF='y' data-notrack title=z>`,
		`<a href = x/>`,
		`<a =href=x>`,
		`<a/href=x>`,
		`<a href="x"title='t'>`,
		`<a b c=d e = "f" g='h'i=j>`,
		`<area href>`,
		`<V:RoundRect href="x">`,
		`<BlockQuote Type=cite>`,
		`<averyveryverylongtagname-beyond-sixteen href=x>`,
		"<a\thref\n=\n\"x y\"\f>",
	} {
		z := html.NewTokenizer(strings.NewReader(tag))
		z.Next()
		if name, _ := z.TagName(); rawTagName([]byte(tag[1:])) != string(name) {
			t.Errorf("%q: name %q, want %q", tag, rawTagName([]byte(tag[1:])), name)
		}
		got := scanAttrs([]byte(tag), nil)
		want := tokenizerAttrs(tag)
		if len(got) != len(want) {
			t.Errorf("%q: %d attrs, want %d (%q)", tag, len(got), len(want), want)
			continue
		}
		for i, a := range got {
			if lowerASCII(a.key) != want[i][0] || string(a.val) != want[i][1] {
				t.Errorf("%q: attr %d = %q=%q, want %q", tag, i, a.key, a.val, want[i])
			}
		}
	}
}

func TestUnescapeAttr(t *testing.T) {
	for in, want := range map[string]string{
		"a&amp;b":      "a&b",
		"a&ampb":       "a&ampb",
		"a&amp":        "a&",
		"?x=1&copy=2":  "?x=1&copy=2",
		"?x=1&copy;=2": "?x=1©=2",
		"&copy2":       "&copy2",
		"&copy-":       "©-",
		"&notin;":      "∉",
		"&notit;":      "&notit;",
		"&#65;&#x42;C": "ABC",
		"&#66":         "B",
		"&#;":          "&#;",
		"&":            "&",
		"&unknown;":    "&unknown;",
	} {
		if got := unescapeAttr(in); got != want {
			t.Errorf("unescapeAttr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBrokenHeaderBlocks(t *testing.T) {
	body := `<body><a href="https://x.example/1">1</a></body>`
	// No empty line after the top-level header: the first line that is not a
	// field starts the body; the parts below are still found.
	in := crlf("From: a@example.com\nContent-Type: multipart/alternative; boundary=b\nThis is a multi-part message in MIME format.\n--b\nContent-Type: text/html\n\n" + body + "\n--b--\n")
	out, res := rewrite(t, in, allOpts(newRecMinter()))
	if res.HTMLParts != 1 || !strings.HasPrefix(out, in[:strings.Index(in, "<body>")]) {
		t.Errorf("no separator, multipart: %+v", res)
	}
	// A text/html entity without that empty line is not edited: what follows
	// could still be read as header.
	in = crlf("From: a@example.com\nContent-Type: text/html\n" + body + "\n")
	if out, res := rewrite(t, in, allOpts(newRecMinter())); res.Changed || out != in || res.Skipped != SkipMalformed {
		t.Errorf("no separator, html: %+v", res)
	}
	// A DKIM-Signature after a broken header line still counts.
	in = crlf("From: a@example.com\nReceived: from x\nby y; Mon\nDKIM-Signature: v=1; d=example.com\nContent-Type: text/html\n\n" + body + "\n")
	if _, res := rewrite(t, in, allOpts(newRecMinter())); res.Skipped != SkipDKIM {
		t.Errorf("late DKIM: %+v", res)
	}
	// An empty html part right before the close delimiter stays as it is.
	in = "Content-Type: multipart/related; boundary=\"r\"\n\n--r\nContent-Type: text/html\n\n--r--"
	if out, res := rewrite(t, in, allOpts(newRecMinter())); res.Changed || out != in {
		t.Errorf("empty part: %+v", res)
	}
}
