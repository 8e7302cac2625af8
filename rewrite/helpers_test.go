package rewrite

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	"golang.org/x/net/html"
)

const testBase = "https://t.example.com"

// testURLs tells the URLs on a tracking base from others, as the tracker's
// minter does, for the test minters.
type testURLs struct{ base string }

func (u testURLs) Ours(dest string) bool {
	if u.base == "" || len(dest) < len(u.base) || !strings.EqualFold(dest[:len(u.base)], u.base) {
		return false
	}
	tail := dest[len(u.base):]
	return tail == "" || strings.ContainsRune("/?#", rune(tail[0]))
}

func (u testURLs) IsOpenURL(s string) bool {
	p := u.base + "/o/"
	return u.base != "" && len(s) >= len(p) && strings.EqualFold(s[:len(p)], p)
}

// recMinter mints URLs on testBase and records what it was asked.
type recMinter struct {
	testURLs
	dests map[int]string
	opens int
	bad   []string // inconsistent calls
}

func newRecMinter() *recMinter {
	return &recMinter{testURLs: testURLs{testBase}, dests: make(map[int]string)}
}

func (m *recMinter) OpenURL() string {
	m.opens++
	return testBase + "/o/OPENTOKEN.gif"
}

func (m *recMinter) ClickURL(i int, dest string) string {
	if d, ok := m.dests[i]; ok && d != dest {
		m.bad = append(m.bad, fmt.Sprintf("index %d minted for %q and %q", i, d, dest))
	}
	m.dests[i] = dest
	// '&' and '"' check that the value written back is attribute-escaped.
	return testBase + "/c/" + strconv.Itoa(i) + `?k=v&q="x"`
}

// clickIndex returns the index of a click URL minted by recMinter.
func clickIndex(href string) (int, bool) {
	rest, ok := strings.CutPrefix(href, testBase+"/c/")
	if !ok {
		return 0, false
	}
	num, tail, _ := strings.Cut(rest, "?")
	i, err := strconv.Atoi(num)
	return i, err == nil && tail == `k=v&q="x"`
}

func allOpts(m Minter) Options {
	return Options{Opens: true, Clicks: true, Minter: m}
}

// crlf turns the LF line endings of a Go literal into CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// rewrite runs Message on in and fails the test on error.
func rewrite(t testing.TB, in string, opts Options) (string, Result) {
	t.Helper()
	var out bytes.Buffer
	res, err := Message(&out, strings.NewReader(in), opts)
	if err != nil {
		t.Fatalf("Message: %v", err)
	}
	if !res.Changed && out.String() != in {
		t.Fatalf("Changed is false but the output differs")
	}
	if res.Changed && out.String() == in {
		t.Fatalf("Changed is true but the output is the input")
	}
	if res.Changed != (res.Skipped == "") {
		t.Fatalf("Changed %v with Skipped %q", res.Changed, res.Skipped)
	}
	return out.String(), res
}

// leaf is one leaf part as go-message decodes it.
type leaf struct {
	mediaType  string
	attachment bool
	body       []byte
}

// leaves parses msg with go-message and returns its leaf parts in order
// (message/rfc822 parts are leaves).
func leaves(t testing.TB, msg string) []leaf {
	t.Helper()
	ls, err := parseLeaves([]byte(msg))
	if err != nil {
		t.Fatalf("go-message cannot read the output: %v", err)
	}
	return ls
}

func parseLeaves(msg []byte) ([]leaf, error) {
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return nil, err
	}
	var out []leaf
	err = e.Walk(func(path []int, p *message.Entity, err error) error {
		if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
			return err
		}
		if p.MultipartReader() != nil {
			return nil
		}
		mt, _, _ := p.Header.ContentType()
		disp, _, _ := p.Header.ContentDisposition()
		b, rerr := io.ReadAll(p.Body)
		if rerr != nil {
			// An undecodable body: keep what was read, the test compares raw bytes.
			b = append(b, "\x00<unreadable>"...)
		}
		out = append(out, leaf{mediaType: mt, attachment: disp == "attachment", body: b})
		return nil
	})
	return out, err
}

// htmlOf returns the decoded bodies of the text/html leaves of msg.
func htmlOf(t testing.TB, msg string) []string {
	t.Helper()
	var out []string
	for _, l := range leaves(t, msg) {
		if l.mediaType == "text/html" {
			out = append(out, string(l.body))
		}
	}
	return out
}

// link is an href found in HTML by x/net/html.
type link struct {
	tag, href string // href as decoded by the Tokenizer
}

// linksOf returns the href of every <a> and <area> tag of doc, and those of
// <a>, <area> and v:* tags inside conditional comments.
func linksOf(doc string) []link { return linksIn(doc, false) }

func linksIn(doc string, inComment bool) []link {
	var out []link
	z := html.NewTokenizer(strings.NewReader(doc))
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return out
		case html.CommentToken:
			// The raw text: Text would decode the entities of the markup inside.
			d := strings.TrimSuffix(strings.TrimPrefix(string(z.Raw()), "<!--"), "-->")
			if strings.HasPrefix(strings.TrimSpace(d), "[if") {
				out = append(out, linksIn(d, true)...)
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			name, more := z.TagName()
			n := string(name)
			if n != "a" && n != "area" && !(inComment && strings.HasPrefix(n, "v:")) {
				continue
			}
			for more {
				var k, v []byte
				k, v, more = z.TagAttr()
				if string(k) == "href" {
					out = append(out, link{tag: n, href: string(v)})
					break
				}
			}
		}
	}
}

// pixelCount counts our open pixels in doc.
func pixelCount(doc string) int {
	return strings.Count(doc, `src="`+testBase+`/o/OPENTOKEN.gif"`)
}

// tokenizerAttrs returns the attributes of the first tag of s as the
// Tokenizer reports them.
func tokenizerAttrs(s string) [][2]string {
	z := html.NewTokenizer(strings.NewReader(s))
	if tt := z.Next(); tt != html.StartTagToken && tt != html.SelfClosingTagToken {
		return nil
	}
	var out [][2]string
	for _, a := range z.Token().Attr {
		out = append(out, [2]string{a.Key, a.Val})
	}
	return out
}
