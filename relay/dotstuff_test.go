package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stdDATA is the DATA encoding of body by net/textproto's DotWriter, which
// go-smtp's client uses: the reference.
func stdDATA(body []byte) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	w := textproto.NewWriter(bw).DotWriter()
	w.Write(body)
	w.Close()
	return out.Bytes()
}

// stuffedDATA is the DATA encoding of body by dotStuffer, fed in chunks of
// size step (all of it at once when step is 0), finished through a
// DotWriter on the same stream as transaction does.
func stuffedDATA(t testing.TB, body []byte, step int) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	dw := textproto.NewWriter(bw).DotWriter()
	d := newDotStuffer(&out)
	if step <= 0 {
		step = len(body) + 1
	}
	for p := body; len(p) > 0; {
		n := min(step, len(p))
		if k, err := d.Write(p[:n]); err != nil || k != n {
			t.Fatalf("Write: %d, %v", k, err)
		}
		p = p[n:]
	}
	if err := d.finish(dw); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// wellFormed reports whether every CR of b is followed by LF: the bodies on
// which both encoders must agree byte for byte. (On a bare CR before a line
// end, DotWriter adds another CR; dotStuffer keeps the line as it is.)
func wellFormed(b []byte) bool {
	for i, c := range b {
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return false
		}
	}
	return true
}

var dotBodies = []string{
	"",
	"a",
	"a\r\n",
	".\r\n",
	"..\r\n",
	".a\r\n.b\r\n",
	"x\r\n.\r\ny\r\n",
	"x\r\n.\r\n",
	"bare\nlf\n.dot\n",
	"\n\n\n",
	"\r\n\r\n",
	"no final newline",
	".no final newline",
	"mixed\r\nends\n.\r\n..\n",
	"Subject: x\r\n\r\n" + strings.Repeat("a", 70000) + "\r\n." + strings.Repeat("b", 100) + "\r\n",
	"ends with cr\r",
	"a\rb\r\n",
	".\r",
}

func TestDotStuffer_matchesTextproto(t *testing.T) {
	for _, body := range dotBodies {
		want := stdDATA([]byte(body))
		for _, step := range []int{0, 1, 2, 3, 7, 4096} {
			got := stuffedDATA(t, []byte(body), step)
			if wellFormed([]byte(body)) && !bytes.Equal(got, want) {
				t.Errorf("body %.40q, step %d:\n got %.80q\nwant %.80q", body, step, got, want)
			}
			if !bytes.HasSuffix(got, []byte("\r\n.\r\n")) {
				t.Errorf("body %.40q, step %d: data not ended by CRLF.CRLF: %.80q", body, step, got)
			}
			if one := stuffedDATA(t, []byte(body), 0); !bytes.Equal(got, one) {
				t.Errorf("body %.40q: step %d changes the output", body, step)
			}
		}
	}
}

// A bare CR is not a line break to SMTP, but some receivers take it for
// one: a dot after it is doubled, so that no receiver reads "<CR>.<CR><LF>"
// as the end of the data (SMTP smuggling).
func TestDotStuffer_bareCRs(t *testing.T) {
	for body, want := range map[string]string{
		"a\rb\r\n":          "a\rb\r\n.\r\n",
		"ends with cr\r":    "ends with cr\r\n.\r\n",
		".\r":               "..\r\n.\r\n",
		"a\r\r\nb":          "a\r\r\nb\r\n.\r\n",
		"x\r.\r\ny\r\n":     "x\r..\r\ny\r\n.\r\n",
		"\r.\r\n":           "\r..\r\n.\r\n",
		"a\r..b\r\n":        "a\r...b\r\n.\r\n",
		"x\r\n.\r.\r\nMAIL": "x\r\n..\r..\r\nMAIL\r\n.\r\n",
	} {
		for _, step := range []int{0, 1, 2, 3} {
			if got := stuffedDATA(t, []byte(body), step); string(got) != want {
				t.Errorf("%q, step %d: got %q, want %q", body, step, got, want)
			}
		}
	}
}

// noSmuggling checks that every dot after a bare CR in DATA is doubled.
func noSmuggling(t *testing.T, data []byte) {
	t.Helper()
	for i := 0; i+1 < len(data); i++ {
		if data[i] == '\r' && data[i+1] == '.' {
			if i+2 >= len(data) || data[i+2] != '.' {
				t.Fatalf("a single dot after a bare CR at %d: %q", i, data)
			}
			i += 2
		}
	}
}

func FuzzDotStuffer(f *testing.F) {
	for _, b := range dotBodies {
		f.Add([]byte(b), 3)
	}
	f.Fuzz(func(t *testing.T, body []byte, step int) {
		if step < 0 || step > len(body)+1 {
			step = 0
		}
		got := stuffedDATA(t, body, step)
		if wellFormed(body) {
			if want := stdDATA(body); !bytes.Equal(got, want) {
				t.Fatalf("got %q\nwant %q", got, want)
			}
		}
		// Whatever the body, the data is one dot-terminated block whose
		// lines all end in CRLF and whose dot lines are all stuffed.
		if !bytes.HasSuffix(got, []byte("\r\n.\r\n")) {
			t.Fatalf("not terminated: %q", got)
		}
		noSmuggling(t, got[:len(got)-len(".\r\n")])
		lines := bytes.Split(got[:len(got)-len(".\r\n")], []byte("\n"))
		for i, l := range lines[:len(lines)-1] {
			if !bytes.HasSuffix(l, []byte("\r")) {
				t.Fatalf("line %d ends in a bare LF: %q", i, got)
			}
			if bytes.Equal(l, []byte(".\r")) {
				t.Fatalf("line %d ends the data early: %q", i, got)
			}
		}
	})
}

// TestUpstream_bodyOverEachTransport delivers bodies with dot lines, bare
// LFs and no final line ending over each upstream TLS mode (the fast path
// without TLS and with implicit TLS, go-smtp's writer after STARTTLS) to a
// real go-smtp server, which must receive each body as DotWriter sends it.
func TestUpstream_bodyOverEachTransport(t *testing.T) {
	cert := testCert(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	for _, mode := range []string{TLSNone, TLSImplicit, TLSStartTLS} {
		t.Run(mode, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var s *sink
			switch mode {
			case TLSImplicit:
				s = startSink(t, tls.NewListener(ln, serverTLS), nil)
			case TLSStartTLS:
				s = startSink(t, ln, serverTLS)
			default:
				s = startSink(t, ln, nil)
			}
			p := newUpstreamPool(UpstreamConfig{
				Address: s.addr, TLS: mode, Hostname: "relay.test", MaxConnections: 1,
				TLSConfig: &tls.Config{InsecureSkipVerify: true}, DataTimeout: 10 * time.Second,
			}, NewMetrics(nil))
			defer p.Close()
			for i, body := range dotBodies {
				if !wellFormed([]byte(body)) {
					continue
				}
				if _, err := p.send("a@example.com", "b@example.net", int64(len(body)), strings.NewReader(body), false); err != nil {
					t.Fatalf("body %d: %v", i, err)
				}
				got := s.messages()
				if len(got) == 0 {
					t.Fatalf("body %d: nothing received", i)
				}
				// What go-smtp's server hands its backend for the reference
				// encoding: the unstuffed lines, without the final dot line.
				want := unstuff(t, stdDATA([]byte(body)))
				if last := got[len(got)-1].Data; !bytes.Equal(last, want) {
					t.Errorf("body %d (%.30q): received %.80q, want %.80q", i, body, last, want)
				}
			}
			// A dot after a bare CR arrives doubled on every transport.
			smuggle := "x\r.\r\nMAIL FROM:<a@example.com>\r\ny\r.\r\n"
			if _, err := p.send("a@example.com", "b@example.net", int64(len(smuggle)), oneByteSeeker{strings.NewReader(smuggle)}, false); err != nil {
				t.Fatal(err)
			}
			msgs := s.messages()
			if got, want := string(msgs[len(msgs)-1].Data), "x\r..\r\nMAIL FROM:<a@example.com>\r\ny\r..\r\n"; got != want {
				t.Errorf("received %q, want %q", got, want)
			}
			if n := len(msgs); n != countWellFormed()+1 {
				t.Errorf("received %d messages, want %d", n, countWellFormed()+1)
			}
			s.mu.Lock()
			conns := s.conns
			s.mu.Unlock()
			want := 1
			if mode == TLSStartTLS {
				want = 2 // go-smtp's server starts a new session after STARTTLS
			}
			if conns != want {
				t.Errorf("%d sessions for %d messages, want %d: one connection reused", conns, countWellFormed()+1, want)
			}
		})
	}
}

func countWellFormed() int {
	n := 0
	for _, b := range dotBodies {
		if wellFormed([]byte(b)) {
			n++
		}
	}
	return n
}

// unstuff decodes DATA as an SMTP server does: dots removed, line endings
// kept, up to the final dot line.
func unstuff(t *testing.T, data []byte) []byte {
	var out []byte
	for len(data) > 0 {
		i := bytes.Index(data, []byte("\r\n"))
		if i < 0 {
			t.Fatalf("unterminated data %q", data)
		}
		line := data[:i+2]
		data = data[i+2:]
		if string(line) == ".\r\n" {
			return out
		}
		out = append(out, bytes.TrimPrefix(line, []byte("."))...)
	}
	t.Fatal("no final dot line")
	return nil
}

var _ io.Writer = (*dotStuffer)(nil)

// oneByteSeeker reads one byte a call, so that writers see every split.
type oneByteSeeker struct{ r *strings.Reader }

func (o oneByteSeeker) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }
func (o oneByteSeeker) Seek(off int64, whence int) (int64, error) {
	return o.r.Seek(off, whence)
}

func TestCRDotGuard(t *testing.T) {
	for body, want := range map[string]string{
		"plain\r\n.line\r\n": "plain\r\n.line\r\n",
		"x\r.\r\n":           "x\r..\r\n",
		"\r.\r.":             "\r..\r..",
		"a\r\r.b":            "a\r\r..b",
	} {
		for _, step := range []int{1, 2, 3, 100} {
			var out bytes.Buffer
			g := &crDotGuard{w: &out}
			for p := []byte(body); len(p) > 0; {
				n := min(step, len(p))
				if k, err := g.Write(p[:n]); k != n || err != nil {
					t.Fatalf("Write: %d, %v", k, err)
				}
				p = p[n:]
			}
			if out.String() != want {
				t.Errorf("%q, step %d: %q, want %q", body, step, out.String(), want)
			}
		}
	}
}

// BenchmarkDotStuffer encodes the 5 MB sample message (a base64
// attachment: short CRLF lines) as it goes upstream, in 32 KiB writes.
func BenchmarkDotStuffer(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("..", "..", "shared", "bench", "msg-attach-5m.eml"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		d := newDotStuffer(io.Discard)
		for p := body; len(p) > 0; {
			n := min(32<<10, len(p))
			d.Write(p[:n])
			p = p[n:]
		}
		d.finish(io.Discard)
	}
}
