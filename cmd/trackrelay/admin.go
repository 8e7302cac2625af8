package main

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/trackrelay/trackrelay/relay"
)

// adminHandler serves the operator's queue commands, which `trackrelay
// queue` sends (queue.go), over the relay's Go methods. It must only be
// reachable by the operator: serve listens for it on a unix socket in the
// data dir (adminSocket).
//
//	GET  /queue               every queued message
//	GET  /queue/{id}          one message
//	POST /queue/retry         retry every pending copy now, held ones too
//	POST /queue/{id}/retry    retry one message's pending and held copies now
//	POST /queue/{id}/delete   drop it (?bounce=true: bounce it to the sender)
func adminHandler(spool *relay.Spool, d *relay.Deliverer) http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	}
	fail := func(w http.ResponseWriter, err error) {
		if errors.Is(err, relay.ErrNoSuchMessage) {
			reply(w, http.StatusNotFound, map[string]string{"error": "no such message in the queue"})
			return
		}
		reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
	}
	mux.HandleFunc("GET /queue", func(w http.ResponseWriter, r *http.Request) {
		envs, err := spool.List()
		if err != nil {
			fail(w, err)
			return
		}
		if envs == nil {
			envs = []*relay.Envelope{}
		}
		reply(w, http.StatusOK, envs)
	})
	mux.HandleFunc("GET /queue/{id}", func(w http.ResponseWriter, r *http.Request) {
		env, err := spool.Get(r.PathValue("id"))
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
		if _, err := spool.Get(r.PathValue("id")); err != nil {
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
