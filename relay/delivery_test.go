package relay

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/trackrelay/trackrelay/internal/delivery"
)

// attachment is random-looking binary data that must arrive unchanged.
var attachment = func() []byte {
	b := make([]byte, 6000)
	for i := range b {
		b[i] = byte(i*7 + i/13)
	}
	return b
}()

func mixedMsg() string {
	enc := base64.StdEncoding.EncodeToString(attachment)
	var lines []string
	for len(enc) > 76 {
		lines = append(lines, enc[:76])
		enc = enc[76:]
	}
	lines = append(lines, enc)
	return crlf(`From: alice@example.com
To: bob@example.net, carol@example.org
Subject: Invoice
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BOUNDARY"

--BOUNDARY
Content-Type: multipart/alternative; boundary="ALT"

--ALT
Content-Type: text/plain; charset=utf-8

See https://example.com/invoice
--ALT
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><a href=3D"https://example.com/invoice?a=3D1&amp;b=3D2">Invoice</a></body></html>
--ALT--
--BOUNDARY
Content-Type: application/pdf; name="invoice.pdf"
Content-Disposition: attachment; filename="invoice.pdf"
Content-Transfer-Encoding: base64

` + strings.Join(lines, "\n") + `
--BOUNDARY--
`)
}

// attachmentOf returns the decoded body of the message's application/pdf part.
func attachmentOf(t *testing.T, data []byte) []byte {
	t.Helper()
	return partOf(t, data, "application/pdf")
}

// htmlOf returns the decoded text/html part of a message.
func htmlOf(t *testing.T, data []byte) string {
	t.Helper()
	return string(partOf(t, data, "text/html"))
}

// partOf returns the decoded body of the message's last part of media
// type mt.
func partOf(t *testing.T, data []byte, mt string) []byte {
	t.Helper()
	e, err := message.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	e.Walk(func(path []int, part *message.Entity, err error) error {
		if err != nil {
			return err
		}
		if pt, _, _ := part.Header.ContentType(); pt == mt {
			got, err = readAllBody(part)
		}
		return err
	})
	return got
}

func readAllBody(e *message.Entity) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(e.Body)
	return b.Bytes(), err
}

func TestDelivery_upstreamCopiesPerRecipient(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	reply, err := h.send("alice@example.com", []string{"bob@example.net", "carol@example.org"}, mixedMsg())
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	msgs := h.sink.waitFor(t, 2)
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.To] = true
		if m.From != "alice@example.com" {
			t.Errorf("envelope sender %q", m.From)
		}
		if !bytes.Equal(attachmentOf(t, m.Data), attachment) {
			t.Errorf("copy to %s: attachment changed", m.To)
		}
		if !strings.Contains(htmlOf(t, m.Data), "http://t.test/c/"+id) {
			t.Errorf("copy to %s: no click URL:\n%s", m.To, m.Data)
		}
	}
	if !seen["bob@example.net"] || !seen["carol@example.org"] {
		t.Fatalf("recipients reached: %v", seen)
	}
	if bytes.Equal(msgs[0].Data, msgs[1].Data) {
		t.Fatal("the two copies are identical: tokens are not per recipient")
	}
	r := h.ledger.waitStatus(t, id, 0, StatusDelivered)
	if r.Attempts != 1 || !strings.HasPrefix(r.LastResponse, "250") {
		t.Errorf("delivery record %+v", r)
	}
}

func TestDelivery_retriesTemporaryFailures(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	h.sink.reply = func(rcpt string, n int) error {
		if n < 2 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	r := h.ledger.waitStatus(t, id, 0, StatusDelivered)
	if r.Attempts != 3 {
		t.Errorf("attempts = %d, want 3", r.Attempts)
	}
	if len(h.sink.messages()) != 1 {
		t.Errorf("sink holds %d messages", len(h.sink.messages()))
	}
}

func TestDelivery_bouncesPermanentFailure(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	h.sink.reply = func(rcpt string, n int) error {
		if rcpt == "nobody@example.net" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	reply, err := h.send("alice@example.com", []string{"nobody@example.net", "bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	r := h.ledger.waitStatus(t, id, 0, StatusBounced)
	if r.LastResponse != "550 5.1.1 no such user" {
		t.Errorf("last response %q", r.LastResponse)
	}
	h.ledger.waitStatus(t, id, 1, StatusDelivered)
	msgs := h.sink.waitFor(t, 2)
	var dsn *sunk
	for i := range msgs {
		if msgs[i].To == "alice@example.com" {
			dsn = &msgs[i]
		}
	}
	if dsn == nil {
		t.Fatalf("no bounce reached the sender; sink: %d messages", len(msgs))
	}
	if dsn.From != "" {
		t.Errorf("bounce envelope sender %q, want <>", dsn.From)
	}
	e, err := message.Read(bytes.NewReader(dsn.Data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := e.Header.ContentType()
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Errorf("bounce content type %s %v", mt, params)
	}
	for _, want := range []string{"Final-Recipient: rfc822; nobody@example.net", "Action: failed", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 no such user", "Subject: Your quote"} {
		if !bytes.Contains(dsn.Data, []byte(want)) {
			t.Errorf("bounce lacks %q:\n%s", want, dsn.Data)
		}
	}
}

func TestDelivery_noBounceToNullSender(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	h.sink.reply = func(string, int) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
	}
	reply, err := h.send("", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	h.ledger.waitStatus(t, queueID(t, reply), 0, StatusBounced)
	// A bounce is queued (and counted) before the copy's status is
	// recorded: had there been one, it would be counted by now.
	if n := testutil.ToFloat64(h.d.metrics.bounces); n != 0 {
		t.Fatalf("%v bounces queued for a null-sender message", n)
	}
	if n := len(h.sink.messages()); n != 0 {
		t.Fatalf("a bounce of a null-sender message was sent (%d messages)", n)
	}
}

func TestDelivery_upstreamDownThenBack(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	addr := h.sink.addr
	h.sink.ln.Close()
	h.sink.srv.Close()
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	r := h.ledger.waitStatus(t, id, 0, StatusDeferred)
	if !strings.HasPrefix(r.LastResponse, "connection error") {
		t.Errorf("deferred with %q", r.LastResponse)
	}
	// The upstream comes back on the same address.
	s2 := newSinkAt(t, addr)
	h.ledger.waitStatus(t, id, 0, StatusDelivered)
	if len(s2.messages()) != 1 {
		t.Fatalf("sink holds %d", len(s2.messages()))
	}
}

func TestDelivery_reusesConnections(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	var ids []string
	for i := range 6 {
		reply, err := h.send("alice@example.com", []string{fmt.Sprintf("r%d@example.net", i)}, crlf(htmlMsg))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, queueID(t, reply))
	}
	h.sink.waitFor(t, 6)
	h.sink.mu.Lock()
	conns := h.sink.conns
	h.sink.mu.Unlock()
	if conns > 2 {
		t.Errorf("%d upstream connections for 6 messages with max_connections 2", conns)
	}
}

func TestDelivery_survivesRestart(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, harnessOpts{dir: dir, noStart: true})
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	// Stop everything before any delivery: the message must be in the spool.
	h.srv.smtp.Close()
	h.spool.Close()

	spool, err := OpenSpool(dir+"/spool", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	env, err := spool.Get(id)
	if err != nil || env.Recipients[0].Status != StatusQueued {
		t.Fatalf("spool after restart: %+v %v", env, err)
	}
	ledger := newMemLedger()
	d := NewDeliverer(DeliveryConfig{CaptureDir: dir + "/outbox", RetryInitial: 50 * time.Millisecond}, spool, ledger, testMinters{}, nil, nil)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	ledger.waitStatus(t, id, 0, StatusDelivered)
	ledger.mu.Lock()
	defer ledger.mu.Unlock()
	if ledger.accepted[id] == nil {
		t.Error("the ledger was not told about the message recovered from the spool")
	}
}

func TestSpool_orphansRemovedAndCorruptSetAside(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := s.Create()
	in.Write([]byte("Subject: orphan\r\n\r\n"))
	in.f.Close() // crash before Commit: a file without a record
	env := &Envelope{Recipients: []Recipient{{Address: "a@b.c", Status: StatusQueued}}}
	if err := s.Enqueue(env, []byte("Subject: ok\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	envs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 1 || envs[0].ID != env.ID {
		t.Fatalf("loaded %v", envs)
	}
	if _, err := s.Open(in.ID()); err == nil {
		t.Error("orphan file kept")
	}
	s.Close()
}

func newSinkAt(t *testing.T, addr string) *sink {
	t.Helper()
	var s *sink
	deadline := time.Now().Add(5 * time.Second)
	for {
		s2, err := trySinkAt(t, addr)
		if err == nil {
			s = s2
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// captureDeliverer returns a deliverer in capture mode on a fresh spool,
// reporting to ledger, not yet started; the spool closes with the test.
func captureDeliverer(t *testing.T, ledger Ledger, cfg DeliveryConfig) (*Deliverer, *Spool) {
	t.Helper()
	dir := t.TempDir()
	spool, err := OpenSpool(dir+"/spool", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	cfg.CaptureDir = dir + "/outbox"
	return NewDeliverer(cfg, spool, ledger, testMinters{}, nil, nil), spool
}

// startDeliverer starts d and shuts it down with the test.
func startDeliverer(t *testing.T, d *Deliverer) {
	t.Helper()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Shutdown(context.Background()) })
}

// enqueueHTML spools htmlMsg for one tracked recipient in state status.
func enqueueHTML(t *testing.T, spool *Spool, rcpt string, status delivery.Status, next time.Time) *Envelope {
	t.Helper()
	env := &Envelope{From: "s@example.com", Mode: "all", AcceptedAt: time.Now().UTC(),
		Recipients: []Recipient{{Address: rcpt, Tracked: true, Status: status, NextAttempt: next}}}
	if err := spool.Enqueue(env, []byte(crlf(htmlMsg))); err != nil {
		t.Fatal(err)
	}
	return env
}

// The ledger hears of each message once, though its announcers and the
// worker that delivers the message right away both set out to report it,
// and the ledger is slow (it waits for company, as the tracking store does).
func TestDeliverer_announcesEachMessageOnce(t *testing.T) {
	ledger := newMemLedger()
	ledger.acceptDelay = 20 * time.Millisecond
	d, spool := captureDeliverer(t, ledger, DeliveryConfig{})
	// The announcer must not beat the workers here, however slow the
	// machine: each message's links are to come with it.
	d.announceDelay = time.Hour
	startDeliverer(t, d)
	const n = 20
	var ids []string
	for i := range n {
		env := enqueueHTML(t, spool, fmt.Sprintf("r%d@example.net", i), StatusQueued, time.Time{})
		d.Submit(env, false)
		ids = append(ids, env.ID)
	}
	for _, id := range ids {
		ledger.waitStatus(t, id, 0, StatusDelivered)
	}
	ledger.mu.Lock()
	defer ledger.mu.Unlock()
	for _, id := range ids {
		if ledger.acceptedN[id] != 1 {
			t.Errorf("message %s reported accepted %d times, want once", id, ledger.acceptedN[id])
		}
		// The worker that delivered it reported its links along.
		if len(ledger.links[id]) != 1 || ledger.linksN[id] != 0 {
			t.Errorf("message %s: links %q in %d separate reports; want one link, with the message", id, ledger.links[id], ledger.linksN[id])
		}
	}
}

// gatedLedger is a memLedger whose Accepted and Delivery calls wait at a
// gate, when one is set, until the test closes it; held counts the calls
// waiting there.
type gatedLedger struct {
	*memLedger
	acceptGate, deliveryGate atomic.Pointer[chan struct{}]
	held                     atomic.Int64
}

func (l *gatedLedger) Accepted(ctx context.Context, env *Envelope, links []string) error {
	l.wait(l.acceptGate.Load())
	return l.memLedger.Accepted(ctx, env, links)
}

func (l *gatedLedger) Delivery(ctx context.Context, id string, rcpt int, r Recipient) error {
	l.wait(l.deliveryGate.Load())
	return l.memLedger.Delivery(ctx, id, rcpt, r)
}

// hold sets the gate g and returns the function that opens it. The test's
// end opens it too, so that a failing test leaves no call waiting.
func (l *gatedLedger) hold(t *testing.T, g *atomic.Pointer[chan struct{}]) (open func()) {
	gate := make(chan struct{})
	g.Store(&gate)
	open = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(open)
	return open
}

func (l *gatedLedger) wait(gate *chan struct{}) {
	if gate == nil {
		return
	}
	l.held.Add(1)
	defer l.held.Add(-1)
	<-*gate
}

// waitUntil polls cond until it holds; past hangGuard the test fails.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(hangGuard); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: not yet %s", hangGuard, what)
		}
	}
}

// A message whose first attempt does not start soon (its copy is deferred)
// is announced all the same, by the announcer, after announceDelay.
func TestDeliverer_announcesMessagesNotAttempted(t *testing.T) {
	ledger := &gatedLedger{memLedger: newMemLedger()}
	d, spool := captureDeliverer(t, ledger, DeliveryConfig{})
	startDeliverer(t, d)
	env := enqueueHTML(t, spool, "r@example.net", StatusDeferred, time.Now().Add(time.Hour))
	start := time.Now()
	d.Submit(env, false)
	ledger.waitAccepted(t, env.ID)
	if waited := time.Since(start); waited < d.announceDelay {
		t.Errorf("announced after %v, before announceDelay: a worker may still have done it with the links", waited)
	}

	// A backlog is announced many at a time, though each report waits
	// (for company, in the tracking store): every announcer holds one at
	// the gate at once.
	open := ledger.hold(t, &ledger.acceptGate)
	const n = 100
	var ids []string
	for i := range n {
		e := &Envelope{ID: fmt.Sprintf("B%03d", i), From: "s@example.com", Mode: "all", AcceptedAt: time.Now().UTC(),
			Recipients: []Recipient{{Address: "r@example.net", Status: StatusDeferred, NextAttempt: time.Now().Add(time.Hour)}}}
		d.Submit(e, false)
		ids = append(ids, e.ID)
	}
	waitUntil(t, fmt.Sprintf("%d announcements waiting for the ledger at once", announcers), func() bool {
		return ledger.held.Load() == announcers
	})
	open()
	for _, id := range ids {
		ledger.waitAccepted(t, id)
	}
}

// Recording an outcome (the ledger's and the spool's commits, which wait
// for company) does not hold a worker: one worker delivers every copy while
// the records of all of them are still on their way.
func TestDeliverer_recordsDoNotHoldWorkers(t *testing.T) {
	ledger := &gatedLedger{memLedger: newMemLedger()}
	open := ledger.hold(t, &ledger.deliveryGate)
	d, spool := captureDeliverer(t, ledger, DeliveryConfig{Workers: 1})
	// Four records per worker may be on their way at once, and the worker
	// delivers a fifth copy before it waits for one of them.
	const n = 5
	var ids []string
	for i := range n {
		env := enqueueHTML(t, spool, fmt.Sprintf("r%d@example.net", i), StatusQueued, time.Time{})
		d.Submit(env, true)
		ids = append(ids, env.ID)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, fmt.Sprintf("%d copies delivered while their records wait", n), func() bool {
		files, _ := filepath.Glob(filepath.Join(d.cfg.CaptureDir, "*.eml"))
		return len(files) == n
	})
	if got := ledger.held.Load(); got == 0 {
		t.Error("no record waiting at the gate")
	}
	open()
	for _, id := range ids {
		ledger.waitStatus(t, id, 0, StatusDelivered)
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Every outcome reached the spool before Shutdown returned.
	envs, err := spool.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 0 {
		t.Errorf("%d messages still queued after their copies were delivered", len(envs))
	}
}

// The queue gauge counts the copies by state when scraped.
func TestDeliverer_queueGauge(t *testing.T) {
	spool, err := OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	reg := prometheus.NewRegistry()
	d := NewDeliverer(DeliveryConfig{CaptureDir: t.TempDir()}, spool, nil, nil, nil, NewMetrics(reg))
	d.Submit(&Envelope{ID: "A", Recipients: []Recipient{
		{Address: "a@example.net", Status: StatusQueued},
		{Address: "b@example.net", Status: StatusDeferred, NextAttempt: time.Now().Add(time.Hour)},
		{Address: "c@example.net", Status: StatusDelivered},
	}}, true)
	d.Submit(&Envelope{ID: "B", Recipients: []Recipient{{Address: "d@example.net", Status: StatusQueued}}}, true)
	want := `
# HELP trackrelay_queue_recipients Recipient copies in the spool, by state (queued, deferred, sending, held: after an internal error, until the operator retries them).
# TYPE trackrelay_queue_recipients gauge
trackrelay_queue_recipients{state="deferred"} 1
trackrelay_queue_recipients{state="held"} 0
trackrelay_queue_recipients{state="queued"} 2
trackrelay_queue_recipients{state="sending"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "trackrelay_queue_recipients"); err != nil {
		t.Error(err)
	}
}

// BenchmarkSubmitBacklog is the cost of queueing one more copy behind a
// backlog of 100,000 (a restart after a long upstream outage submits every
// one of them).
func BenchmarkSubmitBacklog(b *testing.B) {
	spool, err := OpenSpool(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer spool.Close()
	d := NewDeliverer(DeliveryConfig{CaptureDir: b.TempDir()}, spool, nil, nil, nil, nil)
	later := time.Now().Add(time.Hour)
	for i := range 100000 {
		d.Submit(&Envelope{ID: fmt.Sprint("Q", i), Recipients: []Recipient{{Status: StatusDeferred, NextAttempt: later}}}, true)
	}
	b.ResetTimer()
	for i := range b.N {
		d.Submit(&Envelope{ID: fmt.Sprint("N", i), Recipients: []Recipient{{Status: StatusDeferred, NextAttempt: later}}}, true)
	}
}

// An attempt that fails before its copy is reported (the message file is
// gone) still reports the message before the copy's status: a status of
// an unknown message would reach no feed.
func TestDeliverer_reportsMessageBeforeItsCopysStatus(t *testing.T) {
	ledger := newMemLedger()
	d, spool := captureDeliverer(t, ledger, DeliveryConfig{})
	d.announceDelay = time.Hour
	startDeliverer(t, d)
	env := enqueueHTML(t, spool, "r@example.net", StatusQueued, time.Time{})
	if err := os.Remove(spool.path(env.ID)); err != nil {
		t.Fatal(err)
	}
	d.Submit(env, false)
	ledger.waitStatus(t, env.ID, 0, StatusDeferred)
	ledger.mu.Lock()
	defer ledger.mu.Unlock()
	if ledger.statusBeforeAccepted != 0 {
		t.Errorf("%d copy statuses reported before their message", ledger.statusBeforeAccepted)
	}
}

// A notice of the relay's own (a bounce) found in the spool at start is
// delivered but never reported to the ledger, nor offered to the API.
func TestDeliverer_bouncesLoadedAtStartAreNotReported(t *testing.T) {
	ledger := newMemLedger()
	d, spool := captureDeliverer(t, ledger, DeliveryConfig{})
	env := &Envelope{Account: "alice", Bounce: true, AcceptedAt: time.Now().UTC(),
		Recipients: []Recipient{{Address: "s@example.com", Status: StatusQueued}}}
	if err := spool.Enqueue(env, []byte("Subject: Undelivered Mail\r\n\r\nbounce\r\n")); err != nil {
		t.Fatal(err)
	}
	startDeliverer(t, d)
	if _, ok := d.Pending("alice", env.ID); ok {
		t.Error("a bounce is offered to the API")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		envs, err := spool.Load()
		if err != nil {
			t.Fatal(err)
		}
		if len(envs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bounce was not delivered")
		}
	}
	// Once the message is neither pending nor being announced, no report
	// of it can start any more.
	waitUntil(t, "the bounce neither pending nor being announced", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		_, announcing := d.announcing[env.ID]
		return d.pending[env.ID] == nil && !announcing
	})
	ledger.mu.Lock()
	defer ledger.mu.Unlock()
	if n := ledger.acceptedN[env.ID]; n != 0 {
		t.Errorf("bounce reported to the ledger %d times", n)
	}
}
