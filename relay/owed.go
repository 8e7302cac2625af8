package relay

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/internal/backoff"
	"github.com/trackrelay/trackrelay/internal/guard"
)

// Reports the ledger has not acknowledged. A report the ledger fails (a
// shared database that is down or too slow) is owed: kept in order with
// the later reports of its message, and given again by the retrier with
// backoff until the ledger takes it, so that the ledger ends as the relay
// knows the message. Owed reports are written with the message's spool
// record (Envelope.Owed) whenever it is written, and when the message
// leaves the queue they stay in the spool's ledger bucket until given:
// a restart, even after kill -9, gives them again.

// Kinds of LedgerReport.
const (
	ReportMessage  = "message"  // Ledger.Accepted, with Links when set
	ReportLinks    = "links"    // Ledger.Links
	ReportDelivery = "delivery" // Ledger.Delivery of copy Rcpt
)

// LedgerReport is one report to the ledger, as kept while it is owed.
type LedgerReport struct {
	Kind  string     `json:"kind"`
	Links []string   `json:"links,omitempty"`
	Rcpt  int        `json:"rcpt,omitempty"`
	State *Recipient `json:"state,omitempty"`
	// At is when the relay first made the report.
	At time.Time `json:"at"`
}

// ledgerTimeout bounds one report, so that a ledger that stops answering
// makes the report owed instead of holding its caller.
const ledgerTimeout = 30 * time.Second

// Backoff of the retrier: after a round in which the ledger took
// nothing, and for one message whose reports keep failing while others
// pass (its turn comes after theirs).
const (
	retryFirst = 200 * time.Millisecond
	retryMax   = 10 * time.Second
)

// retryParallel is how many messages the retrier gives reports of at
// once: the ledger commits them together.
const retryParallel = 32

// errOwed is tell's answer for a report that went behind the message's
// owed ones (or those of a ledger known to be down) without being tried.
var errOwed = errors.New("ledger: report owed, behind earlier ones")

// owedMessage is what the ledger has not acknowledged of one message.
type owedMessage struct {
	env     *Envelope
	reports []LedgerReport
	// retired: the message has left the queue; once its reports are given
	// its entry in the spool's ledger bucket is settled.
	retired bool
	tries   int       // rounds in a row that failed it
	next    time.Time // not before, after a failure
}

// owedState is the deliverer's owed reports.
type owedState struct {
	mu    sync.Mutex
	msgs  map[string]*owedMessage
	count int // reports, for the metrics
	wake  chan struct{}
	// down: the last report tried failed and none passed since; new
	// reports are owed at once instead of each waiting to fail.
	down bool
}

// tell gives report r of env to the ledger, unless reports of env are
// owed (r goes behind them) or the ledger is down: then r is owed. It
// returns nil when the ledger took r.
func (d *Deliverer) tell(env *Envelope, r LedgerReport, log *slog.Logger) error {
	if r.At.IsZero() {
		r.At = time.Now().UTC()
	}
	o := &d.owed
	o.mu.Lock()
	if o.msgs[env.ID] != nil || o.down {
		d.oweLocked(env, r)
		o.mu.Unlock()
		return errOwed
	}
	o.mu.Unlock()
	err := d.give(env, r)
	if err == nil {
		return nil
	}
	d.metrics.ledgerErrors.Inc()
	log.Warn("ledger: report failed; retried until the ledger takes it", "queue_id", env.ID, "report", r.Kind, "err", err)
	o.mu.Lock()
	o.down = true
	d.oweLocked(env, r)
	o.mu.Unlock()
	return err
}

// give makes one report to the ledger.
func (d *Deliverer) give(env *Envelope, r LedgerReport) error {
	ctx, cancel := context.WithTimeout(context.Background(), ledgerTimeout)
	defer cancel()
	switch r.Kind {
	case ReportMessage:
		return d.ledger.Accepted(ctx, env, r.Links)
	case ReportLinks:
		return d.ledger.Links(ctx, env.ID, r.Links)
	case ReportDelivery:
		if r.State == nil {
			return nil
		}
		return d.ledger.Delivery(ctx, env.ID, r.Rcpt, *r.State)
	}
	return nil
}

// oweLocked adds r to the reports owed of env; d.owed.mu is held. The
// message is not owed twice, nor its links (every copy has the same): a
// message report already owed, with links, owes them after it.
func (d *Deliverer) oweLocked(env *Envelope, r LedgerReport) {
	o := &d.owed
	m := o.msgs[env.ID]
	if m == nil {
		m = &owedMessage{env: env}
		o.msgs[env.ID] = m
	}
	hasLinks := slices.ContainsFunc(m.reports, func(x LedgerReport) bool { return x.Links != nil })
	if r.Kind == ReportLinks && hasLinks {
		return
	}
	if r.Kind == ReportMessage && slices.ContainsFunc(m.reports, func(x LedgerReport) bool { return x.Kind == ReportMessage }) {
		if r.Links == nil || hasLinks {
			return
		}
		r = LedgerReport{Kind: ReportLinks, Links: r.Links, At: r.At}
	}
	m.reports = append(m.reports, r)
	o.count++
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// owedOf returns a copy of the reports owed of message id, for its spool
// record.
func (d *Deliverer) owedOf(id string) []LedgerReport {
	d.owed.mu.Lock()
	defer d.owed.mu.Unlock()
	if m := d.owed.msgs[id]; m != nil && len(m.reports) > 0 {
		return slices.Clone(m.reports)
	}
	return nil
}

// owesMessage reports whether the message report of id is owed.
func (d *Deliverer) owesMessage(id string) bool {
	d.owed.mu.Lock()
	defer d.owed.mu.Unlock()
	m := d.owed.msgs[id]
	return m != nil && slices.ContainsFunc(m.reports, func(x LedgerReport) bool { return x.Kind == ReportMessage })
}

// retired notes that message id left the queue with reports owed in the
// spool's ledger bucket: its entry is settled once they are given, now if
// they were given meanwhile.
func (d *Deliverer) retired(id string) {
	d.owed.mu.Lock()
	m := d.owed.msgs[id]
	if m != nil {
		m.retired = true
	}
	d.owed.mu.Unlock()
	if m == nil {
		d.settle(id)
	}
}

func (d *Deliverer) settle(id string) {
	if err := d.spool.Settle(id); err != nil {
		// Given again after a restart: reports may be repeated.
		d.log.Error("spool: could not remove the ledger's settled reports", "queue_id", id, "err", err)
	}
}

// owe loads reports owed from the spool at start: the message's first,
// when it is still queued (it is announced again), then the kept ones.
func (d *Deliverer) owe(env *Envelope, reports []LedgerReport, retired bool) {
	o := &d.owed
	o.mu.Lock()
	defer o.mu.Unlock()
	if !retired {
		d.oweLocked(env, LedgerReport{Kind: ReportMessage, At: env.AcceptedAt})
	}
	for _, r := range reports {
		d.oweLocked(env, r)
	}
	if m := o.msgs[env.ID]; m != nil {
		m.retired = retired
	}
}

// OwedReports returns the number of reports the ledger has not
// acknowledged and when the oldest was made (zero when none).
func (d *Deliverer) OwedReports() (n int, oldest time.Time) {
	d.owed.mu.Lock()
	defer d.owed.mu.Unlock()
	for _, m := range d.owed.msgs {
		if len(m.reports) > 0 && (oldest.IsZero() || m.reports[0].At.Before(oldest)) {
			oldest = m.reports[0].At
		}
	}
	return d.owed.count, oldest
}

// retrier gives the owed reports: in rounds over the messages due, oldest
// first, retryParallel at a time, each message's in order. A round in
// which the ledger took nothing waits with backoff before the next.
func (d *Deliverer) retrier() {
	defer d.wg.Done()
	failed := 0
	for {
		due, next := d.dueOwed(time.Now())
		if len(due) == 0 {
			var timer <-chan time.Time
			var t *time.Timer
			if !next.IsZero() {
				t = time.NewTimer(time.Until(next))
				timer = t.C
			}
			select {
			case <-d.owed.wake:
			case <-timer:
			case <-d.stopWork:
				return
			}
			if t != nil {
				t.Stop()
			}
			continue
		}
		if d.retryRound(due) {
			failed = 0
			continue
		}
		failed++
		t := time.NewTimer(backoff.Jitter(backoff.Exp(retryFirst, retryMax, failed)))
		select {
		case <-t.C:
		case <-d.stopWork:
			t.Stop()
			return
		}
	}
}

// dueOwed returns the messages with reports owed that are due at now,
// oldest first, and when the next of the others is.
func (d *Deliverer) dueOwed(now time.Time) (due []string, next time.Time) {
	d.owed.mu.Lock()
	defer d.owed.mu.Unlock()
	type item struct {
		id string
		at time.Time
	}
	var items []item
	for id, m := range d.owed.msgs {
		if m.next.After(now) {
			if next.IsZero() || m.next.Before(next) {
				next = m.next
			}
			continue
		}
		at := time.Time{}
		if len(m.reports) > 0 {
			at = m.reports[0].At
		}
		items = append(items, item{id, at})
	}
	slices.SortFunc(items, func(a, b item) int { return a.at.Compare(b.at) })
	for _, it := range items {
		due = append(due, it.id)
	}
	return due, next
}

// retryRound gives the reports of due, and reports whether the ledger
// took any. Once one fails, no further message is started: the ledger is
// likely down, and the round ends with those under way.
func (d *Deliverer) retryRound(due []string) bool {
	var (
		mu     sync.Mutex
		passed bool
		failed bool
		wg     sync.WaitGroup
	)
	sem := make(chan struct{}, retryParallel)
	for _, id := range due {
		mu.Lock()
		stop := failed
		mu.Unlock()
		if stop {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var p, ok bool
			guard.Run(guard.Announce, d.log, func() { p, ok = d.retryMessage(id) })
			mu.Lock()
			passed = passed || p
			failed = failed || !ok
			mu.Unlock()
		})
	}
	wg.Wait()
	d.owed.mu.Lock()
	d.owed.down = !passed && failed
	d.owed.mu.Unlock()
	return passed || !failed
}

// retryMessage gives the owed reports of id in order until one fails. It
// reports whether the ledger took any, and whether all were given.
func (d *Deliverer) retryMessage(id string) (passed, ok bool) {
	o := &d.owed
	for {
		o.mu.Lock()
		m := o.msgs[id]
		if m == nil {
			o.mu.Unlock()
			return passed, true
		}
		if len(m.reports) == 0 {
			delete(o.msgs, id)
			o.mu.Unlock()
			if m.retired {
				d.settle(id)
			}
			return passed, true
		}
		r := m.reports[0]
		o.mu.Unlock()
		if err := d.give(m.env, r); err != nil {
			d.metrics.ledgerErrors.Inc()
			o.mu.Lock()
			m.tries++
			m.next = time.Now().Add(backoff.Jitter(backoff.Exp(retryFirst, retryMax, m.tries)))
			o.mu.Unlock()
			if m.tries == 1 || m.tries%20 == 0 {
				d.log.Warn("ledger: owed report failed again", "queue_id", id, "report", r.Kind, "tries", m.tries, "err", err)
			}
			return passed, false
		}
		passed = true
		o.mu.Lock()
		m.reports = m.reports[1:]
		m.tries, m.next = 0, time.Time{}
		o.count--
		o.mu.Unlock()
		if r.Kind == ReportMessage {
			d.mu.Lock()
			d.dropPending(id)
			if r.Links != nil {
				d.linked[id] = true
			}
			d.mu.Unlock()
		}
	}
}
