package rewrite

import (
	"bytes"
	"errors"
	"html"
	"slices"
	"sort"
	"strings"
	"unicode"
)

// maxLinkLookahead bounds how far past an <a> start tag its visible text is
// read to decide whether the text is itself a URL. A longer link is left
// untracked: deciding blind could make a mail client flag it as phishing.
const maxLinkLookahead = 64 << 10

// pixelStyle makes the open pixel take no space: it is out of the flow
// (position:absolute, so it makes no line box and moves nothing), 1x1 and
// fully transparent. It is not display:none, which many clients do not load.
const pixelStyle = "position:absolute;display:block;width:1px;height:1px;max-width:1px;max-height:1px;" +
	"border:0;margin:0;padding:0;opacity:0;overflow:hidden;pointer-events:none"

// appendPixel appends the open pixel markup for src.
//
// The pixel goes right after <body ...>, not before </body>: Gmail clips a
// message after about 102 KB and an image past the clip is never loaded.
func appendPixel(dst []byte, src string) []byte {
	dst = append(dst, `<img src="`...)
	dst = appendAttrEscaped(dst, src)
	dst = append(dst, `" width="1" height="1" alt="" border="0" style="`...)
	dst = append(dst, pixelStyle...)
	return append(dst, `" />`...)
}

// honeypotStyle makes the honeypot link take no room and show nothing,
// wherever it lands: out of the flow, of no size, transparent, and out of
// reach of the pointer. Not display:none, which link scanners skip.
const honeypotStyle = "position:absolute;display:block;width:0;height:0;max-width:0;max-height:0;" +
	"border:0;margin:0;padding:0;opacity:0;overflow:hidden;font-size:0;line-height:0;pointer-events:none"

// appendHoneypot appends the honeypot link to href: no text, hidden from
// screen readers (aria-hidden), out of the tab order (tabindex -1), and of
// no size (honeypotStyle). Only a machine following every link of the
// copy reaches it.
func appendHoneypot(dst []byte, href string) []byte {
	dst = append(dst, `<a href="`...)
	dst = appendAttrEscaped(dst, href)
	dst = append(dst, `" aria-hidden="true" tabindex="-1" style="`...)
	dst = append(dst, honeypotStyle...)
	return append(dst, `"></a>`...)
}

const (
	editLink   = iota // replace an href value with the quoted click URL of dest
	editPixel         // insert the open pixel, the honeypot link, or both
	editRemove        // delete the bytes (an old pixel, a data-notrack attribute)
)

// edit is one change to the decoded HTML of a part: doc[start:end] is
// replaced. Links are minted when the edits are applied, in document order,
// so that indexes follow the document even though an <a> is decided only at
// its end tag.
type edit struct {
	start, end int
	kind       int
	dest       string // editLink
}

// htmlScan finds the edits of one HTML part.
type htmlScan struct {
	rules  *linkRules
	clicks bool
	opens  bool
	// honeypot: the pixel's place also gets the honeypot link.
	honeypot bool

	edits     []edit
	pixelDone bool
	removed   int
	attrs     []tagAttr
}

// quoteState follows quoted history: the quoted earlier message of a reply
// or forward, whose links are not tracked and whose old pixels are removed.
//
// Markers:
//   - <blockquote type="cite"> (Apple Mail, Thunderbird, many others) and
//     <div class="gmail_quote">, "yahoo_quoted", "moz-forward-container":
//     quoted until the element ends (nesting of the same element is counted);
//   - Outlook's reply separator: <div id="divRplyFwdMsg">, <div
//     id="appendonsend">, <hr id="stopSpelling">, and Outlook desktop's
//     <div style="border:none;border-top:solid #E1E1E1 1.0pt;..."> (or
//     #B5C4DF): the quoted message follows the separator rather than sitting
//     inside it, so everything after it is history.
type quoteState struct {
	tag   string // element whose end closes the quote
	depth int    // open elements named tag since the quote began
	toEnd bool   // history until the end of the document
	outer bool   // the enclosing document is already quoted here
}

func (q *quoteState) active() bool { return q.outer || q.toEnd || q.depth > 0 }

// startTag updates the state for a start tag with the attributes attrs.
func (q *quoteState) startTag(attrs []tagAttr, name string) {
	if q.depth > 0 && name == q.tag {
		q.depth++
		return
	}
	if q.active() {
		return
	}
	switch name {
	case "blockquote":
		if a := findAttr(attrs, "type"); a != nil && attrValueIs(a.val, "cite") {
			q.tag, q.depth = name, 1
		}
	case "div":
		if a := findAttr(attrs, "class"); a != nil {
			c := a.val
			if bytes.IndexByte(c, '&') >= 0 {
				c = []byte(unescapeAttr(string(c)))
			}
			if containsFold(c, "gmail_quote") || containsFold(c, "yahoo_quoted") || containsFold(c, "moz-forward-container") {
				q.tag, q.depth = name, 1
				return
			}
		}
		if a := findAttr(attrs, "id"); a != nil && (attrValueIs(a.val, "divrplyfwdmsg") || attrValueIs(a.val, "appendonsend")) {
			q.toEnd = true
			return
		}
		if a := findAttr(attrs, "style"); a != nil {
			st := a.val
			if bytes.IndexByte(st, '&') >= 0 {
				st = []byte(unescapeAttr(string(st)))
			}
			if containsFoldNoSpace(st, "border-top:solid#e1e1e1") || containsFoldNoSpace(st, "border-top:solid#b5c4df") {
				q.toEnd = true
			}
		}
	case "hr":
		if a := findAttr(attrs, "id"); a != nil && attrValueIs(a.val, "stopspelling") {
			q.toEnd = true
		}
	}
}

// attrValueIs reports whether the raw attribute value val, entity-decoded and
// trimmed of white space, is the lower-case word w in any case.
func attrValueIs(val []byte, w string) bool {
	if bytes.IndexByte(val, '&') >= 0 {
		return strings.EqualFold(strings.TrimSpace(unescapeAttr(string(val))), w)
	}
	return equalFoldASCII(bytes.TrimSpace(val), w)
}

// containsFold reports whether b contains the lower-case ASCII pattern pat,
// ignoring the case of b.
func containsFold(b []byte, pat string) bool {
	for i := 0; i+len(pat) <= len(b); i++ {
		if equalFoldASCII(b[i:i+len(pat)], pat) {
			return true
		}
	}
	return false
}

// containsFoldNoSpace is containsFold with the HTML white space of b ignored.
func containsFoldNoSpace(b []byte, pat string) bool {
	for i := range b {
		k, j := 0, i
		for ; k < len(pat) && j < len(b); j++ {
			c := b[j]
			if isHTMLSpace(c) {
				continue
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != pat[k] {
				break
			}
			k++
		}
		if k == len(pat) {
			return true
		}
	}
	return false
}

func (q *quoteState) endTag(name string) {
	if q.depth > 0 && name == q.tag {
		q.depth--
	}
}

// pendingLink is a tracked-looking link whose visible text is still being read.
type pendingLink struct {
	name  string // element whose end tag ends the link
	start int    // offset of its start tag in the scanned document
	edit  edit
	text  []byte // the start of its visible text
	full  bool   // enough text to decide
}

// isHeadElement reports whether an element may come before the body
// without starting it.
func isHeadElement(name string) bool {
	switch name {
	case "html", "head", "title", "meta", "link", "style", "script", "base", "noscript", "template",
		"basefont", "bgsound", "frameset", "frame", "noframes":
		return true
	}
	return false
}

// knownTags are the names the scan compares against, interned so that
// converting a tag name to a string does not allocate for them.
var knownTags = func() map[string]string {
	m := make(map[string]string)
	for _, n := range []string{"a", "area", "img", "body", "div", "blockquote", "hr", "p", "span",
		"table", "tbody", "thead", "tfoot", "tr", "td", "th", "font", "b", "i", "u", "s", "strong", "em", "br",
		"center", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "o:p", "meta", "link", "style", "title",
		"head", "html", "script", "noscript", "sup", "sub", "small", "pre", "code", "v:roundrect", "v:rect",
		"v:fill", "v:textbox", "v:oval", "v:image", "w:anchorlock", "center", "base", "template", "basefont",
		"bgsound", "frameset", "frame", "noframes", "textarea", "xmp", "iframe", "noembed", "col", "colgroup",
		"caption", "button", "label", "input", "form", "section", "article", "header", "footer", "nav", "main",
		"picture", "source", "figure", "figcaption", "abbr", "cite", "q", "dl", "dt", "dd", "address", "wbr",
		"nobr", "big", "tt", "strike", "del", "ins", "mark", "time", "svg", "path", "map", "mj-column"} {
		m[n] = n
	}
	return m
}()

// rawTagName returns the lower-case name of the tag whose name starts b,
// read with the Tokenizer's rule (up to white space, '/' or '>'). It does
// not allocate for common names, unlike Tokenizer.TagName.
func rawTagName(b []byte) string {
	n := 0
	for n < len(b) && !isHTMLSpace(b[n]) && b[n] != '/' && b[n] != '>' {
		n++
	}
	var buf [16]byte
	if n <= len(buf) {
		for i, c := range b[:n] {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
		}
		if name, ok := knownTags[string(buf[:n])]; ok {
			return name
		}
	}
	return lowerASCII(b[:n])
}

// scan walks doc, an HTML document or the inside of a conditional comment
// found at offset base of the part, and records its edits.
func (s *htmlScan) scan(doc []byte, base int, inComment, quoted bool) error {
	l := newLexer(doc, s.attrs)
	defer func() { s.attrs = l.attrs[:0] }()
	q := quoteState{outer: quoted}
	var pend *pendingLink // nil, or &pl
	var pl pendingLink
	finish := func() {
		if !looksLikeURL(pend.text) {
			s.edits = append(s.edits, pend.edit)
		}
		pend = nil
	}
	for {
		tt := l.next()
		if tt == tokEOF {
			break
		}
		start := l.start
		raw := l.raw()
		abs := base + start
		if pend != nil && l.pos-pend.start > maxLinkLookahead {
			pend = nil // too long to decide: left alone
		}

		switch tt {
		case tokText:
			if pend != nil {
				pend.addText(raw, l.textRaw)
			}
			if !inComment && !l.textRaw && !isAllSpace(raw) {
				s.placePixel(abs)
			}

		case tokStartTag, tokSelfClosing:
			name := rawTagName(raw[1:])
			if !inComment && !s.pixelDone && !isHeadElement(name) {
				if name == "body" {
					s.placePixel(abs + len(raw))
				} else {
					s.placePixel(abs)
				}
			}
			q.startTag(l.attrs, name)

			switch {
			case name == "a" || name == "area":
				if pend != nil && name == "a" {
					finish()
				}
				e, ok := s.link(l.attrs, base, name, q.active())
				switch {
				case !ok:
				case name == "a":
					pl = pendingLink{name: name, start: start, edit: e, text: pl.text[:0]}
					pend = &pl
				default:
					s.edits = append(s.edits, e)
				}
			case name == "img":
				if q.active() && s.isOldPixel(l.attrs) {
					s.edits = append(s.edits, edit{start: abs, end: abs + len(raw), kind: editRemove})
					s.removed++
				}
			case inComment && strings.HasPrefix(name, "v:"):
				// Outlook's VML buttons: <v:roundrect href="..."> in <!--[if mso]>.
				e, ok := s.link(l.attrs, base, name, q.active())
				if !ok {
					break
				}
				if pend != nil {
					finish()
				}
				if tt == tokSelfClosing {
					s.edits = append(s.edits, e)
				} else {
					pl = pendingLink{name: name, start: start, edit: e, text: pl.text[:0]}
					pend = &pl
				}
			}

		case tokEndTag:
			name := rawTagName(raw[2:])
			q.endTag(name)
			if pend != nil && name == pend.name {
				finish()
			}

		case tokComment:
			if inner, at, ok := conditionalComment(raw); ok && !inComment {
				// The lexer's attribute scratch is in use: the inner scan
				// gets its own.
				saved := s.attrs
				s.attrs = nil
				err := s.scan(inner, abs+at, true, q.active())
				s.attrs = saved
				if err != nil {
					return err
				}
			}
		}
	}
	if pend != nil {
		finish()
	}
	if !inComment {
		// No body content at all (an empty or head-only document): the
		// pixel goes at the end, which is then also the start of the body.
		s.placePixel(base + l.start)
	}
	return nil
}

// addText adds the text of a token inside the link. Only the start of the
// visible text matters (does it begin like a URL?), so it stops collecting
// once that is decided.
func (p *pendingLink) addText(raw []byte, rawText bool) {
	if p.full {
		return
	}
	if !rawText && bytes.IndexByte(raw, '&') >= 0 {
		p.text = append(p.text, html.UnescapeString(string(raw))...)
	} else {
		p.text = append(p.text, raw...)
	}
	// "https://" is the longest prefix looked for.
	p.full = len(bytes.TrimLeftFunc(p.text, unicode.IsSpace)) >= len("https://")
}

// placePixel inserts the open pixel at offset at, once per part.
func (s *htmlScan) placePixel(at int) {
	if s.pixelDone {
		return
	}
	s.pixelDone = true
	if s.opens || s.honeypot {
		s.edits = append(s.edits, edit{start: at, end: at, kind: editPixel})
	}
}

// link returns the edit that tracks the href of a link tag with the
// attributes attrs (whose offsets are relative to base), if it is to be
// tracked. It also removes a data-notrack
// attribute, leaving the link alone.
func (s *htmlScan) link(attrs []tagAttr, base int, name string, quoted bool) (edit, bool) {
	if !s.clicks {
		return edit{}, false
	}
	if a := findAttr(attrs, "data-notrack"); a != nil && (name == "a" || name == "area") {
		s.edits = append(s.edits, edit{start: base + a.prevEnd, end: base + a.end, kind: editRemove})
		return edit{}, false
	}
	a := findAttr(attrs, "href")
	if quoted || a == nil || !mayBeHTTP(a.val) {
		return edit{}, false
	}
	dest, ok := s.rules.trackable(string(a.val))
	if !ok {
		return edit{}, false
	}
	return edit{start: base + a.spanStart, end: base + a.spanEnd, kind: editLink, dest: dest}, true
}

// mayBeHTTP is a quick test, without allocating, that rules out most hrefs
// that are not http(s) (mailto:, #top, relative paths): after leading
// C0 controls and spaces it must start with 'h' or an entity.
func mayBeHTTP(val []byte) bool {
	for _, c := range val {
		if c <= ' ' {
			continue
		}
		return c == 'h' || c == 'H' || c == '&'
	}
	return false
}

// isOldPixel reports whether the <img> tag with the attributes attrs is one
// of our open pixels.
func (s *htmlScan) isOldPixel(attrs []tagAttr) bool {
	if s.rules.minter == nil {
		return false
	}
	a := findAttr(attrs, "src")
	return a != nil && s.rules.minter.IsOpenURL(normalizeURL(unescapeAttr(string(a.val))))
}

// conditionalComment returns the inside of a downlevel-hidden conditional
// comment ("<!--[if mso]>...<![endif]-->") and its offset in raw.
func conditionalComment(raw []byte) ([]byte, int, bool) {
	if !bytes.HasPrefix(raw, []byte("<!--")) {
		return nil, 0, false
	}
	inner := raw[4:]
	switch {
	case bytes.HasSuffix(inner, []byte("-->")):
		inner = inner[:len(inner)-3]
	case bytes.HasSuffix(inner, []byte("--!>")):
		inner = inner[:len(inner)-4]
	}
	t := bytes.TrimLeft(inner, " \t\r\n\f")
	if len(t) < 3 || t[0] != '[' || (t[1] != 'i' && t[1] != 'I') || (t[2] != 'f' && t[2] != 'F') {
		return nil, 0, false
	}
	return inner, 4, true
}

// looksLikeURL reports whether the visible text of a link is itself a URL;
// mail clients flag a link whose text and target differ as phishing.
func looksLikeURL(text []byte) bool {
	t := strings.TrimSpace(string(text))
	return hasPrefixFold(t, "http://") || hasPrefixFold(t, "https://") || hasPrefixFold(t, "www.")
}

func isAllSpace(b []byte) bool {
	for _, c := range b {
		if !isHTMLSpace(c) {
			return false
		}
	}
	return true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// applyEdits returns doc with the edits made, minting click URLs in document
// order.
func (m *messageRewriter) applyEdits(doc []byte, edits []edit) ([]byte, error) {
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].start < edits[j].start })
	out := slices.Grow(m.sc.doc[:0], len(doc)+len(edits)*128+len(pixelStyle)+256)
	defer func() { m.sc.doc = out[:0] }()
	prev := 0
	for _, e := range edits {
		if e.start < prev || e.end < e.start || e.end > len(doc) {
			return nil, errors.New("rewrite: overlapping HTML edits")
		}
		out = append(out, doc[prev:e.start]...)
		switch e.kind {
		case editLink:
			out = append(out, '"')
			out = appendAttrEscaped(out, m.mint(e.dest))
			out = append(out, '"')
		case editPixel:
			if m.opts.Opens {
				out = appendPixel(out, m.opts.Minter.OpenURL())
				m.res.Pixels++
			}
			if m.honeypot() {
				out = appendHoneypot(out, m.opts.Honeypot)
			}
		case editRemove:
		}
		prev = e.end
	}
	return append(out, doc[prev:]...), nil
}
