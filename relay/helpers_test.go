package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/rewrite"
)

// sink is a real go-smtp server on loopback standing in for the upstream
// smarthost. It keeps every transaction; reply, when set, decides the
// outcome of each RCPT.
type sink struct {
	mu    sync.Mutex
	msgs  []sunk
	reply func(rcpt string, n int) error // n: attempts so far for this rcpt
	tries map[string]int
	conns int
	addr  string
	srv   *smtp.Server
	ln    net.Listener
}

type sunk struct {
	From, To string
	Data     []byte
	UTF8     bool // MAIL carried SMTPUTF8
}

func newSink(t testing.TB) *sink {
	t.Helper()
	s, err := trySinkAt(t, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func trySinkAt(t testing.TB, addr string) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return startSink(t, ln, nil), nil
}

// startSink serves a sink on ln, offering STARTTLS when startTLS is set.
func startSink(t testing.TB, ln net.Listener, startTLS *tls.Config) *sink {
	return serveSink(t, ln, startTLS, false)
}

// serveSink is startSink that also offers SMTPUTF8 when smtputf8 is set.
func serveSink(t testing.TB, ln net.Listener, startTLS *tls.Config, smtputf8 bool) *sink {
	s := &sink{tries: map[string]int{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		return &sinkSession{s: s}, nil
	}))
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true
	srv.TLSConfig = startTLS
	srv.EnableSMTPUTF8 = smtputf8
	srv.MaxLineLength = 128 << 10 // like Postfix, which takes long lines
	s.addr = ln.Addr().String()
	s.srv = srv
	s.ln = ln
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *sink) messages() []sunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sunk(nil), s.msgs...)
}

// waitFor waits until the sink holds n messages.
func (s *sink) waitFor(t *testing.T, n int) []sunk {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := s.messages(); len(m) >= n {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("sink: want %d messages, have %d", n, len(s.messages()))
	return nil
}

type sinkSession struct {
	s    *sink
	from string
	utf8 bool
	to   []string
}

func (ss *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (ss *sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, u, p string) error {
		if u == "up" && p == "secret" {
			return nil
		}
		return smtp.ErrAuthFailed
	}), nil
}
func (ss *sinkSession) Mail(from string, opts *smtp.MailOptions) error {
	ss.from, ss.utf8 = from, opts != nil && opts.UTF8
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	n := ss.s.tries[to]
	ss.s.tries[to]++
	reply := ss.s.reply
	ss.s.mu.Unlock()
	if reply != nil {
		if err := reply(to, n); err != nil {
			return err
		}
	}
	ss.to = append(ss.to, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	for _, to := range ss.to {
		ss.s.msgs = append(ss.s.msgs, sunk{From: ss.from, To: to, Data: b, UTF8: ss.utf8})
	}
	return nil
}
func (ss *sinkSession) Reset()        { ss.from, ss.utf8, ss.to = "", false, nil }
func (ss *sinkSession) Logout() error { return nil }

// testMinters mints readable fake URLs: the rewriter's output names the
// message, the copy and the link.
type testMinters struct{}

type testMinter struct {
	id   string
	rcpt int
}

func (testMinters) Minter(id string, rcpt int) rewrite.Minter { return testMinter{id, rcpt} }
func (m testMinter) OpenURL() string                          { return fmt.Sprintf("http://t.test/o/%s-%d.gif", m.id, m.rcpt) }
func (m testMinter) ClickURL(i int, dest string) string {
	return fmt.Sprintf("http://t.test/c/%s-%d-%d", m.id, m.rcpt, i)
}

func (m testMinter) HoneypotURL() string {
	return fmt.Sprintf("http://t.test/c/%s-%d-honeypot", m.id, m.rcpt)
}

// The test minters' URLs are on http://t.test, as a tracker's are on its base URL.
func (testMinter) Ours(dest string) bool {
	const base = "http://t.test"
	return len(dest) >= len(base) && strings.EqualFold(dest[:len(base)], base) &&
		(len(dest) == len(base) || strings.ContainsRune("/?#", rune(dest[len(base)])))
}

func (testMinter) IsOpenURL(u string) bool {
	const prefix = "http://t.test/o/"
	return len(u) >= len(prefix) && strings.EqualFold(u[:len(prefix)], prefix)
}

// memLedger is an in-memory Ledger for tests.
type memLedger struct {
	mu        sync.Mutex
	accepted  map[string]*Envelope
	acceptedN map[string]int // Accepted calls per message
	links     map[string][]string
	linksN    map[string]int // Links calls per message
	status    map[string]Recipient
	// statusBeforeAccepted counts Delivery calls for a message not yet
	// Accepted.
	statusBeforeAccepted int
	// failAccepted makes the next Accepted calls fail.
	failAccepted int
	// acceptDelay makes Accepted slow, as a store that waits for company.
	acceptDelay time.Duration
	// down makes every call fail, as a database that is down (setDown).
	down bool
	// reports lists the calls that succeeded, per message, in order:
	// "accepted", "links", "delivery RCPT STATUS ATTEMPTS".
	reports map[string][]string
}

// setDown makes every call fail (true) or succeed again.
func (l *memLedger) setDown(down bool) {
	l.mu.Lock()
	l.down = down
	l.mu.Unlock()
}

// reported returns the calls that succeeded for message id, in order.
func (l *memLedger) reported(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.reports[id]...)
}

var errLedgerDown = errors.New("ledger down")

func newMemLedger() *memLedger {
	return &memLedger{accepted: map[string]*Envelope{}, acceptedN: map[string]int{},
		links: map[string][]string{}, linksN: map[string]int{}, status: map[string]Recipient{},
		reports: map[string][]string{}}
}

func (l *memLedger) Accepted(_ context.Context, env *Envelope, links []string) error {
	l.mu.Lock()
	l.acceptedN[env.ID]++
	delay := l.acceptDelay
	if l.down {
		l.mu.Unlock()
		return errLedgerDown
	}
	if l.failAccepted > 0 {
		l.failAccepted--
		l.mu.Unlock()
		return errors.New("ledger unavailable")
	}
	l.mu.Unlock()
	time.Sleep(delay)
	l.mu.Lock()
	defer l.mu.Unlock()
	cp := *env
	l.accepted[env.ID] = &cp
	l.reports[env.ID] = append(l.reports[env.ID], "accepted")
	if links != nil {
		l.links[env.ID] = links
		l.reports[env.ID] = append(l.reports[env.ID], "links")
	}
	return nil
}

// waitAccepted waits for the report of message id: the relay makes it in
// the background.
func (l *memLedger) waitAccepted(t *testing.T, id string) *Envelope {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		env := l.accepted[id]
		l.mu.Unlock()
		if env != nil {
			return env
		}
	}
	t.Fatalf("ledger: message %s never reported", id)
	return nil
}

func (l *memLedger) Links(_ context.Context, id string, links []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errLedgerDown
	}
	l.links[id] = links
	l.linksN[id]++
	l.reports[id] = append(l.reports[id], "links")
	return nil
}

func (l *memLedger) Delivery(_ context.Context, id string, rcpt int, r Recipient) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errLedgerDown
	}
	if l.accepted[id] == nil {
		l.statusBeforeAccepted++
	}
	l.status[fmt.Sprintf("%s/%d", id, rcpt)] = r
	l.reports[id] = append(l.reports[id], fmt.Sprintf("delivery %d %s %d", rcpt, r.Status, r.Attempts))
	return nil
}

// waitStatus waits until copy rcpt of id reaches status.
func (l *memLedger) waitStatus(t *testing.T, id string, rcpt int, status delivery.Status) Recipient {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r, ok := l.get(id, rcpt); ok && r.Status == status {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, _ := l.get(id, rcpt)
	t.Fatalf("copy %s/%d: want status %s, have %+v", id, rcpt, status, r)
	return r
}

func (l *memLedger) get(id string, rcpt int) (Recipient, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.status[fmt.Sprintf("%s/%d", id, rcpt)]
	return r, ok
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func queueID(t *testing.T, reply string) string {
	t.Helper()
	_, id, ok := strings.Cut(reply, "queued as ")
	if !ok || len(id) != 16 {
		t.Fatalf("250 reply %q does not name a queue id", reply)
	}
	return id
}

func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// testLogger sends the relay's log to the test's log, shown on failure.
func testLogger(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// shutdownCtx bounds a cleanup's wait for the delivery workers. It is not
// t.Context(): that one is already cancelled when cleanups run, and workers
// still writing would race the removal of the test's temporary directory.
func shutdownCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
