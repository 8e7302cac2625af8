package relay

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"net/http"
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

// Retry makes every pending copy of id due now; id "" means every message.
// It returns the number of copies rescheduled.
func (d *Deliverer) Retry(id string) int {
	d.mu.Lock()
	n := 0
	now := time.Now()
	for i := range d.jobs {
		if id == "" || d.jobs[i].id == id {
			d.jobs[i].due = now
			n++
		}
	}
	heap.Init(&d.jobs)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return n
}

// Delete takes a message out of the queue. With bounce, each copy not yet
// delivered is reported failed to the sender; without, it is dropped
// silently (its status still says so in the API).
func (d *Deliverer) Delete(id string, bounce bool) error {
	d.mu.Lock()
	kept := d.jobs[:0]
	for _, j := range d.jobs {
		if j.id != id {
			kept = append(kept, j)
		}
	}
	d.jobs = kept
	heap.Init(&d.jobs)
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
//	POST /queue/retry         retry every pending copy now
//	POST /queue/{id}/retry    retry one message's pending copies now
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
	mux.HandleFunc("POST /queue/retry", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]int{"rescheduled": d.Retry("")})
	})
	mux.HandleFunc("POST /queue/{id}/retry", func(w http.ResponseWriter, r *http.Request) {
		if _, err := d.spool.Get(r.PathValue("id")); err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusOK, map[string]int{"rescheduled": d.Retry(r.PathValue("id"))})
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
