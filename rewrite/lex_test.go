package rewrite

import (
	"bytes"
	"fmt"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// lexEdgeCases exercise the corners of the Tokenizer that the lexer mirrors.
var lexEdgeCases = []string{
	"", "<", "a<", "</", "</>", "</ x>", "<//x>", "<?xml?>", "<!", "<!-", "<!--", "<!-->", "<!--->", "<!---->",
	"<!-- a -- b -->", "<!-- a --!> b", "<!-- a --!-> b -->", "<!-- a --!", "<!-- a --", "<!DOCTYPE html>", "<!doctype",
	"<!DOC", "<!DOCTYPEhtml", "<![CDATA[x]]>", "<!x>", "<a", "<a ", "<a b", "<a b=", "<a b='", "<a b='c'", "<a b=c",
	"<a b=c>", "<a/>", "<a b/>", "<a b=/>", "<a b='/'/>", "<a b= />", "<a =b>", "<a ==b>", "<a b c=d e = 'f' g=\"h\"i=j>",
	"<a href=x HREF=y>", "<br/ >", "<a\tb\n=\f'c'\r>", "<A HREF=x>t</A >", "x < y > z", "<1>", "<a></a b=c>",
	"<style>a</style>b", "<style>a</STYLE >b", "<style>a</styl", "<style>a</style", "<style>a</stylex>b</style>",
	"<style/>x</style>y", "<title>a &amp; <b></title>", "<textarea><a href=x></textarea>", "<xmp><a></xmp>",
	"<plaintext><a>b</a>", "<iframe><a></iframe>", "<noscript><a href=x>y</a></noscript>z", "<noembed>a</noembed>",
	"<noframes>a</noframes>", "<script>a</script>b", "<script>if (a<b) x</script>", "<script><!-- a </script> b",
	"<script><!-- <script> </script> x --> </script>y", "<script><!--<script>a</script>b</script>c",
	"<script><!-- a --> </script>", "<script><!-- -- <x --> </script>", "<script><!--<SCRIPT>x</SCRIPT>--></script>z",
	"<script><!--<scrip", "<script><!--<script", "<script><!--<script>", "<script><!--<script></scrip", "<script></scrip",
	"<script><!-", "<script><!--", "<script><!--->x</script>", "<script><!--<scriptx>a</script>b",
	"<script><!--<script>--></script>--></script>q", "<script><!--<script>-<</script>x</script>y",
	"<script><!--<script>a--!></script>z", "<scripT>x</Script >", "<script>", "<p>a<b>c</b>d</p>", "a&amp;b<a href=\"&amp;\">",
	"<!--[if mso]><v:roundrect href=\"http://x\"/><![endif]-->", "<a href=x/>", "<a href='x'/>", "<a href=\"x\" />",
	"<a b='c'd>", "<a b=c'd>", "<a b=\"c\"/d>", "<a/b/c>", "< a>", "<a\x00b>", "<\x80>", "<a b=\"\x00\">",
}

// lexTokens returns the tokens of doc as "kind raw" strings, by the lexer
// and by the Tokenizer.
func lexTokens(doc []byte) (lexed, tokenized []string) {
	l := newLexer(doc, nil)
	for {
		k := l.next()
		if k == tokEOF {
			break
		}
		s := fmt.Sprintf("%d %q", k, l.raw())
		if k == tokStartTag || k == tokSelfClosing {
			s += " " + normName(l.name)
			for _, a := range l.attrs {
				s += " " + normName(a.key)
			}
		}
		lexed = append(lexed, s)
	}
	z := html.NewTokenizer(bytes.NewReader(doc))
	for {
		tt := z.Next()
		var k tokKind
		switch tt {
		case html.ErrorToken:
			return lexed, tokenized
		case html.TextToken:
			k = tokText
		case html.StartTagToken:
			k = tokStartTag
		case html.SelfClosingTagToken:
			k = tokSelfClosing
		case html.EndTagToken:
			k = tokEndTag
		case html.CommentToken:
			k = tokComment
		case html.DoctypeToken:
			k = tokDoctype
		}
		s := fmt.Sprintf("%d %q", k, z.Raw())
		if k == tokStartTag || k == tokSelfClosing {
			name, more := z.TagName()
			s += " " + normName(name)
			for more {
				var key []byte
				key, _, more = z.TagAttr()
				s += " " + normName(key)
			}
		}
		tokenized = append(tokenized, s)
	}
}

// normName compares names the way the Tokenizer reports them (NUL as
// U+FFFD, lower case); only token boundaries matter to the rewriter.
func normName(b []byte) string {
	s := strings.ToValidUTF8(strings.ReplaceAll(string(b), "\x00", "\ufffd"), "\ufffd")
	return fmt.Sprintf("%q", strings.ToLower(s))
}

func checkLexer(t *testing.T, name string, doc []byte) {
	t.Helper()
	lexed, tokenized := lexTokens(doc)
	for i := 0; i < max(len(lexed), len(tokenized)); i++ {
		var a, b string
		if i < len(lexed) {
			a = lexed[i]
		}
		if i < len(tokenized) {
			b = tokenized[i]
		}
		if a != b {
			t.Errorf("%s: token %d: lexer %s, Tokenizer %s", name, i, a, b)
			return
		}
	}
}

// TestLexerAgreesWithTokenizer: on edge cases and on the HTML of every corpus
// message, the lexer yields the Tokenizer's tokens, byte for byte.
func TestLexerAgreesWithTokenizer(t *testing.T) {
	for _, c := range lexEdgeCases {
		checkLexer(t, fmt.Sprintf("%q", c), []byte(c))
	}
	files := corpusFiles(t)
	more, _ := filepath.Glob("testdata/*.eml")
	n := 0
	for _, f := range append(files, more...) {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		parts, err := htmlParts(in)
		if err != nil {
			parts, _ = htmlParts(repairHeader(in))
		}
		for i, p := range parts {
			checkLexer(t, fmt.Sprintf("%s part %d", filepath.Base(f), i), p.body)
			n++
			// Conditional comments are lexed on their own.
			for _, c := range strings.Split(string(p.body), "<!--") {
				checkLexer(t, filepath.Base(f)+" comment", []byte(c))
			}
		}
	}
	t.Logf("%d HTML parts and %d edge cases lexed as the Tokenizer does", n, len(lexEdgeCases))
}

// FuzzLexer: the lexer and the Tokenizer agree on any input.
func FuzzLexer(f *testing.F) {
	for _, c := range lexEdgeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		checkLexer(t, "input", doc)
	})
}

// qpCases exercise the corners of mime/quotedprintable's Reader.
var qpCases = []string{
	"", "a", "a=", "=", "=\n", "a=\r\n", "a= \r\nb", "a=  \nb", "a=x\nb", "=3D", "=3d", "=3", "=3\n", "=\n=", "a=\rb\n",
	"a=\r\nb=", "a =\n", "a \n", "a\t\r\n", "=4=\n1", "a=4\r\n", "a=41=\r\n", "caf=C3=A9", "x\x01y", "x\x7fy", "x\xffy",
	"a\rb", "=\r", "= ", "a= b", "=A", "=A\n", "=\r\n\r\n", "line\r\n\r\n", "a==41", "a=G1", "a=\t\n",
	strings.Repeat("x", 4095) + "\n", strings.Repeat("x", 4096) + "\n", strings.Repeat("x", 4095), strings.Repeat("x", 4096),
	strings.Repeat("y", 5000),
}

// checkQP compares decodeQP with mime/quotedprintable's Reader: same output,
// and an error exactly when the Reader fails.
func checkQP(t *testing.T, in []byte) {
	t.Helper()
	var want bytes.Buffer
	_, werr := want.ReadFrom(quotedprintable.NewReader(bytes.NewReader(in)))
	got, err := decodeQP(nil, in)
	if (err != nil) != (werr != nil) || err == nil && !bytes.Equal(got, want.Bytes()) {
		t.Errorf("%q: decodeQP = %q, %v; Reader = %q, %v", in, got, err, want.Bytes(), werr)
	}
}

// TestDecodeQPAgreesWithStdlib: on edge cases and on every quoted-printable
// body of the corpus, decodeQP decodes as mime/quotedprintable does.
func TestDecodeQPAgreesWithStdlib(t *testing.T) {
	for _, c := range qpCases {
		checkQP(t, []byte(c))
	}
	for _, f := range corpusFiles(t) {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		root, err := rawTree(in)
		if err != nil {
			continue
		}
		var walk func(n *rawNode)
		walk = func(n *rawNode) {
			for _, c := range n.children {
				walk(c)
			}
			if len(n.children) == 0 && strings.Contains(strings.ToLower(n.header.Get("Content-Transfer-Encoding")), "quoted") {
				checkQP(t, n.body)
			}
		}
		walk(root)
	}
}

// FuzzDecodeQP: decodeQP and mime/quotedprintable agree on any input.
func FuzzDecodeQP(f *testing.F) {
	for _, c := range qpCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkQP(t, in) })
}
