package rewrite

import (
	"bytes"
	"fmt"
	"io"
	"mime/quotedprintable"
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
func benchHTML(b testing.TB) []byte {
	b.Helper()
	raw, err := os.ReadFile(benchDir + "/msg-html-20k.eml")
	if err != nil {
		b.Skipf("bench message: %v", err)
	}
	for _, l := range leaves(b, string(raw)) {
		if l.mediaType == "text/html" {
			return l.body
		}
	}
	b.Fatal("no html part")
	return nil
}

// digestHTML returns a 300 KB HTML e-mail built deterministically from the
// 20 KB newsletter: its body content repeated (a long digest), the links of
// each copy made distinct. It has 16 times the newsletter's links and tags.
func digestHTML(b testing.TB) []byte {
	doc := benchHTML(b)
	lower := bytes.ToLower(doc)
	bs := bytes.Index(lower, []byte("<body"))
	bs += bytes.IndexByte(doc[bs:], '>') + 1
	be := bytes.LastIndex(lower, []byte("</body"))
	var out bytes.Buffer
	out.Write(doc[:bs])
	for i := 0; out.Len()+len(doc)-be < 300_000; i++ {
		out.Write(bytes.ReplaceAll(doc[bs:be], []byte("utm_content="), fmt.Appendf(nil, "utm_content=d%d-", i)))
	}
	out.Write(doc[be:])
	return out.Bytes()
}

// digestMessage returns digestHTML as a quoted-printable text/html message
// with the newsletter's header.
func digestMessage(b testing.TB) []byte {
	raw, err := os.ReadFile(benchDir + "/msg-html-20k.eml")
	if err != nil {
		b.Skipf("bench message: %v", err)
	}
	hdr, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	hdr = hdr[:bytes.Index(hdr, []byte("Content-Type:"))]
	var msg bytes.Buffer
	msg.Write(hdr)
	msg.WriteString("Content-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	qw := quotedprintable.NewWriter(&msg)
	qw.Write(digestHTML(b))
	qw.Close()
	msg.WriteString("\r\n")
	return msg.Bytes()
}

// htmlCases are the documents of the HTML benchmarks.
func htmlCases(b *testing.B) []struct {
	name string
	doc  []byte
} {
	return []struct {
		name string
		doc  []byte
	}{{"20k", benchHTML(b)}, {"300k", digestHTML(b)}}
}

// BenchmarkHTML measures the HTML rewrite alone: tokenizer pass, link rules,
// minting and applying the edits.
func BenchmarkHTML(b *testing.B) {
	for _, c := range htmlCases(b) {
		b.Run(c.name, func(b *testing.B) {
			m := newRecMinter()
			b.SetBytes(int64(len(c.doc)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				mr := newMessageRewriter(allOpts(m), &header{})
				if _, changed, err := mr.rewriteHTML(c.doc); err != nil || !changed {
					b.Fatal(err)
				}
				mr.sc.release()
			}
		})
	}
}

// BenchmarkDOMBaseline is the approach this package avoids: parse to a DOM
// and render it back (no rewriting at all).
func BenchmarkDOMBaseline(b *testing.B) {
	for _, c := range htmlCases(b) {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.doc)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				n, err := html.Parse(bytes.NewReader(c.doc))
				if err != nil {
					b.Fatal(err)
				}
				if err := html.Render(io.Discard, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMessage is the whole job: MIME walk, QP decode, HTML rewrite, QP
// encode, on the 20 KB newsletter (multipart/alternative, 26 links) and on
// the 300 KB digest.
func BenchmarkMessage(b *testing.B) {
	for _, c := range []struct {
		name string
		raw  []byte
	}{{"20k", benchMessage(b, "msg-html-20k.eml")}, {"300k", digestMessage(b)}} {
		b.Run(c.name, func(b *testing.B) {
			m := newRecMinter()
			b.SetBytes(int64(len(c.raw)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := Message(io.Discard, bytes.NewReader(c.raw), allOpts(m)); err != nil {
					b.Fatal(err)
				}
			}
		})
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

// bigAttachment streams a message with an attachment of n bytes (before
// base64, so about 4n/3 on the wire) without holding it in memory.
func bigAttachment(n int) io.Reader {
	line := strings.Repeat("QUJDRA", 12) + "QUJD\r\n" // 57 bytes as 76 chars + CRLF
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
		io.LimitReader(&repeatReader{s: line}, int64((n+56)/57*len(line))),
		strings.NewReader("\r\n--m--\r\n"))
}

// heapSampler reads through r and samples the heap every sampleEvery bytes:
// peak is the largest HeapInuse seen while the message streamed.
type heapSampler struct {
	r     io.Reader
	n     int64 // bytes read
	next  int64
	peak  uint64
	stats runtime.MemStats
}

const sampleEvery = 256 << 10

func (h *heapSampler) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.n += int64(n)
	if h.n >= h.next || err != nil {
		h.next = h.n + sampleEvery
		runtime.ReadMemStats(&h.stats)
		h.peak = max(h.peak, h.stats.HeapInuse)
	}
	return n, err
}

// streamPeakHeap rewrites a message with an n-byte attachment and returns the
// peak HeapInuse, the bytes allocated and the message size.
func streamPeakHeap(tb testing.TB, n int) (peak, alloc uint64, size int64) {
	tb.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	hs := &heapSampler{r: bigAttachment(n)}
	res, err := Message(io.Discard, hs, allOpts(newRecMinter()))
	runtime.ReadMemStats(&after)
	if err != nil || res.HTMLParts != 1 {
		tb.Fatalf("%v %+v", err, res)
	}
	return max(hs.peak, after.HeapInuse), after.TotalAlloc - before.TotalAlloc, hs.n
}

// BenchmarkMessage50MBAttachment pushes a message with a 50 MB attachment
// through Message, streamed from a generator, and reports the bytes
// allocated per message and the peak heap in use (which must stay under
// 32 MB, see TestStreamingPeakHeap).
func BenchmarkMessage50MBAttachment(b *testing.B) {
	b.ReportAllocs()
	var peak uint64
	for i := 0; i < b.N; i++ {
		p, _, size := streamPeakHeap(b, 50e6)
		peak = max(peak, p)
		b.SetBytes(size)
	}
	b.ReportMetric(float64(peak), "peak-heap-B")
	if peak >= 32<<20 {
		b.Errorf("peak heap %d bytes, want < 32 MiB", peak)
	}
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
		t.Skip("-short: streams a 48 MB attachment")
	}
	_, small, _ := streamPeakHeap(t, 1<<20)
	peak, large, size := streamPeakHeap(t, 48<<20)
	t.Logf("allocated %d bytes for a 1 MiB attachment, %d for 48 MiB (%d bytes on the wire); peak heap in use %d bytes",
		small, large, size, peak)
	if large > 2<<20 || large > small+(1<<20) {
		t.Errorf("allocations grow with the attachment: %d vs %d bytes", small, large)
	}
	if peak >= 32<<20 {
		t.Errorf("peak heap in use %d bytes, want < 32 MiB", peak)
	}
}

// TestAllocsFollowLinks: the HTML rewrite allocates per link, not per byte or
// per tag: a hundredfold more markup costs no more allocations, ten times the
// links at most ten times as many.
func TestAllocsFollowLinks(t *testing.T) {
	doc := func(tags, links int) []byte {
		var b bytes.Buffer
		b.WriteString("<html><head><style>p{color:red}</style></head><body>")
		for i := range tags {
			fmt.Fprintf(&b, "<div class=\"row r%d\" style=\"margin:0\"><p>Some text &amp; <b>bold</b></p></div>\n", i)
		}
		for i := range links {
			fmt.Fprintf(&b, "<a href=\"https://x.example/p?i=%d&amp;u=1\">go</a>\n", i)
		}
		b.WriteString("</body></html>")
		return b.Bytes()
	}
	m := newRecMinter()
	allocs := func(d []byte) float64 {
		return testing.AllocsPerRun(20, func() {
			mr := newMessageRewriter(allOpts(m), &header{})
			if _, changed, err := mr.rewriteHTML(d); err != nil || !changed {
				t.Fatal(err)
			}
			mr.sc.release()
		})
	}
	few, many, linky := allocs(doc(100, 10)), allocs(doc(10000, 10)), allocs(doc(100, 100))
	t.Logf("allocations: %.0f for 100 blocks and 10 links, %.0f for 10000 blocks, %.0f for 100 links", few, many, linky)
	// A slack of 10: under the race detector sync.Pool drops a share of what
	// is put back, so a run may allocate its scratch buffers again. Growth
	// with the markup would be thousands more for 100 times the tags.
	if many > few+10 {
		t.Errorf("allocations grow with the markup: %.0f vs %.0f", many, few)
	}
	if linky > 10*few {
		t.Errorf("more than linear in the links: %.0f vs %.0f", linky, few)
	}
}
