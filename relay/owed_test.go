package relay

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// deferFirst makes the sink answer each recipient's first attempt with a
// 451, and those in always with a 451 every time.
func deferFirst(always ...string) func(string, int) error {
	return func(rcpt string, n int) error {
		if n == 0 || slices.Contains(always, rcpt) {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}
}

// owedCount is the number of reports d owes the ledger.
func owedCount(d *Deliverer) int {
	n, _ := d.OwedReports()
	return n
}

// While the ledger is down, a message is accepted and delivered all the
// same; what the ledger failed is owed, kept in the spool once the message
// has left the queue, and given when the ledger is back, in the order the
// relay made it: the message, its links, then each copy's states (deferred
// before delivered), so that the ledger ends as the relay knows it.
func TestOwed_reportsFollowInOrder(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	h.sink.mu.Lock()
	h.sink.reply = deferFirst()
	h.sink.mu.Unlock()
	h.ledger.setDown(true)
	reply, err := h.send("alice@example.com", []string{"bob@example.net", "carol@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	h.sink.waitFor(t, 2)
	waitUntil(t, "the delivered message out of the queue, its reports kept", func() bool {
		envs, _ := h.spool.List()
		kept, _ := h.spool.LoadOwed()
		return len(envs) == 0 && len(kept) == 1 && kept[0].ID == id
	})
	if got := h.ledger.reported(id); len(got) != 0 {
		t.Fatalf("the ledger took %q while down", got)
	}
	if _, ok := h.d.Pending("alice", id); !ok {
		t.Error("the API no longer answers for the message the ledger has not taken")
	}
	if n := owedCount(h.d); n != 5 {
		t.Errorf("%d reports owed; want 5 (the message with its links, two states of two copies)", n)
	}

	h.ledger.setDown(false)
	waitUntil(t, "the owed reports given and settled", func() bool {
		kept, _ := h.spool.LoadOwed()
		return owedCount(h.d) == 0 && len(kept) == 0
	})
	got := h.ledger.reported(id)
	if len(got) != 6 || got[0] != "accepted" || got[1] != "links" {
		t.Fatalf("reports %q; want the message, its links, then the copies' states", got)
	}
	for _, rcpt := range []string{"0", "1"} {
		var states []string
		for _, r := range got[2:] {
			if f := strings.Fields(r); f[1] == rcpt {
				states = append(states, f[2]+" "+f[3])
			}
		}
		if !slices.Equal(states, []string{"deferred 1", "delivered 2"}) {
			t.Errorf("copy %s: states %q given; want deferred, then delivered", rcpt, states)
		}
	}
	h.ledger.waitStatus(t, id, 0, StatusDelivered)
	h.ledger.waitStatus(t, id, 1, StatusDelivered)
	if _, ok := h.d.Pending("alice", id); ok {
		t.Error("still pending once the ledger has the message")
	}
}

// Owed reports survive a restart: those of a message that left the queue
// (from the spool's ledger bucket) and those of one still queued (with its
// record). Nothing is written at shutdown, so this is what a kill -9
// leaves too.
func TestOwed_givenAfterRestart(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := serveSink(t, ln, nil, false)
	up.reply = deferFirst("stuck@example.net")
	start := func(ledger Ledger) (*Deliverer, *Spool) {
		spool, err := OpenSpool(filepath.Join(dir, "spool"), nil)
		if err != nil {
			t.Fatal(err)
		}
		d := NewDeliverer(DeliveryConfig{Upstream: &UpstreamConfig{Address: up.addr, TLS: TLSNone},
			RetryInitial: 20 * time.Millisecond, RetryMax: 20 * time.Millisecond}, spool, ledger, testMinters{}, testLogger(t), nil)
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		return d, spool
	}
	down := newMemLedger()
	down.setDown(true)
	d, spool := start(down)
	enqueue := func(rcpts ...string) *Envelope {
		env := &Envelope{Account: "alice", From: "alice@example.com", MessageID: "m@x", Mode: "all", AcceptedAt: time.Now().UTC()}
		for _, r := range rcpts {
			env.Recipients = append(env.Recipients, Recipient{Address: r, Tracked: true, Status: StatusQueued})
		}
		if err := spool.Enqueue(env, []byte(crlf(htmlMsg))); err != nil {
			t.Fatal(err)
		}
		d.Accept(env)
		return env
	}
	done := enqueue("bob@example.net")
	queued := enqueue("carol@example.net", "stuck@example.net")
	waitUntil(t, "bob's and carol's copies delivered, stuck's deferred again", func() bool {
		kept, _ := spool.LoadOwed()
		env, err := spool.Get(queued.ID)
		return len(kept) == 1 && err == nil && env.Recipients[0].Status == StatusDelivered &&
			env.Recipients[1].Attempts >= 2 && len(env.Owed) > 0
	})
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spool.Close()

	ledger := newMemLedger()
	d, spool = start(ledger)
	t.Cleanup(func() { d.Shutdown(context.Background()); spool.Close() })
	ledger.waitStatus(t, done.ID, 0, StatusDelivered)
	ledger.waitStatus(t, queued.ID, 0, StatusDelivered)
	ledger.waitStatus(t, queued.ID, 1, StatusDeferred)
	waitUntil(t, "the kept reports settled", func() bool {
		kept, _ := spool.LoadOwed()
		return len(kept) == 0
	})
	for _, id := range []string{done.ID, queued.ID} {
		if got := ledger.reported(id); len(got) == 0 || got[0] != "accepted" {
			t.Errorf("message %s: reports %q; want the message first", id, got)
		}
	}
	if got := ledger.reported(done.ID); !slices.Contains(got, "links") || !slices.Contains(got, "delivery 0 deferred 1") {
		t.Errorf("delivered message: reports %q; want its links and its deferred state too", got)
	}
}

// With ReportWait, the 250 comes once the ledger has committed the
// message's record: the ledger has it when the client has the queue id.
func TestAccept_reportBeforeReply(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	h := newHarness(t, harnessOpts{reportWait: time.Minute, metrics: m})
	h.ledger.mu.Lock()
	h.ledger.acceptDelay = 20 * time.Millisecond // a commit that takes its time
	h.ledger.mu.Unlock()
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	h.ledger.mu.Lock()
	env := h.ledger.accepted[id]
	h.ledger.mu.Unlock()
	if env == nil {
		t.Fatal("250 sent before the ledger had the message")
	}
	if _, ok := h.d.Pending("alice", id); ok {
		t.Error("pending though the ledger has it")
	}
	if n := testutil.ToFloat64(m.reportWaits.WithLabelValues(reportCommitted)); n != 1 {
		t.Errorf("report_waits{committed} = %v, want 1", n)
	}
}

// The wait is bounded: a ledger slower than ReportWait, or down, does not
// hold the 250, and the record follows.
func TestAccept_reportWaitBounded(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	var ledger *gatedLedger
	h := newHarness(t, harnessOpts{reportWait: 50 * time.Millisecond, metrics: m, ledger: func(l *memLedger) Ledger {
		ledger = &gatedLedger{memLedger: l}
		return ledger
	}})
	open := ledger.hold(t, &ledger.acceptGate)
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	slow := queueID(t, reply)
	if n := testutil.ToFloat64(m.reportWaits.WithLabelValues(reportTimeout)); n != 1 {
		t.Errorf("report_waits{timeout} = %v, want 1", n)
	}
	if _, ok := h.d.Pending("alice", slow); !ok {
		t.Error("the API does not answer for a message the ledger has not committed")
	}
	open()
	ledger.waitAccepted(t, slow)

	ledger.setDown(true)
	reply, err = h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatalf("a ledger that is down refused the message: %v", err)
	}
	lost := queueID(t, reply)
	if n := testutil.ToFloat64(m.reportWaits.WithLabelValues(reportOwed)); n != 1 {
		t.Errorf("report_waits{owed} = %v, want 1", n)
	}
	ledger.setDown(false)
	ledger.waitAccepted(t, lost)
	ledger.waitStatus(t, lost, 0, StatusDelivered)
}

// Reports owed since a message's record was last written (the state of a
// copy held after a panic) are written into it at shutdown, and given
// after the next start.
func TestOwed_keptAtShutdown(t *testing.T) {
	down := newMemLedger()
	down.setDown(true)
	d, spool := captureDeliverer(t, down, DeliveryConfig{})
	env := enqueueHTML(t, spool, "bob@example.net", StatusQueued, time.Now().Add(time.Hour))
	d.hold(env.ID, nil, "test", testLogger(t))
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec, err := spool.Get(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Owed) != 1 || rec.Owed[0].Kind != ReportDelivery || rec.Owed[0].State.Status != StatusHeld {
		t.Fatalf("owed reports kept at shutdown: %+v", rec.Owed)
	}
	ledger := newMemLedger()
	d = NewDeliverer(DeliveryConfig{CaptureDir: t.TempDir()}, spool, ledger, testMinters{}, nil, nil)
	startDeliverer(t, d)
	ledger.waitStatus(t, env.ID, 0, StatusHeld)
	if got := ledger.reported(env.ID); len(got) < 2 || got[0] != "accepted" {
		t.Errorf("reports %q; want the message, then the held state", got)
	}
}
