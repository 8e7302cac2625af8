package relay

import (
	"container/heap"
	"errors"
	"slices"
	"time"
)

// Retry makes every pending copy of id due now, and releases its held
// copies (StatusHeld) into the queue, due now; id "" means every message.
// It returns the number of copies rescheduled and, of those, released.
func (d *Deliverer) Retry(id string) (rescheduled, released int, err error) {
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	d.mu.Lock()
	now := time.Now()
	for i := range d.jobs {
		if id == "" || d.jobs[i].id == id {
			d.jobs[i].due = now
			rescheduled++
		}
	}
	heap.Init(&d.jobs)
	var holding []string // messages with held copies
	for ref := range d.held {
		if (id == "" || ref.id == id) && !slices.Contains(holding, ref.id) {
			holding = append(holding, ref.id)
		}
	}
	d.mu.Unlock()
	var errs []error
	for _, mid := range holding {
		n, err := d.release(mid, now)
		released += n
		errs = append(errs, err)
	}
	d.wakeWorker()
	return rescheduled + released, released, errors.Join(errs...)
}

// Delete takes a message out of the queue. With bounce, each copy not yet
// delivered is reported failed to the sender; without, it is dropped
// silently (its status still says so in the API).
func (d *Deliverer) Delete(id string, bounce bool) error {
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	d.mu.Lock()
	d.dropJobs(func(j job) bool { return j.id == id })
	for ref := range d.held {
		if ref.id == id {
			delete(d.held, ref)
		}
	}
	d.mu.Unlock()

	reason := "deleted from the queue by the operator"
	if !bounce {
		reason += " (no bounce sent)"
	}
	now := time.Now().UTC()
	var failed []int
	env, err := d.spool.Update(id, func(e *Envelope) error {
		for i := range e.Recipients {
			r := &e.Recipients[i]
			if r.Final() {
				continue
			}
			r.Status, r.LastResponse, r.UpdatedAt = StatusBounced, reason, now
			failed = append(failed, i)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, i := range failed {
		rc := env.Recipients[i]
		if !env.Bounce {
			state := rc
			_ = d.tell(env, LedgerReport{Kind: ReportDelivery, Rcpt: i, State: &state}, d.log)
		}
		if bounce {
			if err := d.bounce(env, rc); err != nil {
				return err
			}
		}
	}
	d.log.Info("message deleted by the operator", "queue_id", id, "bounced", bounce, "copies", len(failed))
	owing, err := d.spool.RemoveOwing(id, d.owedOf(id))
	if owing {
		d.retired(id)
	}
	return err
}
