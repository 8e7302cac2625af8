package tracker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// Defaults of Config.
const (
	DefaultScannerWindow = 10 * time.Second
	DefaultStoreTimeout  = time.Second
)

// maxUserAgent bounds the user agent kept with an event, in bytes.
const maxUserAgent = 1024

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

// recordedIP renders ip as mode keeps it.
func recordedIP(ip netip.Addr, mode string) string {
	if !ip.IsValid() {
		return ""
	}
	switch mode {
	case IPNone:
		return ""
	case IPTruncate:
		bits := 48
		if ip.Is4() {
			bits = 24
		}
		p, err := ip.Prefix(bits)
		if err != nil {
			return ""
		}
		return p.Addr().String()
	}
	return ip.String()
}

type apiAccount struct {
	name string
	sum  [sha256.Size]byte
}

type handler struct {
	cfg      Config
	keys     *token.Keyring
	store    store.Store
	log      *slog.Logger
	metrics  *Metrics
	accounts []apiAccount
	trusted  []netip.Prefix
	now      func() time.Time
	limiter  *recordLimiter // nil: no limit
	deadline *storeDeadlines
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
func NewHandler(cfg Config, keys *token.Keyring, st store.Store) http.Handler {
	h := &handler{cfg: cfg, keys: keys, store: st, log: cfg.Logger, metrics: cfg.Metrics, now: cfg.Now,
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
	for _, a := range cfg.Accounts {
		b, err := hex.DecodeString(strings.TrimSpace(a.APIKeySHA256))
		if err != nil || len(b) != sha256.Size {
			h.log.Error("tracker: ignoring account with invalid api_key_sha256", "account", a.Name)
			continue
		}
		acc := apiAccount{name: a.Name}
		copy(acc.sum[:], b)
		h.accounts = append(h.accounts, acc)
	}
	return h
}

// statusWriter remembers the status code written through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

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

const (
	apiMessagesPrefix = "/api/v1/messages/"
	apiEventsPath     = "/api/v1/events"
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	path := r.URL.EscapedPath()
	name := handlerOther
	switch {
	case strings.HasPrefix(path, token.OpenPath):
		name = handlerOpen
		h.serveHit(sw, r, token.KindOpen, path[len(token.OpenPath):])
	case strings.HasPrefix(path, token.ClickPath):
		name = handlerClick
		h.serveHit(sw, r, token.KindClick, path[len(token.ClickPath):])
	case strings.HasPrefix(path, apiMessagesPrefix):
		name = handlerAPI
		h.serveMessage(sw, r, path[len(apiMessagesPrefix):])
	case path == apiEventsPath:
		name = handlerEvents
		h.serveEvents(sw, r)
	case path == "/healthz":
		name = handlerHealth
		h.serveHealth(sw, r)
	default:
		writeJSONError(sw, http.StatusNotFound, "not found")
	}
	code := sw.code
	if code == 0 {
		code = http.StatusOK
	}
	h.metrics.requests.WithLabelValues(name, strconv.Itoa(code)).Inc()
	h.metrics.requestDuration.WithLabelValues(name).Observe(time.Since(start).Seconds())
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed")
}

// pixelGIF is a 1×1 transparent GIF89a (43 bytes).
var pixelGIF = []byte{
	'G', 'I', 'F', '8', '9', 'a', // header
	0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, // 1×1, global color table of 2 entries
	0x00, 0x00, 0x00, 0xff, 0xff, 0xff, // black, white
	0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, // graphic control: color 0 transparent
	0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, // image descriptor
	0x02, 0x02, 0x44, 0x01, 0x00, // LZW min code size 2, one data block
	0x3b, // trailer
}

// pixelHeader and redirectHeader are the fixed headers of the pixel and of
// the redirect, in canonical form. Their value slices are shared by every
// response (net/http copies them when it writes the header, and nothing
// changes them), which saves allocating them on every hit.
var (
	pixelHeader = http.Header{
		"Content-Type":           {"image/gif"},
		"Content-Length":         {strconv.Itoa(len(pixelGIF))},
		"Cache-Control":          {"no-store, no-cache, must-revalidate, private"},
		"Pragma":                 {"no-cache"},
		"Expires":                {"0"},
		"X-Content-Type-Options": {"nosniff"},
		"Referrer-Policy":        {"no-referrer"},
	}
	redirectHeader = http.Header{
		"Referrer-Policy":        {"no-referrer"},
		"Cache-Control":          {"no-store"},
		"X-Content-Type-Options": {"nosniff"},
		"Content-Length":         {"0"},
	}
)

// serveHit answers /o/ and /c/.
func (h *handler) serveHit(w http.ResponseWriter, r *http.Request, kind token.Kind, tok string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	if strings.IndexByte(tok, '%') >= 0 {
		if u, err := url.PathUnescape(tok); err == nil {
			tok = u
		}
	}
	t, err := h.keys.Verify(tok)
	var dest string
	if err == nil && t.Kind != kind {
		err = token.ErrInvalid
	}
	if err == nil && kind == token.KindClick {
		var ok bool
		if dest, ok = redirectTarget(t.Dest); !ok {
			err = token.ErrInvalid
		}
	}
	if err != nil {
		h.metrics.invalidTokens.Inc()
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	h.record(r, t)
	hd := w.Header()
	if kind == token.KindOpen {
		for k, v := range pixelHeader {
			hd[k] = v
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			if _, err := w.Write(pixelGIF); err != nil {
				h.log.Debug("tracker: write pixel", "err", err)
			}
		}
		return
	}
	for k, v := range redirectHeader {
		hd[k] = v
	}
	hd["Location"] = []string{dest}
	w.WriteHeader(http.StatusFound)
}

// record classifies the hit of a verified token and commits it to the store,
// waiting StoreTimeout (up to 1.5×StoreTimeout) at most. Failures are
// counted and logged, never returned: the hit is served regardless.
func (h *handler) record(r *http.Request, t token.Token) {
	// Not r's context: a hit whose client went away is recorded all the same.
	ctx := h.deadline.context()
	at := h.now().UTC()
	ip := clientIP(r, h.trusted)
	if !h.cfg.NoRecord && !h.limiter.allow(ip, time.Now()) {
		h.metrics.Store.Unlisted(store.UnlistedRateLimited, 1)
		return
	}
	ua := r.UserAgent()
	if len(ua) > maxUserAgent {
		ua = ua[:maxUserAgent]
	}
	typ := store.EventOpen
	if t.Kind == token.KindClick {
		typ = store.EventClick
	}
	in := classify.Hit{
		Click: t.Kind == token.KindClick, Method: r.Method, IP: ip, Header: r.Header, UserAgent: ua, At: at,
		ScannerWindow: h.cfg.ScannerWindow,
	}
	msg, err := h.store.Message(ctx, t.Message)
	switch {
	case err == nil:
		in.SubmitIP = msg.SubmitIP
		in.Untracked = t.Recipient >= 0 && t.Recipient < len(msg.Recipients) && !msg.Recipients[t.Recipient].Tracked
	case errors.Is(err, store.ErrErased):
		// The sender erased this message's tracking data: serve, don't record.
		return
	case errors.Is(err, store.ErrNotFound):
		// Recorded all the same: the message may have been reported while
		// the store was unavailable.
		h.log.Debug("tracker: hit for unknown message", "msg", t.Message)
	default:
		h.log.Warn("tracker: read message for classification", "msg", t.Message, "err", err)
	}
	if t.Kind == token.KindClick && err == nil {
		if dr, ok := h.store.(store.DeliveryReader); ok {
			d, derr := dr.Delivery(ctx, t.Message, t.Recipient)
			if derr == nil && d.Status == store.StatusDelivered {
				in.DeliveredAt = d.UpdatedAt
			}
		}
	}
	v := classify.Classify(in)
	e := store.Event{
		Type: typ, At: at, Message: t.Message, Recipient: t.Recipient, Link: t.Link,
		IP: recordedIP(ip, h.cfg.IPMode), UserAgent: ua, Client: v.Client, Class: v.Class, Reasons: v.Reasons,
	}
	if h.cfg.Geo != nil && ip.IsValid() {
		e.Country, e.City = h.cfg.Geo.Lookup(ip)
	}
	if t.Kind == token.KindClick {
		e.URL = t.Dest
	} else {
		e.Link = -1
	}
	if h.cfg.NoRecord {
		return
	}
	if err := h.store.AddEvent(ctx, e); err != nil {
		h.metrics.Store.Lost()
		h.log.Error("tracker: event lost", "msg", t.Message, "rcpt", t.Recipient, "type", typ, "err", err)
		return
	}
	h.metrics.eventRecorded(typ, v.Class)
}

// redirectTarget returns the Location for a signed destination, or false if
// it is not an absolute http(s) URL. Like a browser, it drops tabs and line
// breaks and trims surrounding spaces and controls; it percent-encodes bytes
// that may not appear raw in a header (spaces, controls, non-ASCII) and keeps
// every other byte as it is.
func redirectTarget(dest string) (string, bool) {
	dest = strings.TrimFunc(dest, func(r rune) bool { return r <= ' ' })
	if strings.ContainsAny(dest, "\t\r\n") {
		dest = strings.NewReplacer("\t", "", "\r", "", "\n", "").Replace(dest)
	}
	colon := strings.IndexByte(dest, ':')
	if colon < 0 {
		return "", false
	}
	scheme := strings.ToLower(dest[:colon])
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	rest := dest[colon+1:]
	if len(rest) < 3 || (rest[0] != '/' && rest[0] != '\\') || (rest[1] != '/' && rest[1] != '\\') {
		return "", false
	}
	if c := rest[2]; c == '/' || c == '\\' || c == '?' || c == '#' {
		return "", false
	}
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(dest); i++ {
		c := dest[i]
		if c > ' ' && c < 0x7f {
			if b.Len() > 0 {
				b.WriteByte(c)
			}
			continue
		}
		if b.Len() == 0 {
			b.Grow(len(dest) + 16)
			b.WriteString(dest[:i])
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	loc := dest
	if b.Len() > 0 {
		loc = b.String()
	}
	// Browsers read a backslash as a slash in http(s) URLs. When Go can
	// parse the URL, it must name a host; when it cannot (e.g. a stray '%'
	// in the path, which browsers accept), the checks above have to do.
	if u, err := url.Parse(strings.ReplaceAll(loc, "\\", "/")); err == nil && u.Hostname() == "" {
		return "", false
	}
	return loc, true
}

func (h *handler) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
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
	for _, a := range h.accounts {
		if subtle.ConstantTimeCompare(sum[:], a.sum[:]) == 1 {
			name, found = a.name, found+1
		}
	}
	return name, found == 1
}

// serveMessage answers GET /api/v1/messages/{ref}; escapedRef is the rest
// of the escaped path.
func (h *handler) serveMessage(w http.ResponseWriter, r *http.Request, escapedRef string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodDelete {
		methodNotAllowed(w, "GET, HEAD, DELETE")
		return
	}
	account, ok := h.requireAccount(w, r)
	if !ok {
		return
	}
	ref, err := url.PathUnescape(escapedRef)
	if err != nil || ref == "" {
		writeJSONError(w, http.StatusNotFound, "message not found")
		return
	}
	if r.Method == http.MethodDelete {
		h.eraseMessage(w, r, account, ref)
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
	cp.MessageID = store.TrimAngles(cp.MessageID)
	cp.AcceptedAt = cp.AcceptedAt.UTC()
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
func (h *handler) eraseMessage(w http.ResponseWriter, r *http.Request, account, ref string) {
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
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
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
