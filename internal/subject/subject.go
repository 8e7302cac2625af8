// Package subject turns a message's Subject header field into the text a
// person reads: RFC 2047 encoded words decoded (the charsets of
// github.com/emersion/go-message/charset), folding undone, control
// characters removed, the length bounded. It is a leaf: the relay decodes
// with it, the stores bound what they keep with it.
package subject

import (
	"mime"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
)

// MaxBytes is the longest subject kept, in bytes of UTF-8.
const MaxBytes = 1000

var decoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// encodedWord matches an RFC 2047 encoded word, and the white space after
// it when another encoded word follows (RFC 2047 section 6.2: that space
// is not displayed).
var encodedWord = regexp.MustCompile(`=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=`)

// Decode returns the subject of value, the field body as received and
// unfolded or not: encoded words decoded, each one that cannot be (an
// unknown charset, bad base64) left as written; line breaks of folding
// removed; other control characters, and invalid UTF-8, replaced; cut to
// MaxBytes at a rune boundary.
func Decode(value string) string {
	s, err := decoder.DecodeHeader(unfold(value))
	if err != nil {
		// The whole field fails on one word of an unknown charset: decode
		// word by word instead.
		s = decodeWords(unfold(value))
	}
	return Truncate(clean(s))
}

// unfold removes the line breaks of a folded field body (RFC 5322 section
// 2.2.3), keeping the white space that starts each continuation line.
func unfold(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(s)
}

// decodeWords decodes each encoded word of s on its own, keeping those that
// fail as written, and drops the white space between two encoded words.
func decodeWords(s string) string {
	var b strings.Builder
	last := 0
	prevWord := false
	for _, loc := range encodedWord.FindAllStringIndex(s, -1) {
		between := s[last:loc[0]]
		if !(prevWord && strings.TrimSpace(between) == "") {
			b.WriteString(between)
		}
		w := s[loc[0]:loc[1]]
		if d, err := decoder.Decode(w); err == nil {
			b.WriteString(d)
		} else {
			b.WriteString(w)
		}
		last, prevWord = loc[1], true
	}
	b.WriteString(s[last:])
	return b.String()
}

// clean replaces invalid UTF-8 with U+FFFD and control characters with a
// space, and trims the white space around the subject.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// Truncate returns s cut to at most MaxBytes, at a rune boundary.
func Truncate(s string) string {
	if len(s) <= MaxBytes {
		return s
	}
	i := MaxBytes
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
