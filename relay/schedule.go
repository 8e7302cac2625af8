package relay

import (
	"container/heap"
	"time"

	"github.com/trackrelay/trackrelay/internal/backoff"
)

type job struct {
	id   string
	rcpt int
	due  time.Time
}

// copyRef names one recipient copy.
type copyRef struct {
	id   string
	rcpt int
}

type jobHeap []job

func (h jobHeap) Len() int           { return len(h) }
func (h jobHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h jobHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *jobHeap) Push(x any)        { *h = append(*h, x.(job)) }
func (h *jobHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	*h = old[:len(old)-1]
	return j
}

// next blocks until a job is due, or returns false once stopping.
func (d *Deliverer) next() (job, bool) {
	for {
		d.mu.Lock()
		if d.stopping {
			d.mu.Unlock()
			return job{}, false
		}
		var wait time.Duration = time.Hour
		if len(d.jobs) > 0 {
			wait = time.Until(d.jobs[0].due)
			if wait <= 0 {
				j := heap.Pop(&d.jobs).(job)
				d.sending++
				d.mu.Unlock()
				// Let another worker look at the next job.
				select {
				case d.wake <- struct{}{}:
				default:
				}
				return j, true
			}
		}
		d.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-d.wake:
		case <-t.C:
		case <-d.stopWork:
		}
		t.Stop()
	}
}

func (d *Deliverer) worker() {
	defer d.wg.Done()
	for {
		j, ok := d.next()
		if !ok {
			return
		}
		d.run(j)
	}
}

// endTurn ends a copy's turn in hand (counted as "sending").
func (d *Deliverer) endTurn() {
	d.mu.Lock()
	d.sending--
	d.mu.Unlock()
}

// retryLater schedules copy j again after a failure of the relay's own
// (reading its record, writing its outcome).
func (d *Deliverer) retryLater(j job, after time.Duration) {
	d.mu.Lock()
	j.due = time.Now().Add(after)
	heap.Push(&d.jobs, j)
	d.mu.Unlock()
	// A sleeping worker waits for the earliest job it saw, or an hour:
	// this one may be due before.
	d.wakeWorker()
}

// wakeWorker makes a waiting worker look at the schedule again.
func (d *Deliverer) wakeWorker() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// dropJobs takes the jobs that drop reports out of the schedule; d.mu must
// be held.
func (d *Deliverer) dropJobs(drop func(job) bool) {
	kept := d.jobs[:0]
	for _, j := range d.jobs {
		if !drop(j) {
			kept = append(kept, j)
		}
	}
	clear(d.jobs[len(kept):])
	d.jobs = kept
	heap.Init(&d.jobs)
}

// backoff is the wait after the n-th failed attempt: exponential, capped,
// with ±20% jitter so that a queue does not retry in lockstep.
func (d *Deliverer) backoff(n int) time.Duration {
	return backoff.Jitter(backoff.Exp(d.cfg.RetryInitial, d.cfg.RetryMax, n))
}
