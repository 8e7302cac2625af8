package tracker

import (
	"net/http"
	"strings"
	"testing"
)

// Paths are routed as they were sent: ServeMux's redirects to a cleaned
// path or to a subtree's root never happen, and a path that holds a
// prefix is that route's, whatever follows.
func TestRoutes_asSent(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	auth := map[string]string{"Authorization": "Bearer " + aliceKey}
	for _, tc := range []struct {
		method, path string
		code         int
		json         bool // a JSON error, not the hit's plain 404
		allow        string
	}{
		{"GET", "/o", 404, true, ""},
		{"GET", "/c", 404, true, ""},
		{"GET", "/api/v1/messages", 404, true, ""},
		{"GET", "/o/", 404, false, ""},
		{"GET", "/o//x", 404, false, ""},
		{"GET", "/c/./x", 404, false, ""},
		{"GET", "/o/a/b.gif", 404, false, ""},
		{"POST", "/o/../healthz", 405, true, "GET, HEAD"},
		{"PUT", "/api/v1/messages//x", 405, true, "GET, HEAD, DELETE"},
		{"GET", "/api/v1/messages/" + e.msg.ID + "/..", 404, true, ""},
		{"GET", "/./healthz", 404, true, ""},
		{"GET", "//healthz", 404, true, ""},
		{"GET", "/healthz/", 404, true, ""},
	} {
		resp, body := rawGet(t, e.srv.URL, tc.method, tc.path, auth)
		json := strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
		if resp.StatusCode != tc.code || json != tc.json || resp.Header.Get("Allow") != tc.allow || resp.Header.Get("Location") != "" {
			t.Errorf("%s %s: %d %q Allow %q Location %q: %q", tc.method, tc.path, resp.StatusCode,
				resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), resp.Header.Get("Location"), body)
		}
	}
	if resp, _ := rawGet(t, e.srv.URL, http.MethodGet, "/healthz", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}
