package tracker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/trackrelay/trackrelay/internal/msgid"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// serveHealth answers GET /healthz: the process is up.
func (h *handler) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte("ok"))
	}
}

// authenticate returns the account whose API key is the request's Bearer
// token. The hash of the key is compared with every account's in constant
// time.
func (h *handler) authenticate(r *http.Request) (string, bool) {
	auth := r.Header.Get("Authorization")
	scheme, key, ok := strings.Cut(strings.TrimSpace(auth), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(key))
	name, found := "", 0
	for _, a := range *h.accounts.Load() {
		if subtle.ConstantTimeCompare(sum[:], a.sum[:]) == 1 {
			name, found = a.name, found+1
		}
	}
	return name, found == 1
}

// messageRef authenticates a request for /api/v1/messages/{ref} and
// returns its account and ref (unescaped), answering 401 or 404 when it
// has none.
func (h *handler) messageRef(w http.ResponseWriter, r *http.Request) (account, ref string, ok bool) {
	if account, ok = h.requireAccount(w, r); !ok {
		return "", "", false
	}
	if ref = r.PathValue("ref"); ref == "" {
		writeJSONError(w, http.StatusNotFound, "message not found")
		return "", "", false
	}
	return account, ref, true
}

// serveMessage answers GET /api/v1/messages/{ref}.
func (h *handler) serveMessage(w http.ResponseWriter, r *http.Request) {
	account, ref, ok := h.messageRef(w, r)
	if !ok {
		return
	}
	view, err := h.store.Lookup(r.Context(), account, ref)
	if errors.Is(err, store.ErrNotFound) && h.cfg.Pending != nil {
		view, err = h.lookupPending(r.Context(), account, ref)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeJSONError(w, http.StatusNotFound, "message not found")
		return
	case err != nil:
		h.log.Error("tracker: lookup", "account", account, "ref", ref, "err", err)
		writeJSONError(w, http.StatusServiceUnavailable, "store unavailable, try again")
		return
	}
	h.writeJSON(w, r, view)
}

// lookupPending answers for a message the store did not have: one the
// relay has accepted and not yet reported (Config.Pending), unless its data
// was erased. The store may have got it since the first look (the relay
// drops a message from its pending ones once its commit is visible), so a
// miss looks in the store again.
func (h *handler) lookupPending(ctx context.Context, account, ref string) (*store.MessageView, error) {
	m, ok := h.cfg.Pending(account, ref)
	if !ok {
		return h.store.Lookup(ctx, account, ref)
	}
	switch _, err := h.store.Message(ctx, m.ID); {
	case errors.Is(err, store.ErrErased):
		return nil, store.ErrNotFound
	case err == nil:
		return h.store.Lookup(ctx, account, m.ID)
	}
	return pendingView(m), nil
}

// pendingView is the view of a message the store does not have yet: as
// the store's would be right after PutMessage.
func pendingView(m *store.Message) *store.MessageView {
	cp := *m
	cp.MessageID = msgid.Normalize(cp.MessageID)
	cp.AcceptedAt = cp.AcceptedAt.UTC()
	cp.Subject = store.TruncateSubject(cp.Subject)
	return store.BuildView(&cp, nil, map[int]store.Delivery{}, nil, map[int]*store.Tally{})
}

// requireAccount authenticates an API request, answering 401 when it fails.
func (h *handler) requireAccount(w http.ResponseWriter, r *http.Request) (string, bool) {
	account, ok := h.authenticate(r)
	if !ok {
		challenge := `Bearer realm="trackrelay"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeJSONError(w, http.StatusUnauthorized, "missing or invalid API key")
	}
	return account, ok
}

// eraseMessage answers DELETE /api/v1/messages/{ref}: 204 once erased.
func (h *handler) eraseMessage(w http.ResponseWriter, r *http.Request) {
	account, ref, ok := h.messageRef(w, r)
	if !ok {
		return
	}
	err := h.store.Erase(r.Context(), account, ref)
	if errors.Is(err, store.ErrNotFound) && h.cfg.Pending != nil {
		if m, ok := h.cfg.Pending(account, ref); ok {
			// Not reported yet: store it, then erase it, so that the
			// relay's report (a no-op for an erased message) cannot bring
			// it back.
			if err = h.store.PutMessage(r.Context(), *m); err == nil {
				err = h.store.Erase(r.Context(), account, m.ID)
			}
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeJSONError(w, http.StatusNotFound, "message not found")
	case err != nil:
		h.log.Error("tracker: erase", "account", account, "ref", ref, "err", err)
		writeJSONError(w, http.StatusServiceUnavailable, "store unavailable, try again")
	default:
		h.log.Info("tracker: tracking data erased", "account", account, "ref", ref)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	}
}

// serveEvents answers GET /api/v1/events?after=CURSOR&limit=N.
func (h *handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	account, ok := h.requireAccount(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := store.DefaultFeedLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxFeedLimit {
			writeJSONError(w, http.StatusBadRequest, "limit must be 1 to "+strconv.Itoa(store.MaxFeedLimit))
			return
		}
		limit = n
	}
	page, err := h.store.Feed(r.Context(), account, q.Get("after"), limit)
	switch {
	case errors.Is(err, store.ErrBadCursor):
		writeJSONError(w, http.StatusBadRequest, "invalid cursor")
		return
	case err != nil:
		h.log.Error("tracker: feed", "account", account, "err", err)
		writeJSONError(w, http.StatusServiceUnavailable, "store unavailable, try again")
		return
	}
	h.writeJSON(w, r, page)
}

// writeJSON answers 200 with v as JSON.
func (h *handler) writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		h.log.Error("tracker: encode answer", "err", err)
		writeJSONError(w, http.StatusInternalServerError, "internal error")
		return
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// writeJSONError writes {"error": msg} with code.
func writeJSONError(w http.ResponseWriter, code int, msg string) {
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
