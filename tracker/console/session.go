package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Session cookie parameters.
const (
	// CookieName is the name of the session cookie.
	CookieName = "trackrelay_session"
	// cookiePath scopes the cookie to the console: the tracking and API
	// paths of the same host never receive it.
	cookiePath = "/ui"
	// DefaultSessionTTL is how long a session lasts when Config.SessionTTL
	// is zero.
	DefaultSessionTTL = 12 * time.Hour
)

// Purpose labels of the keys derived from a tracking secret, so that no
// console key is ever the token key or another console key.
const (
	sessionKeyLabel = "trackrelay console session v1"
	csrfKeyLabel    = "trackrelay console csrf v1"
)

var b64 = base64.RawURLEncoding

// consoleKey is the pair of keys derived from one tracking secret.
type consoleKey struct {
	session, csrf []byte
}

// deriveKeys derives the console's keys from each tracking secret, in the
// same order (the last one signs).
func deriveKeys(secrets [][]byte) ([]consoleKey, error) {
	if len(secrets) == 0 {
		return nil, errors.New("console: no tracking secret to derive the session key from")
	}
	keys := make([]consoleKey, len(secrets))
	for i, s := range secrets {
		if len(s) == 0 {
			return nil, errors.New("console: empty tracking secret")
		}
		keys[i] = consoleKey{session: mac(s, sessionKeyLabel), csrf: mac(s, csrfKeyLabel)}
	}
	return keys, nil
}

func mac(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// session is what the cookie carries.
type session struct {
	Account string `json:"a"`
	// ID names the session: the CSRF token is bound to it and a logout
	// revokes it.
	ID string `json:"s"`
	// Expires is a Unix time.
	Expires int64 `json:"e"`
	// Cred is the fingerprint of the account's credentials at login: when
	// they change, the session ends.
	Cred string `json:"c"`
}

// newSessionID returns 128 random bits, URL-safe.
func newSessionID() string {
	var b [16]byte
	rand.Read(b[:])
	return b64.EncodeToString(b[:])
}

// encode returns the cookie value of s, signed with key.
func (s *session) encode(key consoleKey) string {
	payload, _ := json.Marshal(s)
	p := b64.EncodeToString(payload)
	return p + "." + b64.EncodeToString(mac(key.session, p))
}

// decodeSession verifies a cookie value with any of keys and returns its
// session, or nil when it is malformed, forged or expired at now.
func decodeSession(value string, keys []consoleKey, now time.Time) *session {
	p, tag, ok := strings.Cut(value, ".")
	if !ok || len(value) > 1024 {
		return nil
	}
	got, err := b64.DecodeString(tag)
	if err != nil {
		return nil
	}
	valid := false
	for _, k := range keys {
		if hmac.Equal(got, mac(k.session, p)) {
			valid = true
			break
		}
	}
	if !valid {
		return nil
	}
	payload, err := b64.DecodeString(p)
	if err != nil {
		return nil
	}
	var s session
	if json.Unmarshal(payload, &s) != nil || s.Account == "" || s.ID == "" {
		return nil
	}
	if now.Unix() >= s.Expires {
		return nil
	}
	return &s
}

// csrfToken returns the CSRF token of session id sid, made with key.
func csrfToken(key consoleKey, sid string) string {
	return b64.EncodeToString(mac(key.csrf, sid))
}

// validCSRF reports whether token is sid's CSRF token under any of keys.
func validCSRF(token, sid string, keys []consoleKey) bool {
	got, err := b64.DecodeString(token)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	for _, k := range keys {
		if subtle.ConstantTimeCompare(got, mac(k.csrf, sid)) == 1 {
			return true
		}
	}
	return false
}

// maxRevocations bounds the logged-out session ids a node remembers: an
// account could otherwise grow the set without end by logging in and out.
const maxRevocations = 100_000

// revocations are the session ids logged out on this node, until they
// would have expired anyway. The cookie is cleared in the browser that
// logged out; this also refuses a copy of it on this node. At most
// maxRevocations are kept: past it, the one closest to expiring is
// forgotten (its cookie was cleared by its browser; only a copy taken
// before the logout would work again, until it expires).
type revocations struct {
	mu    sync.Mutex
	ids   map[string]int64 // id -> expiry (Unix)
	swept int64            // when expired ids were last dropped (Unix)
}

func (r *revocations) add(id string, expires int64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[string]int64{}
	}
	// Dropping the expired ones walks the set: once a minute, not at each
	// logout.
	if t := now.Unix(); t-r.swept >= 60 || len(r.ids) >= maxRevocations {
		r.swept = t
		for k, exp := range r.ids {
			if exp <= t {
				delete(r.ids, k)
			}
		}
	}
	if len(r.ids) >= maxRevocations {
		first, min := "", int64(0)
		for k, exp := range r.ids {
			if first == "" || exp < min {
				first, min = k, exp
			}
		}
		delete(r.ids, first)
	}
	r.ids[id] = expires
}

func (r *revocations) revoked(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.ids[id]
	return ok
}

// sessionCookie returns the cookie that carries value; maxAge < 0 deletes
// it.
func (h *Handler) sessionCookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     CookieName,
		Value:    value,
		Path:     cookiePath,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   h.secure,
		SameSite: http.SameSiteLaxMode,
	}
}
