package relay

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// syncBuffer is a log destination shared by goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var refRE = regexp.MustCompile(`\(ref ([0-9a-f]{8})\)$`)

// logLineOf returns the log line that carries ref=REF.
func logLineOf(t *testing.T, logs, ref string) string {
	t.Helper()
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "ref="+ref) {
			return line
		}
	}
	t.Fatalf("no log line carries ref %s:\n%s", ref, logs)
	return ""
}

// A copy that fails on this host (its spool file is gone) records a generic
// last response with a ref, never the error's text and path; the bounce the
// sender gets says the same; the log line with the ref holds the whole error.
func TestDelivery_localErrorShowsNoPath(t *testing.T) {
	dir := t.TempDir()
	spool, err := OpenSpool(dir+"/spool", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	up := newSink(t)
	var logs syncBuffer
	ledger := newMemLedger()
	d := NewDeliverer(DeliveryConfig{Hostname: "relay.test", Lifetime: time.Nanosecond,
		Upstream: &UpstreamConfig{Address: up.addr, TLS: TLSNone}},
		spool, ledger, testMinters{}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Shutdown(shutdownCtx(t)) })

	env := &Envelope{From: "alice@example.com", Mode: ModeAll, AcceptedAt: time.Now().UTC(),
		Recipients: []Recipient{{Address: "bob@example.net", Tracked: true, Status: StatusQueued}}}
	if err := spool.Enqueue(env, []byte(crlf(htmlMsg))); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(spool.path(env.ID)); err != nil {
		t.Fatal(err)
	}
	d.Submit(env, false)

	r := ledger.waitStatus(t, env.ID, 0, StatusBounced)
	m := refRE.FindStringSubmatch(r.LastResponse)
	if m == nil || !strings.HasPrefix(r.LastResponse, "message expired after 1ns: local error (ref ") || strings.Contains(r.LastResponse, "/") {
		t.Fatalf("last response %q, want \"message expired after 1ns: local error (ref ID)\"", r.LastResponse)
	}
	if line := logLineOf(t, logs.String(), m[1]); !strings.Contains(line, spool.path(env.ID)) {
		t.Errorf("the log line of ref %s does not hold the error: %s", m[1], line)
	}

	msgs := up.waitFor(t, 1)
	dsn := msgs[0].Data
	if msgs[0].To != "alice@example.com" || !bytes.Contains(dsn, []byte("Action: failed")) {
		t.Fatalf("bounce:\n%s", dsn)
	}
	if !bytes.Contains(dsn, []byte("local error (ref "+m[1]+")")) {
		t.Errorf("bounce does not give the ref %s:\n%s", m[1], dsn)
	}
	for _, leak := range []string{dir, "/spool", "/msg/", ".eml", "no such file"} {
		if bytes.Contains(dsn, []byte(leak)) {
			t.Errorf("bounce carries %q:\n%s", leak, dsn)
		}
	}
}

// A capture that cannot be written (the outbox is gone) is deferred with a
// generic local error, not the path it failed on.
func TestDelivery_captureErrorShowsNoPath(t *testing.T) {
	ledger := newMemLedger()
	d, spool := captureDeliverer(t, ledger, DeliveryConfig{})
	startDeliverer(t, d)
	if err := os.Remove(d.cfg.CaptureDir); err != nil {
		t.Fatal(err)
	}
	env := enqueueHTML(t, spool, "bob@example.net", StatusQueued, time.Time{})
	d.Submit(env, false)
	r := ledger.waitStatus(t, env.ID, 0, StatusDeferred)
	if !regexp.MustCompile(`^local error \(ref [0-9a-f]{8}\)$`).MatchString(r.LastResponse) {
		t.Errorf("last response %q", r.LastResponse)
	}
}

// failingBody reads some bytes and then fails as a disk does.
type failingBody struct {
	n int
}

func (b *failingBody) Read(p []byte) (int, error) {
	if b.n >= 64 {
		return 0, &fs.PathError{Op: "read", Path: "/var/lib/trackrelay/spool/msg/X.eml", Err: syscall.EIO}
	}
	n := copy(p, strings.Repeat("x", 64-b.n))
	b.n += n
	return n, nil
}

func (b *failingBody) Seek(int64, int) (int64, error) { b.n = 0; return 0, nil }

func TestPublicError(t *testing.T) {
	// A read of the copy failing in the middle of DATA is local, not the
	// network's.
	addr := scriptedUpstream(t, func(n int, c net.Conn) {
		if r := speak(c); r != nil {
			readData(r)
		}
	})
	p := newUpstreamPool(UpstreamConfig{Address: addr, TLS: TLSNone}, NewMetrics(nil))
	t.Cleanup(p.Close)
	_, midData := p.send("a@example.com", "b@example.net", 64, &failingBody{}, false)

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	_, refused := (&net.Dialer{}).Dial("tcp", closedAddr)

	cases := []struct {
		name string
		err  error
		want string // the text before " (ref ID)"; a reply is kept whole
	}{
		{"reply", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}, "550 5.1.1 no such user"},
		{"reply without enhanced code", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.NoEnhancedCode, Message: "later"}, "451 later"},
		{"session refused", connError{&smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}},
			"connection error: upstream refused the session: 535 5.7.8 bad credentials"},
		{"local", local(&fs.PathError{Op: "open", Path: "/var/lib/trackrelay/spool/msg/X.eml", Err: fs.ErrNotExist}), textLocal},
		{"read failing during DATA", midData, textLocal},
		{"connection refused", connError{refused}, textUnreachable},
		{"host not found", connError{&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "smtp.internal.example", IsNotFound: true}}}, textNotFound},
		{"timeout", &net.OpError{Op: "read", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 587}, Err: os.ErrDeadlineExceeded}, textTimeout},
		{"connection lost", io.ErrUnexpectedEOF, textLost},
		{"anything else", errors.New("smtp: server doesn't support STARTTLS at 10.1.2.3"), textConnFailed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.err == nil {
				t.Fatal("no error to classify")
			}
			var logs syncBuffer
			got := replyText(publicError(c.err, slog.New(slog.NewTextHandler(&logs, nil))))
			m := refRE.FindStringSubmatch(got)
			if m == nil {
				if got != c.want {
					t.Fatalf("text %q, want %q", got, c.want)
				}
				if logs.String() != "" {
					t.Errorf("an upstream reply was logged as an error: %s", logs.String())
				}
				return
			}
			if text := strings.TrimSuffix(got, " "+m[0]); text != c.want {
				t.Errorf("text %q, want %q with a ref", got, c.want)
			}
			for _, leak := range []string{"/", "10.1.2.3", "127.0.0.1", "internal.example"} {
				if strings.Contains(got, leak) {
					t.Errorf("text %q carries %q", got, leak)
				}
			}
			if line := logLineOf(t, logs.String(), m[1]); !strings.Contains(line, c.err.Error()) {
				t.Errorf("the log line of the ref lacks the error %q: %s", c.err, line)
			}
		})
	}

	// Only a reply of the upstream decides that a copy bounces.
	if !permanent(publicError(&smtp.SMTPError{Code: 550, Message: "no"}, slog.New(slog.DiscardHandler))) {
		t.Error("a 550 reply is not permanent")
	}
	if permanent(publicError(connError{&smtp.SMTPError{Code: 535, Message: "no"}}, slog.New(slog.DiscardHandler))) {
		t.Error("a refused session is permanent")
	}
}
