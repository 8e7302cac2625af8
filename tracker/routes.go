package tracker

import (
	"net/http"
	"path"
	"strings"

	"github.com/trackrelay/trackrelay/tracker/token"
)

// routes returns the tracker's routes. A pattern with a method answers
// it (GET answers HEAD too); the same path without one answers every
// other method with 405 and the methods allowed. Paths that name no
// route, the bare prefixes among them, are 404.
func (h *handler) routes() *http.ServeMux {
	mux := http.NewServeMux()
	handle := func(pattern, label string, fn http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if sw, ok := w.(*statusWriter); ok {
				sw.route = label
			}
			fn(w, r)
		})
	}
	allow := func(methods string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) { methodNotAllowed(w, methods) }
	}
	// A token is one segment: "{token}" matches it without the
	// trailing-slash lookup a subtree costs; the subtree ("/o/") takes
	// the rest, which no token names.
	for _, hit := range []struct {
		prefix, label string
		kind          token.Kind
	}{{token.OpenPath, handlerOpen, token.KindOpen}, {token.ClickPath, handlerClick, token.KindClick}} {
		serve := func(w http.ResponseWriter, r *http.Request) {
			h.serveHit(w, r, hit.kind, r.URL.EscapedPath()[len(hit.prefix):])
		}
		handle("GET "+hit.prefix+"{token}", hit.label, serve)
		handle("GET "+hit.prefix, hit.label, serve)
		handle(hit.prefix, hit.label, allow("GET, HEAD"))
	}
	handle("GET /api/v1/messages/{ref...}", handlerAPI, h.serveMessage)
	handle("DELETE /api/v1/messages/{ref...}", handlerAPI, h.eraseMessage)
	handle("/api/v1/messages/{ref...}", handlerAPI, allow("GET, HEAD, DELETE"))
	handle("GET /api/v1/events", handlerEvents, h.serveEvents)
	handle("/api/v1/events", handlerEvents, allow("GET, HEAD"))
	handle("GET /healthz", handlerHealth, h.serveHealth)
	handle("/healthz", handlerHealth, allow("GET, HEAD"))
	notFound := func(w http.ResponseWriter, _ *http.Request) { writeJSONError(w, http.StatusNotFound, "not found") }
	// The subtrees' roots without their slash, which ServeMux would
	// otherwise redirect to the subtree.
	for _, p := range []string{strings.TrimSuffix(token.OpenPath, "/"), strings.TrimSuffix(token.ClickPath, "/"), "/api/v1/messages"} {
		handle(p, handlerOther, notFound)
	}
	handle("/", handlerOther, notFound)
	return mux
}

// serveHitDirect serves a pixel or click request, the hot path, without
// ServeMux's pattern matching (about a twentieth of an unrecorded hit's
// time): GET or HEAD of a clean path under a hit prefix, which routes
// sends to the same handler, with the same token (the escaped path after
// the prefix). It reports false, having done nothing, for any other request.
func (h *handler) serveHitDirect(w *statusWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.EscapedPath()
	var kind token.Kind
	var label, rest string
	switch {
	case strings.HasPrefix(p, token.OpenPath):
		kind, label, rest = token.KindOpen, handlerOpen, p[len(token.OpenPath):]
	case strings.HasPrefix(p, token.ClickPath):
		kind, label, rest = token.KindClick, handlerClick, p[len(token.ClickPath):]
	default:
		return false
	}
	w.route = label
	h.serveHit(w, r, kind, rest)
	return true
}

// isCleanPath reports whether p is an absolute path that ServeMux leaves as
// it is: no "." or ".." segments, no empty ones but a trailing slash.
func isCleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	np := path.Clean(p)
	if p != "/" && p[len(p)-1] == '/' {
		return len(np)+1 == len(p) && p[:len(np)] == np
	}
	return np == p
}

// literalPath returns r with the dots of its path, and the slashes that
// follow a slash, percent-encoded: the same path to a handler (the
// unescaped path and the path values are unchanged), which ServeMux routes
// by its prefix as it is, since no route's path has either.
func literalPath(r *http.Request) *http.Request {
	p := r.URL.EscapedPath()
	var b strings.Builder
	b.Grow(len(p) + 16)
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '.':
			b.WriteString("%2E")
		case c == '/' && i > 0 && p[i-1] == '/':
			b.WriteString("%2F")
		default:
			b.WriteByte(c)
		}
	}
	r2 := r.WithContext(r.Context())
	u := *r.URL
	u.RawPath = b.String()
	r2.URL = &u
	return r2
}
