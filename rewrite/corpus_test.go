package rewrite

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/net/html"
)

// corpusDir holds real-world messages shared by the project (see its README).
const corpusDir = "../../shared/corpus"

func corpusFiles(t testing.TB) []string {
	t.Helper()
	if _, err := os.Stat(corpusDir); os.IsNotExist(err) {
		t.Skipf("%s not present", corpusDir)
	}
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus files: %v", err)
	}
	return files
}

// TestCorpus rewrites every corpus message and checks, with go-message's
// textproto reader (not this package's walk), that the output has the same
// MIME tree, that every part but the instrumented HTML is byte for byte the
// same, and that in the HTML only hrefs and the pixel changed, with every
// http(s) link either tracked with its exact destination or left alone by a
// rule.
func TestCorpus(t *testing.T) {
	var processed, changed, unparsable int
	skipped := map[string]int{}
	for _, f := range corpusFiles(t) {
		name := filepath.Base(f)
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m := newRecMinter()
		var out bytes.Buffer
		res, err := Message(&out, bytes.NewReader(in), allOpts(m))
		processed++
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(m.bad) > 0 {
			t.Errorf("%s: minter: %v", name, m.bad)
		}
		var ref bytes.Buffer
		lineAtATime = true
		_, rerr := Message(&ref, bytes.NewReader(in), allOpts(newRecMinter()))
		lineAtATime = false
		if rerr != nil || !bytes.Equal(ref.Bytes(), out.Bytes()) {
			t.Errorf("%s: block copies differ from line copies (%v)", name, rerr)
		}
		if !res.Changed {
			skipped[res.Skipped]++
			if !bytes.Equal(out.Bytes(), in) {
				t.Errorf("%s: unchanged (%s) but the output differs", name, res.Skipped)
			}
			continue
		}
		changed++
		if bytes.Equal(out.Bytes(), in) {
			t.Errorf("%s: Changed but identical", name)
		}
		before, err := rawTree(in)
		if err != nil {
			// go-message cannot read the original either: only check that
			// it fails on the output the same way.
			unparsable++
			if _, err2 := rawTree(out.Bytes()); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("%s: original unreadable (%v), output: %v", name, err, err2)
			}
			continue
		}
		after, err := rawTree(out.Bytes())
		if err != nil {
			t.Errorf("%s: output unreadable: %v", name, err)
			continue
		}
		if _, err := parseLeaves(out.Bytes()); err != nil {
			t.Errorf("%s: go-message walk of the output: %v", name, err)
		}
		c := corpusCheck{t: t, name: name, m: m, unsub: unsubTargets(before.header), tracked: map[int]bool{}}
		c.compare(before, after)
		if c.instrumented != res.HTMLParts {
			t.Errorf("%s: %d html parts differ, Result says %d", name, c.instrumented, res.HTMLParts)
		}
		if len(c.tracked) != len(res.Links) || len(m.dests) != len(res.Links) {
			t.Errorf("%s: %d tracked destinations, %d minted, %d Links", name, len(c.tracked), len(m.dests), len(res.Links))
		}
	}
	t.Logf("corpus: %d processed, %d changed, %d unchanged %v, 0 errors; %d changed messages go-message cannot read (original and output alike)",
		processed, changed, processed-changed, skipped, unparsable)
}

// rawNode is one entity read with go-message's textproto: its header and,
// for a leaf, its body still transfer-encoded.
type rawNode struct {
	header    textproto.Header
	mediaType string
	body      []byte
	children  []*rawNode
}

func rawTree(b []byte) (*rawNode, error) {
	br := bufio.NewReader(bytes.NewReader(b))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, err
	}
	return rawEntity(h, br, 0)
}

func rawEntity(h textproto.Header, r io.Reader, depth int) (*rawNode, error) {
	mh := message.Header{Header: h}
	mt, params, _ := mh.ContentType()
	n := &rawNode{header: h, mediaType: mt}
	if !strings.HasPrefix(mt, "multipart/") || depth > 30 {
		b, err := io.ReadAll(r)
		n.body = b
		return n, err
	}
	mr := textproto.NewMultipartReader(r, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return nil, err
		}
		c, err := rawEntity(p.Header, p, depth+1)
		if err != nil {
			return nil, err
		}
		n.children = append(n.children, c)
	}
}

type corpusCheck struct {
	t            *testing.T
	name         string
	m            *recMinter
	unsub        map[string]bool
	instrumented int
	tracked      map[int]bool
}

func (c *corpusCheck) errorf(format string, args ...any) {
	c.t.Helper()
	c.t.Errorf("%s: "+format, append([]any{c.name}, args...)...)
}

func (c *corpusCheck) compare(a, b *rawNode) {
	c.t.Helper()
	if a.mediaType != b.mediaType || len(a.children) != len(b.children) {
		c.errorf("tree differs: %s/%d vs %s/%d", a.mediaType, len(a.children), b.mediaType, len(b.children))
		return
	}
	for i := range a.children {
		c.compare(a.children[i], b.children[i])
	}
	if len(a.children) > 0 || bytes.Equal(a.body, b.body) {
		if !sameFields(a.header, b.header, "") {
			c.errorf("header of %s changed", a.mediaType)
		}
		return
	}
	if a.mediaType != "text/html" {
		c.errorf("%s part changed", a.mediaType)
		return
	}
	// Only the Content-Transfer-Encoding may change: 7bit/8bit to
	// quoted-printable, and a part encoded anew gets a clean field naming
	// its encoding ("quoted-printable;" becomes "quoted-printable"), which a
	// strict reader decodes.
	if !sameFields(a.header, b.header, "Content-Transfer-Encoding") {
		c.errorf("html header changed beyond Content-Transfer-Encoding")
	}
	used := "" // the encoding of a part encoded anew
	ea, eb := a.header.Get("Content-Transfer-Encoding"), b.header.Get("Content-Transfer-Encoding")
	switch tok := transferToken(ea); {
	case tok == "quoted-printable" || tok == "base64":
		used = tok
	case ea != eb:
		used = "quoted-printable" // a 7bit/8bit part with lines now too long
	}
	if used != "" {
		fs := b.header.FieldsByKey("Content-Transfer-Encoding")
		fs.Next()
		if raw, _ := fs.Raw(); eb != used || string(raw) != "Content-Transfer-Encoding: "+used+"\r\n" || fs.Next() {
			c.errorf("transfer encoding %q became %q", ea, raw)
		}
	}
	c.instrumented++
	before, after := decodeBody(c.t, a), decodeBody(c.t, b)
	if n := pixelCount(after); n != 1 {
		c.errorf("%d pixels", n)
	}
	if err := sameExceptLinks(before, after); err != nil {
		c.errorf("html: %v", err)
	}
	c.checkLinks(before, after)
}

// transferToken returns the encoding a Content-Transfer-Encoding value names:
// its token before the first ';' or white space, in lower case.
func transferToken(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, "; \t"); i >= 0 {
		v = v[:i]
	}
	return strings.ToLower(v)
}

// sameFields compares two headers field by field, except the field named skip.
func sameFields(a, b textproto.Header, skip string) bool {
	fa, fb := a.Fields(), b.Fields()
	for {
		na, nb := fa.Next(), fb.Next()
		for na && fa.Key() == skip {
			na = fa.Next()
		}
		for nb && fb.Key() == skip {
			nb = fb.Next()
		}
		if na != nb {
			return false
		}
		if !na {
			return true
		}
		ra, _ := fa.Raw()
		rb, _ := fb.Raw()
		if !bytes.Equal(ra, rb) {
			return false
		}
	}
}

func decodeBody(t *testing.T, n *rawNode) string {
	h := n.header.Copy()
	if message.IsUnknownEncoding(func() error { _, err := message.New(message.Header{Header: h}, nil); return err }()) {
		// As mail clients do, and the rewriter: "quoted-printable;" is quoted-printable.
		enc, _, _ := strings.Cut(h.Get("Content-Transfer-Encoding"), ";")
		h.Set("Content-Transfer-Encoding", strings.TrimSpace(enc))
	}
	e, err := message.New(message.Header{Header: h}, bytes.NewReader(n.body))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		t.Fatalf("decode: %v", err)
	}
	b, err := io.ReadAll(e.Body)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return string(b)
}

// checkLinks pairs the links of the HTML before and after (same order, same
// count) and checks each one.
func (c *corpusCheck) checkLinks(before, after string) {
	lb, la := linksOf(before), linksOf(after)
	if len(lb) != len(la) {
		c.errorf("%d links became %d", len(lb), len(la))
		return
	}
	allowed := untrackedByRule(before, c.unsub)
	for i := range lb {
		orig := browserURL(lb[i].href)
		if idx, ok := clickIndex(la[i].href); ok {
			c.tracked[idx] = true
			if got := c.m.dests[idx]; got != orig {
				c.errorf("link %d: minted %q for %q", i, got, orig)
			}
			continue
		}
		if la[i].href != lb[i].href {
			c.errorf("link %d: %q became %q", i, lb[i].href, la[i].href)
		}
		if isHTTP(orig) && !allowed[orig] {
			c.errorf("link %d: %q (%s) not tracked and no rule says so", i, orig, lb[i].tag)
		}
	}
}

// browserURL strips and removes what a browser's URL parser does.
func browserURL(s string) string {
	s = strings.TrimFunc(s, func(r rune) bool { return r <= 0x20 })
	return strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(s)
}

func isHTTP(u string) bool {
	l := strings.ToLower(u)
	for _, p := range []string{"http://", "https://"} {
		if rest, ok := strings.CutPrefix(l, p); ok {
			return rest != "" && !strings.ContainsAny(rest[:1], "/\\?#")
		}
	}
	return false
}

// untrackedByRule returns the http(s) destinations that the rules leave
// alone, found independently of the rewriter with x/net/html's DOM parser:
// quoted history, visible text that is a URL, data-notrack, BaseURL and
// List-Unsubscribe targets.
func untrackedByRule(doc string, unsub map[string]bool) map[string]bool {
	allowed := map[string]bool{}
	for u := range unsub {
		allowed[u] = true
	}
	root, err := html.Parse(strings.NewReader(doc))
	if err != nil {
		return allowed
	}
	afterSeparator := false
	var walk func(n *html.Node, quoted bool)
	walk = func(n *html.Node, quoted bool) {
		if n.Type == html.CommentNode && strings.HasPrefix(strings.TrimSpace(n.Data), "[if") {
			if sub, err := html.Parse(strings.NewReader(n.Data)); err == nil {
				walk(sub, quoted || afterSeparator)
			}
		}
		if n.Type == html.ElementNode {
			attr := func(k string) (string, bool) {
				for _, a := range n.Attr {
					if a.Key == k {
						return a.Val, true
					}
				}
				return "", false
			}
			class, _ := attr("class")
			typ, _ := attr("type")
			id, _ := attr("id")
			style, _ := attr("style")
			st := strings.ToLower(strings.Join(strings.Fields(style), ""))
			switch {
			case n.Data == "blockquote" && strings.EqualFold(strings.TrimSpace(typ), "cite"),
				n.Data == "div" && (strings.Contains(class, "gmail_quote") || strings.Contains(class, "yahoo_quoted") || strings.Contains(class, "moz-forward-container")):
				quoted = true
			case n.Data == "div" && (strings.EqualFold(id, "divRplyFwdMsg") || strings.EqualFold(id, "appendonsend") ||
				strings.Contains(st, "border-top:solid#e1e1e1") || strings.Contains(st, "border-top:solid#b5c4df")),
				n.Data == "hr" && strings.EqualFold(id, "stopSpelling"):
				afterSeparator = true
			}
			if href, ok := attr("href"); ok {
				u := browserURL(href)
				_, notrack := attr("data-notrack")
				text := strings.TrimSpace(textOf(n))
				if quoted || afterSeparator || notrack || looksLikeURL([]byte(text)) ||
					strings.HasPrefix(strings.ToLower(u), testBase) {
					allowed[u] = true
				}
			}
		}
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			walk(ch, quoted)
		}
	}
	walk(root, false)
	return allowed
}

func textOf(n *html.Node) string {
	var b strings.Builder
	var f func(*html.Node)
	f = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			f(c)
		}
	}
	f(n)
	return b.String()
}

func unsubTargets(h textproto.Header) map[string]bool {
	out := map[string]bool{}
	for _, v := range h.Values("List-Unsubscribe") {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if strings.HasPrefix(part, "<") && strings.HasSuffix(part, ">") {
				out[strings.TrimSpace(part[1:len(part)-1])] = true
			}
		}
	}
	return out
}

// sameExceptLinks checks that after is before with only these changes: the
// pixel added, old pixels removed, data-notrack attributes removed, and href
// values of link tags replaced. It compares token by token (raw bytes), and
// the inside of conditional comments likewise.
func sameExceptLinks(before, after string) error {
	tb, ta := rawTokens(before), rawTokens(after)
	i, j := 0, 0
	for i < len(tb) || j < len(ta) {
		if j < len(ta) && strings.HasPrefix(ta[j], `<img src="`+testBase+`/o/OPENTOKEN.gif"`) {
			j++
			continue
		}
		if i < len(tb) && isOldPixelTag(tb[i]) && (j >= len(ta) || ta[j] != tb[i]) {
			i++
			continue
		}
		if i >= len(tb) || j >= len(ta) {
			return fmt.Errorf("token counts differ (%d/%d, %d/%d)", i, len(tb), j, len(ta))
		}
		if tb[i] != ta[j] && withoutHref(tb[i]) != withoutHref(ta[j]) {
			if strings.HasPrefix(tb[i], "<!--") && strings.HasPrefix(ta[j], "<!--") {
				if err := sameExceptLinks(tb[i][4:], ta[j][4:]); err != nil {
					return fmt.Errorf("in comment: %v", err)
				}
			} else {
				return fmt.Errorf("token %q became %q", tb[i], ta[j])
			}
		}
		i++
		j++
	}
	return nil
}

func rawTokens(doc string) []string {
	var out []string
	z := html.NewTokenizer(strings.NewReader(doc))
	for z.Next() != html.ErrorToken {
		out = append(out, string(z.Raw()))
	}
	return out
}

func isOldPixelTag(tok string) bool {
	return strings.HasPrefix(strings.ToLower(tok), "<img") && strings.Contains(tok, testBase+"/o/")
}

// withoutHref returns a start tag with its href value and data-notrack
// attribute cut out.
func withoutHref(tok string) string {
	if !strings.HasPrefix(tok, "<") || strings.HasPrefix(tok, "</") || strings.HasPrefix(tok, "<!") {
		return tok
	}
	attrs := scanAttrs([]byte(tok), nil)
	out := tok
	for k := len(attrs) - 1; k >= 0; k-- {
		a := attrs[k]
		switch lowerASCII(a.key) {
		case "href":
			out = out[:a.spanStart] + out[a.spanEnd:]
		case "data-notrack":
			out = out[:a.prevEnd] + out[a.end:]
		}
	}
	return out
}
