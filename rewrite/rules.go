package rewrite

import (
	"strings"
)

// linkRules decides which link destinations are tracked.
type linkRules struct {
	minter Minter          // tells the tracker's own URLs; nil when nothing is tracked
	unsub  map[string]bool // http(s) targets of List-Unsubscribe
}

func newLinkRules(opts Options, h *header) linkRules {
	r := linkRules{minter: opts.Minter, unsub: make(map[string]bool)}
	// RFC 2369: List-Unsubscribe: <https://...>, <mailto:...>. Unsubscribing
	// must work without the tracker and must not count as a click.
	for i := range h.Fields {
		if !h.Fields[i].Is("list-unsubscribe") {
			continue
		}
		v := h.Fields[i].Value()
		for {
			i := strings.IndexByte(v, '<')
			if i < 0 {
				break
			}
			j := strings.IndexByte(v[i:], '>')
			if j < 0 {
				break
			}
			if u := strings.TrimSpace(v[i+1 : i+j]); u != "" {
				r.unsub[u] = true
			}
			v = v[i+j+1:]
		}
	}
	return r
}

// trackable returns the destination of the raw href value val and whether it
// is to be tracked: an absolute http(s) URL, not the tracker's own, not a
// List-Unsubscribe target. Everything else (mailto:, tel:, sms:, #fragments,
// cid:, data:, javascript:, relative and other URLs) is left alone. A <base
// href> is deliberately ignored: relative links stay relative and untracked.
func (r *linkRules) trackable(val string) (string, bool) {
	dest := normalizeURL(unescapeAttr(val))
	var rest string
	switch {
	case hasPrefixFold(dest, "http://"):
		rest = dest[len("http://"):]
	case hasPrefixFold(dest, "https://"):
		rest = dest[len("https://"):]
	default:
		return "", false
	}
	if rest == "" || rest[0] == '/' || rest[0] == '\\' || rest[0] == '?' || rest[0] == '#' {
		return "", false // no host
	}
	if r.minter != nil && r.minter.Ours(dest) {
		return "", false
	}
	if r.unsub[dest] {
		return "", false
	}
	return dest, true
}

// normalizeURL does what a browser's URL parser does first with an href
// (WHATWG URL, basic URL parser): strip leading and trailing C0 controls and
// spaces, and remove every tab and newline. Nothing else is changed: escapes,
// '+', '@' and brackets reach the minter as written.
func normalizeURL(s string) string {
	s = strings.TrimFunc(s, func(r rune) bool { return r <= ' ' })
	if strings.ContainsAny(s, "\t\n\r") {
		s = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return -1
			}
			return r
		}, s)
	}
	return s
}
