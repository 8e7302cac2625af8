package relay

import (
	"crypto"
	"crypto/ed25519"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/internal/guard"
)

// panicRig is a Deliverer on a spool that outlives it, so that a test can
// restart delivery as a restarted server would.
type panicRig struct {
	t      *testing.T
	spool  *Spool
	ledger *memLedger
	d      *Deliverer
	sink   *sink // upstream, when the configuration has one
}

func newPanicRig(t *testing.T, cfg DeliveryConfig, upstream bool) *panicRig {
	t.Helper()
	dir := t.TempDir()
	spool, err := OpenSpool(dir+"/spool", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &panicRig{t: t, spool: spool, ledger: newMemLedger()}
	if upstream {
		r.sink = newSink(t)
	}
	r.start(cfg)
	t.Cleanup(func() {
		r.d.Shutdown(shutdownCtx(t))
		spool.Close()
	})
	return r
}

// start starts a new Deliverer with cfg on the rig's spool.
func (r *panicRig) start(cfg DeliveryConfig) {
	r.t.Helper()
	cfg.Hostname = "relay.test"
	cfg.RetryInitial, cfg.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	if r.sink != nil {
		cfg.Upstream = &UpstreamConfig{Address: r.sink.addr, TLS: TLSNone}
	} else {
		cfg.CaptureDir = r.spool.dir + "/../outbox"
	}
	r.d = NewDeliverer(cfg, r.spool, r.ledger, testMinters{}, testLogger(r.t), nil)
	if err := r.d.Start(); err != nil {
		r.t.Fatal(err)
	}
}

// restart stops the Deliverer, as a shutdown does, and starts another one
// with cfg on the same spool.
func (r *panicRig) restart(cfg DeliveryConfig) {
	r.t.Helper()
	// A held copy is no attempt under way: the drain does not wait for it.
	if err := r.d.Shutdown(shutdownCtx(r.t)); err != nil {
		r.t.Fatalf("shutdown with a held copy: %v", err)
	}
	r.start(cfg)
}

// spoolMessage spools msg from From to rcpt, its copy in state status due
// at next, without submitting it.
func (r *panicRig) spoolMessage(from, rcpt, msg string, status delivery.Status, next time.Time) *Envelope {
	r.t.Helper()
	env := &Envelope{Account: "alice", From: from, Mode: ModeAll, AcceptedAt: time.Now().UTC(),
		Recipients: []Recipient{{Address: rcpt, Tracked: true, Status: status, NextAttempt: next}}}
	if err := r.spool.Enqueue(env, []byte(crlf(msg))); err != nil {
		r.t.Fatal(err)
	}
	return env
}

// deliverOne spools and submits a message and waits for its delivery.
func (r *panicRig) deliverOne(rcpt string) {
	r.t.Helper()
	env := r.spoolMessage("alice@example.com", rcpt, htmlMsg, StatusQueued, time.Time{})
	r.d.Submit(env, false)
	r.ledger.waitStatus(r.t, env.ID, 0, StatusDelivered)
}

// waitHeld waits until the spool record of id says its copy is held.
func (r *panicRig) waitHeld(id string) {
	r.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		env, err := r.spool.Get(id)
		if err == nil && env.Recipients[0].Held() {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("copy of %s never held: %+v %v", id, env, err)
		}
	}
}

// checkHeld checks that copy 0 of id is held everywhere the operator and
// the app look: the spool record, the admin queue list, the queue gauge
// (and no copy scheduled), and the ledger, as the API shows it.
func (r *panicRig) checkHeld(id string) {
	r.t.Helper()
	env, err := r.spool.Get(id)
	if err != nil {
		r.t.Fatal(err)
	}
	if rc := env.Recipients[0]; rc.Status != StatusHeld || rc.LastResponse != heldResponse {
		r.t.Errorf("spool record of the copy: status %q, last response %q", rc.Status, rc.LastResponse)
	}
	list, err := r.spool.List()
	if err != nil {
		r.t.Fatal(err)
	}
	listed := false
	for _, e := range list {
		if e.ID == id {
			listed = true
			if e.Recipients[0].Status != StatusHeld {
				r.t.Errorf("queue list shows the copy %q", e.Recipients[0].Status)
			}
		}
	}
	if !listed {
		r.t.Errorf("queue list does not show %s", id)
	}
	if g := queueGauge(r.t, r.d); g["held"] != 1 || g["queued"] != 0 || g["deferred"] != 0 {
		r.t.Errorf("queue gauge %v, want the one copy held and none scheduled", g)
	}
	if rc, _ := r.ledger.get(id, 0); rc.Status != StatusHeld || rc.LastResponse != heldResponse {
		r.t.Errorf("ledger: %+v, want the copy held", rc)
	}
}

// queueGauge scrapes the queue gauge of d by state.
func queueGauge(t *testing.T, d *Deliverer) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.metrics.queue)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	g := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			g[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return g
}

// panicCounts reads trackrelay_panics_total by component.
func panicCounts() map[string]float64 {
	n := map[string]float64{}
	for _, c := range guard.AllComponents {
		n[c] = testutil.ToFloat64(guard.Panics.WithLabelValues(c))
	}
	return n
}

// checkOnePanic checks that one panic was counted since before, in component.
func checkOnePanic(t *testing.T, before map[string]float64, component string) {
	t.Helper()
	for c, n := range panicCounts() {
		want := 0.0
		if c == component {
			want = 1
		}
		if n-before[c] != want {
			t.Errorf("trackrelay_panics_total{component=%q} rose by %v, want %v", c, n-before[c], want)
		}
	}
}

// panicKey is a DKIM key whose signing panics.
type panicKey struct{ ed25519.PrivateKey }

func (panicKey) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	panic("signing key failure")
}

// A panic in any job of a copy, from its attempt to the notice about it,
// holds the copy: counted once, shown held to the operator and the app,
// the other messages delivered, and after a restart still held (not
// re-queued into the same panic) until the operator retries it; then it
// is delivered.
func TestDeliverer_panicHoldsTheCopy(t *testing.T) {
	const panicMsg = `From: Mallory <m@panic.example>
To: Bob <bob@example.net>
Subject: Signed with a broken key
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8

<html><body><p>Hello, see <a href="https://example.com/">this</a>.</p></body></html>
`
	brokenDKIM := &DKIMSigner{keys: map[string]DKIMKey{
		"panic.example": {Domain: "panic.example", Selector: "s", Signer: panicKey{testEdKey()}},
	}}
	for _, tc := range []struct {
		name      string
		component string
		inject    bool // at guard.Check; else the case panics for real
		upstream  bool
		cfg       DeliveryConfig // until the restart
		from, msg string
		deferred  bool // the copy is due in an hour: only the announcer reports it
	}{
		{name: "attempt", component: guard.Delivery, inject: true},
		{name: "record", component: guard.Finish, inject: true},
		{name: "announce", component: guard.Announce, inject: true, deferred: true},
		{name: "bounce", component: guard.Bounce, inject: true, upstream: true},
		{name: "dkim", component: guard.Delivery, cfg: DeliveryConfig{DKIM: brokenDKIM},
			from: "m@panic.example", msg: panicMsg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := panicCounts()
			r := newPanicRig(t, tc.cfg, tc.upstream)
			if r.sink != nil {
				// The first attempt bounces; the copy is delivered once retried.
				r.sink.reply = func(rcpt string, n int) error {
					if rcpt == "bad@example.net" && n == 0 {
						return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
					}
					return nil
				}
			}
			from, msg := "alice@example.com", htmlMsg
			if tc.from != "" {
				from, msg = tc.from, tc.msg
			}
			status, next := StatusQueued, time.Time{}
			if tc.deferred {
				status, next = StatusDeferred, time.Now().Add(time.Hour)
			}
			bad := r.spoolMessage(from, "bad@example.net", msg, status, next)
			if tc.inject {
				defer guard.Inject(func(c, item string) bool { return c == tc.component && item == bad.ID })()
			}
			r.d.Submit(bad, false)

			r.waitHeld(bad.ID)
			r.ledger.waitStatus(t, bad.ID, 0, StatusHeld)
			checkOnePanic(t, before, tc.component)
			r.checkHeld(bad.ID)
			r.deliverOne("other@example.net")

			// Restarted (the bug fixed: no injection, a working key), the
			// copy stays held while others are delivered.
			guard.Inject(func(string, string) bool { return false })()
			r.restart(DeliveryConfig{})
			r.checkHeld(bad.ID)
			r.deliverOne("after@example.net")
			r.checkHeld(bad.ID)
			if n := r.sink; n != nil {
				n.mu.Lock()
				tries := n.tries["bad@example.net"]
				n.mu.Unlock()
				if tries != 1 {
					t.Errorf("held copy tried %d times, want once", tries)
				}
			}

			rescheduled, released, err := r.d.Retry(bad.ID)
			if err != nil || rescheduled != 1 || released != 1 {
				t.Fatalf("retry: %d rescheduled, %d released, %v; want the held copy released", rescheduled, released, err)
			}
			r.ledger.waitStatus(t, bad.ID, 0, StatusDelivered)
			if g := queueGauge(t, r.d); g["held"] != 0 {
				t.Errorf("queue gauge %v after the retry", g)
			}
			checkOnePanic(t, before, tc.component)
		})
	}
}

// A report to the ledger that panics leaves no one waiting for it: once
// released, the held message's copy is reported by its worker and
// delivered, without a restart.
func TestDeliverer_announcePanicLeavesNoWaiter(t *testing.T) {
	r := newPanicRig(t, DeliveryConfig{}, false)
	bad := r.spoolMessage("alice@example.com", "bad@example.net", htmlMsg, StatusDeferred, time.Now().Add(time.Hour))
	remove := guard.Inject(func(c, item string) bool { return c == guard.Announce && item == bad.ID })
	r.d.Submit(bad, false)
	r.waitHeld(bad.ID)
	remove()
	if _, released, err := r.d.Retry(bad.ID); err != nil || released != 1 {
		t.Fatalf("retry: %d released, %v", released, err)
	}
	r.ledger.waitStatus(t, bad.ID, 0, StatusDelivered)
	r.ledger.waitAccepted(t, bad.ID)
}

// Retry without an id (queue retry --all) releases every held copy, and
// deleting a message drops its held copy.
func TestDeliverer_retryAllReleasesHeldCopies(t *testing.T) {
	r := newPanicRig(t, DeliveryConfig{}, false)
	later := time.Now().Add(time.Hour)
	a := r.spoolMessage("alice@example.com", "a@example.net", htmlMsg, StatusHeld, time.Time{})
	b := r.spoolMessage("alice@example.com", "b@example.net", htmlMsg, StatusHeld, time.Time{})
	c := r.spoolMessage("alice@example.com", "c@example.net", htmlMsg, StatusHeld, time.Time{})
	deferred := r.spoolMessage("alice@example.com", "d@example.net", htmlMsg, StatusDeferred, later)
	r.restart(DeliveryConfig{})
	if g := queueGauge(t, r.d); g["held"] != 3 || g["deferred"] != 1 {
		t.Fatalf("queue gauge %v after loading three held copies and a deferred one", g)
	}
	if err := r.d.Delete(c.ID, false); err != nil {
		t.Fatal(err)
	}
	rescheduled, released, err := r.d.Retry("")
	if err != nil || rescheduled != 3 || released != 2 {
		t.Fatalf("retry --all: %d rescheduled, %d released, %v; want 3 and 2", rescheduled, released, err)
	}
	for _, env := range []*Envelope{a, b, deferred} {
		r.ledger.waitStatus(t, env.ID, 0, StatusDelivered)
	}
	if g := queueGauge(t, r.d); g["held"] != 0 {
		t.Errorf("queue gauge %v after retry --all", g)
	}
}

// A panic in a group commit fails that group's writes: the client whose
// message was in it gets a 451 and nothing of it stays in the spool; the
// commit loop goes on and the next message is accepted and delivered.
func TestGroupCommit_panicFailsTheGroupAndGoesOn(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	before := panicCounts()
	var fired atomic.Bool
	defer guard.Inject(func(c, _ string) bool { return c == guard.GroupCommit && fired.CompareAndSwap(false, true) })()
	_, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if code := smtpCode(err); code != 451 {
		t.Fatalf("message whose commit panicked: %v, want a 451", err)
	}
	checkOnePanic(t, before, guard.GroupCommit)
	h.assertNothingStored()
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatalf("the next message: %v", err)
	}
	h.ledger.waitStatus(t, queueID(t, reply), 0, StatusDelivered)
}

// On a relay with no other traffic to wake its workers, a copy is retried
// when it is due: deferred by the upstream's 451, or because its outcome
// could not be written. The workers otherwise sleep an hour.
func TestDeliverer_quietRelayRetriesWhenDue(t *testing.T) {
	t.Run("upstream 451", func(t *testing.T) {
		r := newPanicRig(t, DeliveryConfig{Workers: 2}, true)
		r.sink.reply = func(rcpt string, n int) error {
			if n == 0 {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
			}
			return nil
		}
		env := r.spoolMessage("alice@example.com", "bob@example.net", htmlMsg, StatusQueued, time.Time{})
		r.d.Submit(env, true)
		if rc := r.ledger.waitStatus(t, env.ID, 0, StatusDelivered); rc.Attempts != 2 {
			t.Errorf("delivered after %d attempts, want 2", rc.Attempts)
		}
	})
	t.Run("outcome not written", func(t *testing.T) {
		r := newPanicRig(t, DeliveryConfig{Workers: 2}, false)
		r.d.recordRetry = 200 * time.Millisecond
		env := r.spoolMessage("alice@example.com", "bob@example.net", htmlMsg, StatusQueued, time.Time{})
		// The first write of its outcome fails (its commit panics).
		var fired atomic.Bool
		defer guard.Inject(func(c, item string) bool {
			return c == guard.GroupCommit && item == env.ID && fired.CompareAndSwap(false, true)
		})()
		r.d.Submit(env, true)
		r.ledger.waitStatus(t, env.ID, 0, StatusDelivered)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if _, err := r.spool.Get(env.ID); errors.Is(err, ErrNoSuchMessage) {
				break // delivered again and recorded
			}
			if time.Now().After(deadline) {
				t.Fatalf("the copy whose outcome was not written was not retried within 10s (retry after %v)", r.d.recordRetry)
			}
		}
		if !fired.Load() {
			t.Fatal("the outcome's commit did not fail")
		}
	})
}
