package rewrite

import (
	"html"
	"strings"
	"unicode/utf8"
)

// tagAttr locates one attribute inside the raw bytes of a start tag.
//
// x/net/html's Tokenizer reports attribute keys and values but not where they
// are, and the HTML is edited in place, so the lexer (lex.go) reads tags with
// the Tokenizer's own rules (readTag, readTagAttrKey, readTagAttrVal in
// token.go) and records where each part is: both agree on which bytes are
// the value of which key. Offsets are relative to the slice the tag was read
// from.
type tagAttr struct {
	key       []byte // as written; compare with is
	prevEnd   int    // end of what precedes the attribute: its leading white space starts here
	keyStart  int    // start of the key
	val       []byte // the raw value, quotes excluded, entities not decoded
	spanStart int    // the value as written, quotes included
	spanEnd   int
	end       int // end of the attribute (keyEnd when it has no value)
	tokValEnd int // where the Tokenizer's value span ends (for its self-closing test)
}

// is reports whether the attribute's key is the lower-case name, in any case.
func (a *tagAttr) is(name string) bool { return equalFoldASCII(a.key, name) }

func isHTMLSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f'
}

func skipHTMLSpace(raw []byte, p int) int {
	for p < len(raw) && isHTMLSpace(raw[p]) {
		p++
	}
	return p
}

// scanAttrs returns the attributes of the start tag raw ("<name ...>") in
// attrs[:0]. Like the Tokenizer (and browsers), it keeps the first of
// duplicate keys and drops empty keys.
func scanAttrs(raw []byte, attrs []tagAttr) []tagAttr {
	if len(raw) < 2 || raw[0] != '<' {
		return attrs[:0]
	}
	l := lexer{doc: raw, pos: 2, attrs: attrs}
	l.readTag(true)
	return l.attrs
}

// lowerASCII returns b as a lower-case string.
func lowerASCII(b []byte) string {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			return strings.ToLower(string(b))
		}
	}
	return string(b)
}

// findAttr returns the attribute named key (lower case), or nil.
func findAttr(attrs []tagAttr, key string) *tagAttr {
	for i := range attrs {
		if attrs[i].is(key) {
			return &attrs[i]
		}
	}
	return nil
}

// findAttrBytes returns the attribute whose key equals key ignoring case, or nil.
func findAttrBytes(attrs []tagAttr, key []byte) *tagAttr {
	for i := range attrs {
		if equalFoldBytes(attrs[i].key, key) {
			return &attrs[i]
		}
	}
	return nil
}

// unescapeAttr decodes the character references of an attribute value the way
// a browser does (HTML standard, "named character reference state"): unlike
// html.UnescapeString, a legacy reference written without ';' is kept as text
// when an '=' or a letter or digit follows it, so "?a=1&copy=2" and
// "?x&notify=1" reach the server as written.
func unescapeAttr(s string) string {
	if strings.IndexByte(s, '&') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for {
		i := strings.IndexByte(s, '&')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i:]
		if n, dec := attrReference(s); n > 0 {
			b.WriteString(dec)
			s = s[n:]
			continue
		}
		b.WriteByte('&')
		s = s[1:]
	}
}

// attrReference decodes the character reference at the start of s (which
// begins with '&') and returns its length, or 0 when it stays literal text.
func attrReference(s string) (int, string) {
	if len(s) > 1 && s[1] == '#' {
		k := 2
		hex := k < len(s) && (s[k] == 'x' || s[k] == 'X')
		if hex {
			k++
		}
		d := k
		for k < len(s) && (isDigit(s[k]) || hex && isHexLetter(s[k])) {
			k++
		}
		if k == d {
			return 0, ""
		}
		if k < len(s) && s[k] == ';' {
			k++
		}
		return k, html.UnescapeString(s[:k])
	}
	k := 1
	for k < len(s) && (isDigit(s[k]) || isLetter(s[k])) {
		k++
	}
	if k == 1 {
		return 0, ""
	}
	if k < len(s) && s[k] == ';' {
		// A known name decodes to one or two code points; an unknown one
		// decodes, at best, to a legacy prefix plus the rest of the name,
		// which a browser keeps as text (a letter follows the prefix).
		ref := s[:k+1]
		if dec := html.UnescapeString(ref); dec != ref && utf8.RuneCountInString(dec) <= 2 {
			return k + 1, dec
		}
		return 0, ""
	}
	if k < len(s) && s[k] == '=' {
		return 0, ""
	}
	// Without ';' only a whole legacy name (amp, lt, copy, ...) is decoded:
	// a longer run of letters means a letter follows the name.
	ref := s[:k]
	if dec := html.UnescapeString(ref); dec != ref && utf8.RuneCountInString(dec) == 1 {
		return k, dec
	}
	return 0, ""
}

func isDigit(c byte) bool     { return '0' <= c && c <= '9' }
func isLetter(c byte) bool    { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isHexLetter(c byte) bool { return 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

// appendAttrEscaped appends s escaped for a double-quoted attribute value.
func appendAttrEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '&':
			dst = append(dst, "&amp;"...)
		case '"':
			dst = append(dst, "&quot;"...)
		case '<':
			dst = append(dst, "&lt;"...)
		case '>':
			dst = append(dst, "&gt;"...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
