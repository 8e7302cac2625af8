package rewrite

import (
	"bytes"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

const benchDir = "../../shared/bench"

func benchMessage(b *testing.B, name string) []byte {
	b.Helper()
	raw, err := os.ReadFile(benchDir + "/" + name)
	if err != nil {
		b.Skipf("bench message: %v", err)
	}
	return raw
}

// benchHTML returns the decoded HTML of the 20 KB newsletter.
func benchHTML(b *testing.B) []byte {
	b.Helper()
	for _, l := range leaves(b, string(benchMessage(b, "msg-html-20k.eml"))) {
		if l.mediaType == "text/html" {
			return l.body
		}
	}
	b.Fatal("no html part")
	return nil
}

// BenchmarkHTML measures the HTML rewrite alone: tokenizer pass, link rules,
// minting and applying the edits.
func BenchmarkHTML(b *testing.B) {
	doc := benchHTML(b)
	m := newRecMinter()
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mr := newMessageRewriter(allOpts(m), &header{})
		if _, changed, err := mr.rewriteHTML(doc); err != nil || !changed {
			b.Fatal(err)
		}
	}
}

// BenchmarkDOMBaseline is the approach this package avoids: parse to a DOM
// and render it back (no rewriting at all).
func BenchmarkDOMBaseline(b *testing.B) {
	doc := benchHTML(b)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := html.Parse(bytes.NewReader(doc))
		if err != nil {
			b.Fatal(err)
		}
		if err := html.Render(io.Discard, n); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMessage is the whole job on the 20 KB newsletter: MIME walk, QP
// decode, HTML rewrite, QP encode.
func BenchmarkMessage(b *testing.B) {
	raw := benchMessage(b, "msg-html-20k.eml")
	m := newRecMinter()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Message(io.Discard, bytes.NewReader(raw), allOpts(m)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMessageAttachment is the newsletter with a 5 MiB attachment: the
// attachment is streamed, so bytes allocated per op stay far below its size.
func BenchmarkMessageAttachment(b *testing.B) {
	raw := benchMessage(b, "msg-attach-5m.eml")
	m := newRecMinter()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Message(io.Discard, bytes.NewReader(raw), allOpts(m)); err != nil {
			b.Fatal(err)
		}
	}
}

// bigAttachment streams a message with an n-byte base64 attachment without
// holding it in memory.
func bigAttachment(n int) io.Reader {
	line := strings.Repeat("QUJDRA", 12) + "QUJD\r\n" // 76 chars + CRLF
	head := crlf(`From: a@example.com
Content-Type: multipart/mixed; boundary="m"

--m
Content-Type: text/html; charset=utf-8

<body><a href="https://x.example/">x</a></body>
--m
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

`)
	return io.MultiReader(strings.NewReader(head),
		io.LimitReader(&repeatReader{s: line}, int64(n)),
		strings.NewReader("\r\n--m--\r\n"))
}

type repeatReader struct {
	s string
	i int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.s[r.i:])
		n += c
		r.i = (r.i + c) % len(r.s)
	}
	return n, nil
}

// TestStreamingMemory: memory does not grow with the attachment's size.
func TestStreamingMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	alloc := func(n int) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		res, err := Message(io.Discard, bigAttachment(n), allOpts(newRecMinter()))
		runtime.ReadMemStats(&after)
		if err != nil || res.HTMLParts != 1 {
			t.Fatalf("%v %+v", err, res)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := alloc(1<<20), alloc(64<<20)
	t.Logf("allocated %d bytes for a 1 MiB attachment, %d for 64 MiB", small, large)
	if large > 2<<20 || large > small+(1<<20) {
		t.Errorf("allocations grow with the attachment: %d vs %d bytes", small, large)
	}
}
