package relay

import (
	"container/heap"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/trackrelay/trackrelay/internal/guard"
)

// hold quarantines copies idxs of message id (nil: each one not final)
// after a panic in their job (component's): they are marked held in the
// spool, taken out of the schedule and reported to the ledger, and wait
// there, across restarts, for the operator's retry (Retry). Never
// re-queued by itself, a bad message cannot become a crash loop.
func (d *Deliverer) hold(id string, idxs []int, component string, log *slog.Logger) {
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	env, held, err := d.spool.Hold(id, idxs, time.Now().UTC())
	switch {
	case errors.Is(err, ErrNoSuchMessage):
		return // final and removed meanwhile, or deleted by the operator
	case err != nil:
		// Held in this process only: after a restart the copy is tried
		// again, and held again if it panics again.
		log.Error("delivery: could not record the held copy in the spool; it is held until a restart", "err", err)
		env, held = nil, idxs
	}
	d.mu.Lock()
	if env == nil && held == nil {
		// Every copy, and the record could not be read: every copy this
		// process schedules.
		for _, j := range d.jobs {
			if j.id == id {
				held = append(held, j.rcpt)
			}
		}
	}
	for _, i := range held {
		d.held[copyRef{id, i}] = true
	}
	d.dropJobs(func(j job) bool { return j.id == id && slices.Contains(held, j.rcpt) })
	d.mu.Unlock()
	if len(held) == 0 {
		return // final, or held already
	}
	log.Warn("delivery: copy held after a panic; trackrelay queue retry releases it", "component", component, "copies", held)
	if env == nil || env.Bounce {
		return
	}
	for _, i := range held {
		guard.Run(component, log, func() {
			state := env.Recipients[i]
			_ = d.tell(env, LedgerReport{Kind: ReportDelivery, Rcpt: i, State: &state}, log)
		})
	}
}

// release puts the held copies of message id back in the queue, due at
// now, and reports them queued to the ledger.
func (d *Deliverer) release(id string, now time.Time) (int, error) {
	env, idxs, err := d.spool.Release(id, now.UTC())
	if err != nil && !errors.Is(err, ErrNoSuchMessage) {
		return 0, err
	}
	d.mu.Lock()
	n := 0
	for ref := range d.held {
		if ref.id != id {
			continue
		}
		delete(d.held, ref)
		if err == nil { // a deleted message has nothing to release
			heap.Push(&d.jobs, job{id: id, rcpt: ref.rcpt, due: now})
			n++
		}
	}
	d.mu.Unlock()
	if err != nil || env.Bounce {
		return n, nil
	}
	d.log.Info("held copies released by the operator", "queue_id", id, "copies", n)
	for _, i := range idxs {
		state := env.Recipients[i]
		_ = d.tell(env, LedgerReport{Kind: ReportDelivery, Rcpt: i, State: &state}, d.log)
	}
	return n, nil
}
