package relay

import (
	"container/heap"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/internal/guard"
)

// run makes one delivery attempt of one copy, then hands its outcome to a
// goroutine of its own to record: the records wait for company to share
// their commits, and the worker goes on to the next copy meanwhile.
//
// The attempt (instrumenting, DKIM signing, sending) is a job boundary: a
// panic in it holds the copy and the worker goes on.
func (d *Deliverer) run(j job) {
	start := time.Now()
	env, err := d.spool.Get(j.id)
	if err != nil {
		if !errors.Is(err, ErrNoSuchMessage) {
			d.log.Error("delivery: reading spool record", "queue_id", j.id, "err", err)
			d.retryLater(j, d.recordRetry)
		}
		d.endTurn()
		return
	}
	if j.rcpt >= len(env.Recipients) || env.Recipients[j.rcpt].Final() {
		d.endTurn()
		return
	}
	if env.Recipients[j.rcpt].Held() {
		// Held while this job waited (an outcome recorded meanwhile may
		// have scheduled it): it waits for the operator.
		d.mu.Lock()
		d.held[copyRef{j.id, j.rcpt}] = true
		d.mu.Unlock()
		d.endTurn()
		return
	}
	rc := env.Recipients[j.rcpt]
	log := d.log.With("queue_id", env.ID, "rcpt", j.rcpt)

	var resp string
	var sendErr error
	p := guard.Run(guard.Delivery, log, func() {
		guard.Check(guard.Delivery, env.ID)
		resp, sendErr = d.attempt(env, j.rcpt, log)
	})
	if p == nil {
		// A panic of the DKIM key, recovered on the signing library's
		// goroutine (see recoveringSigner), comes back as the error.
		errors.As(sendErr, &p)
	}
	if p != nil {
		// The copy may even have gone out: it waits for the operator
		// rather than being retried into the same panic.
		d.hold(env.ID, []int{j.rcpt}, guard.Delivery, log)
		d.endTurn()
		return
	}
	now := time.Now().UTC()
	var result delivery.Status
	rc.Attempts++
	rc.UpdatedAt = now
	switch {
	case sendErr == nil:
		result = StatusDelivered
		rc.Status, rc.LastResponse = StatusDelivered, resp
	case permanent(sendErr):
		result = StatusBounced
		rc.Status, rc.LastResponse = StatusBounced, replyText(sendErr)
	case now.Sub(env.AcceptedAt) >= d.cfg.Lifetime:
		result = StatusBounced
		rc.Status = StatusBounced
		rc.LastResponse = "message expired after " + d.cfg.Lifetime.String() + ": " + replyText(sendErr)
	default:
		result = StatusDeferred
		rc.Status, rc.LastResponse = StatusDeferred, replyText(sendErr)
		rc.NextAttempt = now.Add(d.backoff(rc.Attempts))
	}
	d.metrics.attempts.WithLabelValues(string(result)).Inc()
	d.metrics.attemptDuration.WithLabelValues(string(result)).Observe(time.Since(start).Seconds())
	d.finishing <- struct{}{}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() { <-d.finishing }()
		defer d.endTurn()
		// Recording is a job boundary too: a panic holds the copy (still
		// counted as sending until then).
		defer guard.Recover(guard.Finish, log, func(*guard.Panic) {
			d.hold(env.ID, []int{j.rcpt}, guard.Finish, log)
		})
		d.finish(env, j, rc, string(result), log)
	}()
}

// finish records the outcome rc of an attempt on copy j of env. Notices
// first, then the ledger, then the spool record: a crash in between
// repeats a step (a second notice, a second attempt), it never loses one.
// Until the record is written the copy is in no queue, so nothing else
// attempts it. A notice that panics while it is built holds the copy.
func (d *Deliverer) finish(env *Envelope, j job, rc Recipient, result string, log *slog.Logger) {
	guard.Check(guard.Finish, env.ID)
	if !env.Bounce {
		// The attempt may have failed before its copy was reported (no
		// message file): the ledger must know the message before a status
		// of its copy, or that status reaches no feed.
		d.announce(env, nil)
	}
	now := rc.UpdatedAt
	if rc.Status == StatusDeferred && !rc.Warned && d.cfg.DelayWarning > 0 &&
		now.Sub(env.AcceptedAt) >= d.cfg.DelayWarning && !env.Bounce && env.From != "" {
		if err := d.notify(env, rc, actionDelayed); err != nil {
			log.Error("could not queue the delayed notice", "err", err)
			if errors.Is(err, errNoticePanic) {
				d.hold(env.ID, []int{j.rcpt}, guard.Bounce, log)
				return
			}
		} else {
			rc.Warned = true
		}
	}
	if rc.Status == StatusBounced {
		if err := d.bounce(env, rc); err != nil {
			log.Error("bounce: could not queue the delivery status notification", "err", err)
			if errors.Is(err, errNoticePanic) {
				d.hold(env.ID, []int{j.rcpt}, guard.Bounce, log)
				return
			}
		}
	}
	log.Info("delivery "+result, "to", rc.Address, "attempt", rc.Attempts, "response", rc.LastResponse)
	var owed func() []LedgerReport
	if !env.Bounce { // the relay's own notifications are not the app's messages
		state := rc
		// Failed, it is owed and retried, and kept with the spool record.
		_ = d.tell(env, LedgerReport{Kind: ReportDelivery, Rcpt: j.rcpt, State: &state}, log)
		owed = func() []LedgerReport { return d.owedOf(env.ID) }
	}
	done, owing, err := d.spool.Record(env.ID, j.rcpt, rc, owed)
	if err != nil {
		if errors.Is(err, ErrNoSuchMessage) {
			return // deleted by the operator meanwhile
		}
		// Not recorded: the copy is tried again; at least once is kept.
		log.Error("delivery: recording outcome failed; will retry", "err", err)
		d.retryLater(j, d.recordRetry)
		return
	}
	d.mu.Lock()
	// Held by an announcer's panic during this attempt: the outcome
	// recorded replaces the hold.
	delete(d.held, copyRef{env.ID, j.rcpt})
	if rc.Status == StatusDeferred {
		heap.Push(&d.jobs, job{id: env.ID, rcpt: j.rcpt, due: rc.NextAttempt})
	}
	if done {
		if !d.owesMessage(env.ID) { // else pending until the retrier gives it
			d.dropPending(env.ID)
		}
		delete(d.linked, env.ID)
	}
	d.mu.Unlock()
	if owing {
		d.retired(env.ID)
	}
	if rc.Status == StatusDeferred {
		d.wakeWorker()
	}
}

// attempt instruments the copy and delivers it. Its error is one that may
// be shown to the app and the sender (see publicError).
func (d *Deliverer) attempt(env *Envelope, idx int, log *slog.Logger) (string, error) {
	resp, err := d.deliverCopy(env, idx, log)
	return resp, publicError(err, log)
}

// deliverCopy is attempt with the errors as they came, those of this host
// marked local.
func (d *Deliverer) deliverCopy(env *Envelope, idx int, log *slog.Logger) (string, error) {
	f, err := d.spool.Open(env.ID)
	if err != nil {
		return "", local(fmt.Errorf("open spool file: %w", err))
	}
	defer f.Close()

	body, size, release, links, err := d.instrument(env, idx, f, log)
	if err != nil {
		return "", local(err)
	}
	defer release()
	d.report(env, links, log)
	if body, size, err = d.signCopy(body, size, log); err != nil {
		return "", local(err)
	}

	rc := env.Recipients[idx]
	if d.up == nil {
		resp, err := d.capture(env, idx, rc.Address, body)
		return resp, local(err)
	}
	from := env.From
	if env.Bounce {
		from = ""
	}
	return d.up.send(from, rc.Address, size, body, env.SMTPUTF8)
}
