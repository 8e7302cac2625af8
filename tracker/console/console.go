package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/trackrelay/trackrelay/internal/clientip"
	"github.com/trackrelay/trackrelay/internal/ratelimit"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Prefix is the path the console is served under.
const Prefix = "/ui/"

// Failed logins allowed per client address: 5 at once, then one every 30
// seconds, as for SMTP AUTH.
const (
	loginBurst = 5
	loginEvery = 30 * time.Second
)

// ContentSecurityPolicy is sent with every response: no script at all,
// styles and images from the console only (the charts are inline SVG),
// forms posted to the console only, never framed.
const ContentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Store is what the console reads and changes: package store's backends
// implement it.
type Store interface {
	// Lookup and Erase are store.Store's.
	Lookup(ctx context.Context, account, ref string) (*store.MessageView, error)
	Erase(ctx context.Context, account, ref string) error
	store.Browser
}

// Config configures the console.
type Config struct {
	// BaseURL is the public URL of the http listener; when it is https,
	// the session cookie is Secure.
	BaseURL string
	// TrustedProxies may set X-Forwarded-For (the client address failed
	// logins are limited by).
	TrustedProxies []netip.Prefix
	// Accounts may log in.
	Accounts []Account
	// Secrets are the tracking secrets, the current one last: the session
	// and CSRF keys are derived from them (with purpose labels), the
	// current one signs and all of them verify, so that every node of a
	// fleet, and a node after a key rotation, accepts a session.
	Secrets [][]byte
	// SessionTTL is how long a session lasts; zero means
	// DefaultSessionTTL.
	SessionTTL time.Duration
	// Logger receives store failures; nil discards.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// Handler serves the console under Prefix. Its accounts and secrets can
// be replaced while it serves (a configuration reload).
type Handler struct {
	cfg      Config
	store    Store
	log      *slog.Logger
	now      func() time.Time
	secure   bool
	trusted  []netip.Prefix
	accounts atomic.Pointer[map[string]*account]
	keys     atomic.Pointer[[]consoleKey]
	limiter  *ratelimit.Limiter
	origins  *http.CrossOriginProtection
	revoked  revocations
	pages    map[string]*template.Template
	mux      *http.ServeMux
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/console.css
var css []byte

// New returns the console over st. It fails when cfg has no secret.
func New(cfg Config, st Store) (*Handler, error) {
	h := &Handler{cfg: cfg, store: st, log: cfg.Logger, now: cfg.Now,
		secure:  strings.HasPrefix(strings.ToLower(cfg.BaseURL), "https:"),
		trusted: clientip.Normalize(cfg.TrustedProxies),
		limiter: ratelimit.New(rate.Every(loginEvery), loginBurst),
		origins: http.NewCrossOriginProtection()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.cfg.SessionTTL <= 0 {
		h.cfg.SessionTTL = DefaultSessionTTL
	}
	// base_url's origin is the console's own, even behind a proxy that
	// rewrites Host, for a browser that sends Origin but not Sec-Fetch-Site.
	if u, err := url.Parse(cfg.BaseURL); err == nil && u.Scheme != "" && u.Host != "" {
		if err := h.origins.AddTrustedOrigin(u.Scheme + "://" + u.Host); err != nil {
			return nil, fmt.Errorf("console: base URL %q: %w", cfg.BaseURL, err)
		}
	}
	if err := h.SetSecrets(cfg.Secrets); err != nil {
		return nil, err
	}
	h.SetAccounts(cfg.Accounts)
	pages, err := parsePages(templateFS)
	if err != nil {
		return nil, err
	}
	h.pages = pages
	h.mux = h.routes()
	return h, nil
}

// SetAccounts replaces the accounts that may log in. Sessions of an
// account that is gone, or whose API key or password changed, end.
func (h *Handler) SetAccounts(accounts []Account) {
	m := loadAccounts(accounts)
	h.accounts.Store(&m)
}

// SetSecrets replaces the tracking secrets the session keys are derived
// from (the current one last); sessions signed with a secret still among
// them stay valid.
func (h *Handler) SetSecrets(secrets [][]byte) error {
	keys, err := deriveKeys(secrets)
	if err != nil {
		return err
	}
	h.keys.Store(&keys)
	return nil
}

// parsePages parses each page template with the layout.
func parsePages(fsys fs.FS) (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range []string{"login", "list", "message", "overview", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(fsys, "templates/layout.html", "templates/chart.html", "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}

func (h *Handler) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/login", h.loginPage)
	mux.HandleFunc("POST /ui/login", h.login)
	mux.HandleFunc("POST /ui/logout", h.logout)
	mux.HandleFunc("GET /ui/static/console.css", serveCSS)
	mux.HandleFunc("GET /ui/{$}", h.authed(h.listPage))
	mux.HandleFunc("GET /ui/overview", h.authed(h.overviewPage))
	mux.HandleFunc("GET /ui/messages/{id}", h.authed(h.messagePage))
	mux.HandleFunc("POST /ui/messages/{id}/erase", h.authedPost(h.erase))
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
	})
	// Any other path: the login for a stranger, not found for a session.
	// Only for GET (and HEAD): another method on a page's path is 405 with
	// Allow, from the mux.
	mux.HandleFunc("GET /ui/", h.authed(func(w http.ResponseWriter, r *http.Request, _ *request) {
		h.renderError(w, r, http.StatusNotFound, "This page does not exist.")
	}))
	return mux
}

// ServeHTTP serves the console's paths, with its security headers on
// every response.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	// A form posted from another site is refused before any handler runs:
	// the login has no session to bind a CSRF token to, and without this
	// another site could log a visitor in to the attacker's account (login
	// CSRF). Browsers say where a POST comes from (Sec-Fetch-Site, Origin);
	// clients that are not browsers, such as curl, send neither and are
	// allowed.
	if err := h.origins.Check(r); err != nil {
		h.renderError(w, r, http.StatusForbidden, "This form was sent from another website, so it was refused. Open the console's own page and try again.")
		return
	}
	h.mux.ServeHTTP(w, r)
}

func serveCSS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Write(css)
}

// request is what an authenticated page knows of its request.
type request struct {
	account string
	sess    *session
	csrf    string // the session's CSRF token, for the forms
}

// currentSession returns the request's valid session, or nil.
func (h *Handler) currentSession(r *http.Request) *session {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return nil
	}
	now := h.now()
	s := decodeSession(c.Value, *h.keys.Load(), now)
	if s == nil || h.revoked.revoked(s.ID) {
		return nil
	}
	acc := (*h.accounts.Load())[s.Account]
	if acc == nil || (!acc.hasKey && acc.hash == nil) || acc.cred != s.Cred {
		return nil
	}
	return s
}

func (h *Handler) newRequest(s *session) *request {
	keys := *h.keys.Load()
	return &request{account: s.Account, sess: s, csrf: csrfToken(keys[len(keys)-1], s.ID)}
}

// authed wraps a page that needs a session: without one, the browser is
// sent to the login.
func (h *Handler) authed(fn func(http.ResponseWriter, *http.Request, *request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := h.currentSession(r)
		if s == nil {
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		fn(w, r, h.newRequest(s))
	}
}

// authedPost wraps a state change: it needs a session and the session's
// CSRF token in the form field "csrf", else 403.
func (h *Handler) authedPost(fn func(http.ResponseWriter, *http.Request, *request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		s := h.currentSession(r)
		if s == nil || !validCSRF(r.PostFormValue("csrf"), s.ID, *h.keys.Load()) {
			h.renderError(w, r, http.StatusForbidden, "This form has expired or did not come from this page. Go back, reload the page and try again.")
			return
		}
		fn(w, r, h.newRequest(s))
	}
}

// page is what every template gets.
type page struct {
	Title   string
	Account string // "" on the login and error pages without a session
	CSRF    string
	Nav     string // which navigation link is current
	Data    any
}

// render executes the page template name with data into a buffer, so that
// a failure is a clean 500, then sends it, never cached.
func (h *Handler) render(w http.ResponseWriter, status int, name string, p *page) {
	var buf bytes.Buffer
	if err := h.pages[name].Execute(&buf, p); err != nil {
		h.log.Error("console: template", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// renderError sends a page that says msg, with status.
func (h *Handler) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	p := &page{Title: http.StatusText(status), Data: msg}
	if s := h.currentSession(r); s != nil {
		rq := h.newRequest(s)
		p.Account, p.CSRF = rq.account, rq.csrf
	}
	h.render(w, status, "error", p)
}

// storeFailed answers a store failure.
func (h *Handler) storeFailed(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	h.log.Error("console: store", "what", what, "err", err)
	h.renderError(w, r, http.StatusServiceUnavailable, "The message store is not answering right now. Try again in a moment.")
}

func (h *Handler) clientIP(r *http.Request) netip.Addr {
	return clientip.Of(r, h.trusted)
}
