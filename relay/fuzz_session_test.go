package relay

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"github.com/trackrelay/trackrelay/internal/ratelimit"
)

// panicSpotter is a slog handler that notes any record about a panic:
// go-smtp recovers a panic in a session, answers 421 and logs it, so a
// crash would otherwise go unseen.
type panicSpotter struct{ seen atomic.Pointer[string] }

func (p *panicSpotter) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicSpotter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(strings.ToLower(r.Message), "panic") {
		m := r.Message
		p.seen.Store(&m)
	}
	return nil
}
func (p *panicSpotter) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panicSpotter) WithGroup(string) slog.Handler      { return p }

// waitGoroutines waits until at most n goroutines run, and reports whether
// they did within d.
func waitGoroutines(n int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if runtime.NumGoroutine() <= n {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// FuzzSMTPSession sends command sequences to a relay on loopback: it must
// never panic, answer anything but well-formed replies, or leave
// goroutines behind once a connection is over.
func FuzzSMTPSession(f *testing.F) {
	auth := "AUTH PLAIN " + plainIR("", "alice", "pw") + "\r\n"
	for _, seed := range []string{
		"EHLO a\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"EHLO a\r\n" + auth + "MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<b@example.net>\r\nDATA\r\nX-Track: none\r\n\r\n<a href=\"http://x\">x</a>\r\n..dot\r\n.\r\nRSET\r\nQUIT\r\n",
		"EHLO a\r\nAUTH LOGIN\r\nYWxpY2U=\r\ncHc=\r\nMAIL FROM:<>\r\nRCPT TO:<@a:b@c>\r\nRCPT TO:<b%c@d>\r\nRCPT TO:<\"q\"@d>\r\n",
		"HELO a\r\nMAIL FROM:<a@b>\r\nBDAT 10 LAST\r\n0123456789",
		"EHLO a\r\nSTARTTLS\r\nRSET\r\n",
		"EHLO a\r\nAUTH PLAIN\r\n*\r\nAUTH CRAM-MD5\r\nAUTH PLAIN =\r\nAUTH PLAIN !!!\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: no end",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nno header line\r\n\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\nSubject: lf only\n\nbody\n.\n",
		"ehlo\r\nmail from:\r\nrcpt to:\r\ndata\r\nvrfy x\r\nexpn x\r\nhelp\r\nnoop\r\n\r\n\x00\xff\r\n",
		"EHLO a\r\nMAIL FROM:<a@b> SMTPUTF8 RET=HDRS ENVID=x AUTH=<>\r\nRCPT TO:<c@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d\r\nDATA\r\n\r\n.\r\n",
	} {
		f.Add([]byte(seed))
	}

	// Registered before the harness's cleanup, this runs after it: once the
	// relay is shut down, nothing it started may still run.
	before := runtime.NumGoroutine()
	f.Cleanup(func() {
		if !waitGoroutines(before, 5*time.Second) {
			f.Errorf("goroutines after the server closed: %d, before it started: %d\n%s", runtime.NumGoroutine(), before, allStacks())
		}
	})
	spotter := &panicSpotter{}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	h := newHarness(f, harnessOpts{
		log:         slog.New(spotter),
		tls:         true,
		maxSize:     64 << 10,
		maxRcpts:    5,
		cmdTimeout:  2 * time.Second,
		dataTimeout: 2 * time.Second,
		accounts: []Account{{Name: "alice", PasswordHash: hash, Mode: ModeAll,
			Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}},
		// Keep each input fast: no login throttling.
		server: func(s *Server) { s.limiter = ratelimit.New(rate.Every(time.Nanosecond), 1<<30) },
	})

	session := func(script []byte) ([]byte, error) {
		c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// Write while reading, so that neither side blocks on a full buffer.
		go func() {
			c.Write(script)
			c.(*net.TCPConn).CloseWrite()
		}()
		return io.ReadAll(c)
	}
	// The baseline is taken on the goroutine that runs the inputs, after
	// one session, once what it started has settled.
	var baselineOnce sync.Once
	baseline := 0

	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) > 32<<10 {
			t.Skip("long inputs only test the line and size limits")
		}
		baselineOnce.Do(func() {
			if _, err := session([]byte("QUIT\r\n")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			baseline = runtime.NumGoroutine()
		})
		out, err := session(script)
		if err != nil && !isReset(err) {
			t.Fatalf("session: %v (read %q)", err, out)
		}
		if p := spotter.seen.Load(); p != nil {
			t.Fatalf("server logged a panic: %s\ninput %q", *p, script)
		}
		if bytes.Contains(out, []byte("Internal server error")) {
			t.Fatalf("server answered 421 internal error:\n%s\ninput %q", out, script)
		}
		// Every reply line is a code and text; the greeting comes first.
		if !bytes.HasPrefix(out, []byte("220 ")) {
			t.Fatalf("no greeting: %q", out)
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(out), "\r\n"), "\r\n") {
			if len(line) < 4 || line[0] < '2' || line[0] > '5' || (line[3] != ' ' && line[3] != '-') {
				// A TLS handshake started by the input is answered in binary.
				if !bytes.Contains(bytes.ToUpper(script), []byte("STARTTLS")) {
					t.Fatalf("malformed reply line %q\ninput %q", line, script)
				}
				break
			}
		}
		if !waitGoroutines(baseline, 5*time.Second) {
			t.Fatalf("goroutines: %d after the session, %d before\ninput %q\n%s", runtime.NumGoroutine(), baseline, script, allStacks())
		}
	})
}
