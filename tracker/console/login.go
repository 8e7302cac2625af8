package console

import (
	"net/http"
	"strconv"
	"time"
)

// loginForm is the login page's data.
type loginForm struct {
	Account string
	Error   string
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	if h.currentSession(r) != nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	h.render(w, http.StatusOK, "login", &page{Title: "Log in", Data: loginForm{}})
}

// login checks the account's secret (its API key or its SMTP password)
// and starts a session. Failed attempts are limited per client address.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	name, secret := r.PostFormValue("account"), r.PostFormValue("secret")
	ip := h.clientIP(r)
	if !h.limiter.Begin(ip, h.now()) {
		wait := strconv.Itoa(int(loginEvery / time.Second))
		w.Header().Set("Retry-After", wait)
		h.render(w, http.StatusTooManyRequests, "login", &page{Title: "Log in", Data: loginForm{Account: name,
			Error: "Too many failed attempts from your address. Wait " + wait + " seconds, then try again."}})
		return
	}
	acc := (*h.accounts.Load())[name]
	ok := check(acc, secret)
	h.limiter.End(ip, h.now(), !ok)
	if !ok {
		h.log.Info("console: failed login", "account", name, "ip", ip.String())
		h.render(w, http.StatusUnauthorized, "login", &page{Title: "Log in", Data: loginForm{Account: name,
			Error: "That account name and secret do not match. Use the account's API key, or its SMTP password."}})
		return
	}
	keys := *h.keys.Load()
	s := &session{Account: acc.name, ID: newSessionID(), Expires: h.now().Add(h.cfg.SessionTTL).Unix(), Cred: acc.cred}
	http.SetCookie(w, h.sessionCookie(s.encode(keys[len(keys)-1]), int(h.cfg.SessionTTL/time.Second)))
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// logout ends the session: the cookie is cleared, and this node refuses
// the session's id until it would have expired. A logout without a valid
// session just clears the cookie; with one, it needs its CSRF token.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if s := h.currentSession(r); s != nil {
		if !validCSRF(r.PostFormValue("csrf"), s.ID, *h.keys.Load()) {
			h.renderError(w, r, http.StatusForbidden, "This form has expired or did not come from this page. Go back, reload the page and try again.")
			return
		}
		h.revoked.add(s.ID, s.Expires, h.now())
	}
	http.SetCookie(w, h.sessionCookie("", -1))
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
