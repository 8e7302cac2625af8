package tracker

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackrelay/trackrelay/internal/ratelimit"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// Defaults of Config.
const (
	DefaultScannerWindow = classify.DefaultScannerWindow
	DefaultStoreTimeout  = time.Second
)

// Account is an API account: its name, as messages are recorded under, and
// the hex SHA-256 of its API key.
type Account struct {
	Name         string
	APIKeySHA256 string // hex
}

// Config configures the tracker's HTTP handler.
type Config struct {
	// BaseURL is the public URL of the tracking server.
	BaseURL string
	// TrustedProxies may set X-Forwarded-For; from anyone else it is ignored.
	TrustedProxies []netip.Prefix
	// Accounts are the API accounts.
	Accounts []Account
	// ScannerWindow is how soon after delivery a click counts as a link
	// scanner's. Zero means DefaultScannerWindow; negative disables the rule.
	ScannerWindow time.Duration
	// Logger receives request failures; nil discards.
	Logger *slog.Logger
	// Metrics receives request and event counts; nil uses unregistered metrics.
	Metrics *Metrics
	// StoreTimeout bounds the time a hit waits for the store before the
	// pixel or redirect is served anyway (the event then counts as lost).
	// Hits arriving close together share one deadline, so a hit may wait
	// up to half as long again. Zero means DefaultStoreTimeout.
	StoreTimeout time.Duration
	// IPMode is what is kept of a client's IP address: IPFull (default),
	// IPTruncate (the /24 of IPv4, the /48 of IPv6) or IPNone.
	// Classification always sees the full address; only the record changes.
	IPMode string
	// Geo, when set, gives each event the country and city of the client,
	// looked up with the full address whatever IPMode keeps (with IPNone
	// the event still has its country and city). Nil: no location.
	Geo GeoLocator
	// RecordRate and RecordBurst bound the hits recorded per second from one
	// client address (an IPv6 /64); past them a hit is answered but not
	// recorded, so that no one address can fill the store. Zero means
	// DefaultRecordRate and DefaultRecordBurst; a negative rate, no limit.
	RecordRate  float64
	RecordBurst int
	// Pending, when set, gives a message of account that the relay has
	// accepted but not yet reported to the store (it does moments after
	// its 250); ref is as in Store.Lookup. The API answers for such a
	// message as the store would for one with no events yet, so that the
	// app finds a message as soon as it has the queue id.
	Pending func(account, ref string) (*store.Message, bool)
	// NoRecord serves hits without recording them. For benchmarks only:
	// it measures the ceiling a recording server is compared with.
	NoRecord bool
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// GeoLocator maps a client address to where it is: an ISO 3166-1 alpha-2
// country code and an English city name, "" when unknown. It is called on
// every recorded hit, so it must be cheap and safe for concurrent use;
// geoip.DB (a memory-mapped MaxMind DB) is one.
type GeoLocator interface {
	Lookup(ip netip.Addr) (country, city string)
}

// IP modes of Config.IPMode (tracking.ip_mode).
const (
	IPFull     = "full"
	IPTruncate = "truncate"
	IPNone     = "none"
)

type apiAccount struct {
	name string
	sum  [sha256.Size]byte
}

type handler struct {
	cfg      Config
	keys     atomic.Pointer[token.Keyring] // swapped by SetKeyring
	store    store.Store
	log      *slog.Logger
	metrics  *Metrics
	accounts atomic.Pointer[[]apiAccount] // swapped by SetAccounts
	trusted  []netip.Prefix
	now      func() time.Time
	limiter  *ratelimit.Limiter // recording limit; nil: no limit
	deadline *storeDeadlines
	mux      *http.ServeMux
}

// NewHandler returns the tracker's HTTP handler. It serves
//
//	GET|HEAD /o/{token}[.gif]        open pixel
//	GET|HEAD /c/{token}              click redirect
//	GET      /api/v1/messages/{ref}  message status (Bearer API key)
//	DELETE   /api/v1/messages/{ref}  erase its tracking data (Bearer API key)
//	GET      /api/v1/events          the account's feed (Bearer API key)
//	GET      /healthz                liveness
//
// Every hit is recorded in store before its response is sent; if the store
// fails, the pixel and the redirect are served all the same.
func NewHandler(cfg Config, keys *token.Keyring, st store.Store) *Handler {
	h := &handler{cfg: cfg, store: st, log: cfg.Logger, metrics: cfg.Metrics, now: cfg.Now,
		limiter: newRecordLimiter(cfg.RecordRate, cfg.RecordBurst)}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.metrics == nil {
		h.metrics = NewMetrics(nil)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.cfg.ScannerWindow == 0 {
		h.cfg.ScannerWindow = DefaultScannerWindow
	}
	if h.cfg.StoreTimeout <= 0 {
		h.cfg.StoreTimeout = DefaultStoreTimeout
	}
	h.deadline = newStoreDeadlines(h.cfg.StoreTimeout)
	for _, p := range cfg.TrustedProxies {
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		h.trusted = append(h.trusted, p.Masked())
	}
	h.keys.Store(keys)
	h.setAccounts(cfg.Accounts)
	h.mux = h.routes()
	return &Handler{h}
}

// Handler is the tracker's HTTP handler, whose API accounts and token keys
// can be replaced while it serves (a configuration reload). Requests
// already under way finish with what they started with.
type Handler struct {
	*handler
}

// SetAccounts replaces the API accounts: the next request authenticates
// against accounts.
func (h *Handler) SetAccounts(accounts []Account) {
	h.setAccounts(accounts)
}

// SetKeyring replaces the token keys: the next hit is verified with keys.
// A rotation keeps the old secrets in keys, so that links in mail already
// sent keep working.
func (h *Handler) SetKeyring(keys *token.Keyring) {
	h.keys.Store(keys)
}

func (h *handler) setAccounts(accounts []Account) {
	var list []apiAccount
	for _, a := range accounts {
		b, err := hex.DecodeString(strings.TrimSpace(a.APIKeySHA256))
		if err != nil || len(b) != sha256.Size {
			h.log.Error("tracker: ignoring account with invalid api_key_sha256", "account", a.Name)
			continue
		}
		acc := apiAccount{name: a.Name}
		copy(acc.sum[:], b)
		list = append(list, acc)
	}
	h.accounts.Store(&list)
}

// statusWriter remembers the status code written through it, and the
// metrics label of the route that answered.
type statusWriter struct {
	http.ResponseWriter
	code  int
	route string
}

// statusWriters reuses statusWriters across requests: ServeMux needs w as
// an interface, which would otherwise put one on the heap for every hit.
var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := statusWriters.Get().(*statusWriter)
	*sw = statusWriter{ResponseWriter: w, route: handlerOther}
	defer func() {
		*sw = statusWriter{} // not to keep w alive
		statusWriters.Put(sw)
	}()
	clean := isCleanPath(r.URL.EscapedPath())
	if !clean {
		// ServeMux would redirect to the cleaned path, which may be
		// another route's: a path is routed as it was sent.
		r = literalPath(r)
		clean = isCleanPath(r.URL.EscapedPath())
	}
	switch {
	case clean && h.serveHitDirect(sw, r):
	case clean:
		h.mux.ServeHTTP(sw, r)
	default:
		writeJSONError(sw, http.StatusNotFound, "not found")
	}
	code := sw.code
	if code == 0 {
		code = http.StatusOK
	}
	h.metrics.requests.WithLabelValues(sw.route, strconv.Itoa(code)).Inc()
	h.metrics.requestDuration.WithLabelValues(sw.route).Observe(time.Since(start).Seconds())
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed")
}
