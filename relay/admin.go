package relay

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// List returns every message in the spool, oldest first.
func (s *Spool) List() ([]*Envelope, error) {
	var envs []*Envelope
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(queueBucket).ForEach(func(k, v []byte) error {
			env := new(Envelope)
			if err := json.Unmarshal(v, env); err != nil {
				return nil // set aside at the next start; Load logs it
			}
			envs = append(envs, env)
			return nil
		})
	})
	sort.Slice(envs, func(i, j int) bool { return envs[i].AcceptedAt.Before(envs[j].AcceptedAt) })
	return envs, err
}

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
		if err := d.ledger.Delivery(context.Background(), id, i, env.Recipients[i]); err != nil {
			d.metrics.ledgerErrors.Inc()
			d.log.Error("ledger: recording the released copy failed", "queue_id", id, "rcpt", i, "err", err)
		}
	}
	return n, nil
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
			if err := d.ledger.Delivery(context.Background(), env.ID, i, rc); err != nil {
				d.metrics.ledgerErrors.Inc()
			}
		}
		if bounce {
			if err := d.bounce(env, rc); err != nil {
				return err
			}
		}
	}
	d.log.Info("message deleted by the operator", "queue_id", id, "bounced", bounce, "copies", len(failed))
	return d.spool.Remove(id)
}

// AdminHandler serves the operator's queue commands. It must only be
// reachable by the operator (cmd serves it on a unix socket in the data dir):
//
//	GET  /queue               every queued message
//	GET  /queue/{id}          one message
//	POST /queue/retry         retry every pending copy now, held ones too
//	POST /queue/{id}/retry    retry one message's pending and held copies now
//	POST /queue/{id}/delete   drop it (?bounce=true: bounce it to the sender)
func (d *Deliverer) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	}
	fail := func(w http.ResponseWriter, err error) {
		if errors.Is(err, ErrNoSuchMessage) {
			reply(w, http.StatusNotFound, map[string]string{"error": "no such message in the queue"})
			return
		}
		reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
	}
	mux.HandleFunc("GET /queue", func(w http.ResponseWriter, r *http.Request) {
		envs, err := d.spool.List()
		if err != nil {
			fail(w, err)
			return
		}
		if envs == nil {
			envs = []*Envelope{}
		}
		reply(w, http.StatusOK, envs)
	})
	mux.HandleFunc("GET /queue/{id}", func(w http.ResponseWriter, r *http.Request) {
		env, err := d.spool.Get(r.PathValue("id"))
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, env)
	})
	retry := func(w http.ResponseWriter, id string) {
		n, released, err := d.Retry(id)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, map[string]int{"rescheduled": n, "released": released})
	}
	mux.HandleFunc("POST /queue/retry", func(w http.ResponseWriter, r *http.Request) {
		retry(w, "")
	})
	mux.HandleFunc("POST /queue/{id}/retry", func(w http.ResponseWriter, r *http.Request) {
		if _, err := d.spool.Get(r.PathValue("id")); err != nil {
			fail(w, err)
			return
		}
		retry(w, r.PathValue("id"))
	})
	mux.HandleFunc("POST /queue/{id}/delete", func(w http.ResponseWriter, r *http.Request) {
		bounce := r.URL.Query().Get("bounce") == "true"
		if err := d.Delete(r.PathValue("id"), bounce); err != nil {
			fail(w, err)
			return
		}
		what := "dropped"
		if bounce {
			what = "bounced"
		}
		reply(w, http.StatusOK, map[string]string{"deleted": r.PathValue("id"), "result": what})
	})
	return mux
}
