package tracker

import (
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// maxUserAgent bounds the user agent kept with an event, in bytes.
const maxUserAgent = 1024

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
	if strings.IndexByte(tok, '%') >= 0 {
		if u, err := url.PathUnescape(tok); err == nil {
			tok = u
		}
	}
	t, err := h.keys.Load().Verify(tok)
	var dest string
	if err == nil && t.Kind != kind {
		err = token.ErrInvalid
	}
	honeypot := err == nil && kind == token.KindClick && t.Link == token.HoneypotLink
	if err == nil && kind == token.KindClick && !honeypot {
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
	if honeypot {
		// No person gets here: nowhere to send it.
		for k, v := range redirectHeader {
			hd[k] = v
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
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
	if !h.cfg.NoRecord && !h.limiter.Allow(ip, time.Now()) {
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
	var msg *store.Message
	var err error
	if hr, ok := h.store.(store.HitReader); ok {
		msg, err = hr.HitMessage(ctx, t.Message)
	} else {
		msg, err = h.store.Message(ctx, t.Message)
	}
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
	// The store classifies again, with the message, a hit classified
	// without it (store.Event.WithoutMessage).
	without := err != nil
	if t.Kind == token.KindClick && err == nil {
		if dr, ok := h.store.(store.DeliveryReader); ok {
			d, derr := dr.Delivery(ctx, t.Message, t.Recipient)
			switch {
			case derr == nil && d.Status == delivery.Delivered:
				in.DeliveredAt = d.UpdatedAt
			case derr != nil && !errors.Is(derr, store.ErrNotFound):
				h.log.Warn("tracker: read delivery for classification", "msg", t.Message, "err", derr)
				without = true
			}
		}
	}
	v := classify.Classify(in)
	if t.Kind == token.KindClick && t.Link == token.HoneypotLink {
		v = classify.OnHoneypot(v)
	}
	e := store.Event{
		Type: typ, At: at, Message: t.Message, Recipient: t.Recipient, Link: t.Link,
		IP: recordedIP(ip, h.cfg.IPMode), UserAgent: ua, Client: v.Client, Class: v.Class, Reasons: v.Reasons,
		WithoutMessage: without,
	}
	if without && ip.IsValid() {
		e.ClientIP = ip.String()
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
