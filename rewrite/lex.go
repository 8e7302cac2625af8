package rewrite

import (
	"bytes"
)

// The lexer splits decoded HTML into tokens exactly where golang.org/x/net/html's
// Tokenizer does (token.go: Next, readStartTag, readTag, readRawOrRCDATA,
// readScript, readComment, readMarkupDeclaration), but over a byte slice
// already in memory: it finds '<' with bytes.IndexByte instead of reading
// byte by byte, never copies the input, and does not allocate per token or
// per attribute. Only token boundaries, kinds, tag names and attribute
// positions are computed; nothing is unescaped. TestLexerAgreesWithTokenizer
// and FuzzLexer hold it to the Tokenizer on the corpus and on arbitrary input.

// tokKind is the kind of a token; the values follow html.TokenType's meaning.
type tokKind uint8

const (
	tokEOF         tokKind = iota // end of input (or an unfinished tag, which the Tokenizer drops)
	tokText                       // text, including raw text of style, script, title, ...
	tokStartTag                   // <name ...>
	tokSelfClosing                // <name .../>
	tokEndTag                     // </name ...>
	tokComment                    // <!-- -->, <!bogus>, <?pi>, </ bogus>, </>
	tokDoctype                    // <!DOCTYPE ...>
)

// lexer yields the tokens of doc.
type lexer struct {
	doc   []byte
	pos   int
	start int // start of the current token

	// rawTag is the lower-case name of the element whose raw text comes
	// next ("" for none), as the Tokenizer's rawTag.
	rawTag string
	// textRaw: the current text token is the raw text of style, script,
	// title, textarea, ... (not page content; entities not decoded).
	textRaw bool
	// Of the current start or end tag: its name (as written) and, for start
	// tags, its attributes as the Tokenizer keeps them (first of duplicate
	// keys, no empty keys).
	name  []byte
	attrs []tagAttr
}

func newLexer(doc []byte, attrs []tagAttr) lexer {
	return lexer{doc: doc, attrs: attrs[:0]}
}

// raw returns the bytes of the current token.
func (l *lexer) raw() []byte { return l.doc[l.start:l.pos] }

func isASCIILetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

// next scans the next token.
func (l *lexer) next() tokKind {
	l.start = l.pos
	l.textRaw = false
	doc := l.doc
	if l.pos >= len(doc) {
		return tokEOF
	}
	if l.rawTag != "" {
		switch l.rawTag {
		case "plaintext":
			l.pos = len(doc)
		case "script":
			l.readScript()
		default:
			l.readRawText()
		}
		if l.pos > l.start {
			// Plain text runs to the end but is page content.
			l.textRaw = l.rawTag != "plaintext"
			l.rawTag = ""
			return tokText
		}
		l.rawTag = ""
	}
	for {
		i := bytes.IndexByte(doc[l.pos:], '<')
		if i < 0 || l.pos+i+1 >= len(doc) {
			l.pos = len(doc)
			break
		}
		p := l.pos + i
		c := doc[p+1]
		if !isASCIILetter(c) && c != '/' && c != '!' && c != '?' {
			l.pos = p + 1
			continue
		}
		if p > l.start {
			// Text before the tag is a token of its own.
			l.pos = p
			return tokText
		}
		l.pos = p + 2
		switch {
		case isASCIILetter(c):
			return l.readStartTag()
		case c == '/':
			if l.pos >= len(doc) {
				return tokText // "</" at the end is text
			}
			c = doc[l.pos]
			if c == '>' {
				l.pos++
				return tokComment // "</>"
			}
			if isASCIILetter(c) {
				l.pos++
				if !l.readTag(false) {
					return tokEOF
				}
				return tokEndTag
			}
			l.readUntilCloseAngle()
			return tokComment
		case c == '!':
			return l.readMarkupDeclaration()
		default: // '?'
			l.pos--
			l.readUntilCloseAngle()
			return tokComment
		}
	}
	if l.pos > l.start {
		return tokText
	}
	return tokEOF
}

// rawTextElements are the elements whose content the Tokenizer reads as
// raw text, up to their end tag (or, plaintext, to the end). Comparing
// against them keeps the name the lexer holds from being allocated.
var rawTextElements = [...]string{
	"iframe", "noembed", "noframes", "noscript", "plaintext", "script", "style", "textarea", "title", "xmp",
}

// readStartTag reads a start tag whose "<x" has been consumed.
func (l *lexer) readStartTag() tokKind {
	if !l.readTag(true) {
		return tokEOF
	}
	if n := l.name; len(n) >= 3 && len(n) <= 9 {
		var buf [9]byte
		for i, c := range n {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
		}
		for _, t := range rawTextElements {
			if string(buf[:len(n)]) == t {
				l.rawTag = t
				break
			}
		}
	}
	// Self-closing: '/' before '>', unless that '/' ends the last
	// attribute's value (<p a=/>).
	end := l.pos - 2
	if l.doc[end] == '/' && (len(l.attrs) == 0 || end != l.attrs[len(l.attrs)-1].tokValEnd-1) {
		return tokSelfClosing
	}
	return tokStartTag
}

// readTag reads a tag's name and attributes after its first letter (which
// has been consumed) up to and including '>'. It returns false when the
// input ends first: the Tokenizer then drops the tag.
func (l *lexer) readTag(saveAttrs bool) bool {
	doc, n := l.doc, len(l.doc)
	l.attrs = l.attrs[:0]
	p := l.pos
	nameStart := p - 1
	for p < n && !isHTMLSpace(doc[p]) && doc[p] != '/' && doc[p] != '>' {
		p++
	}
	if p >= n {
		return false
	}
	l.name = doc[nameStart:p]
	prevEnd := p
	if isHTMLSpace(doc[p]) {
		p++
	}
	p = skipHTMLSpace(doc, p)
	for {
		if p >= n {
			return false
		}
		if doc[p] == '>' {
			l.pos = p + 1
			return true
		}
		// Attribute key.
		keyStart := p
		for p < n {
			c := doc[p]
			if c == '=' && p == keyStart {
				p++ // an '=' before the name begins is part of the name
				continue
			}
			if c == '=' || isHTMLSpace(c) || c == '/' || c == '>' {
				break
			}
			p++
		}
		if p >= n {
			return false
		}
		keyEnd := p
		a := tagAttr{keyStart: keyStart, prevEnd: prevEnd, spanStart: keyEnd, spanEnd: keyEnd, end: keyEnd, tokValEnd: keyEnd}
		// Attribute value.
		p = skipHTMLSpace(doc, p)
		if p >= n {
			return false
		}
		switch c := doc[p]; {
		case c == '/':
			p++
		case c != '=':
		default:
			p = skipHTMLSpace(doc, p+1)
			if p >= n {
				return false
			}
			switch q := doc[p]; q {
			case '>':
			case '"', '\'':
				e := bytes.IndexByte(doc[p+1:], q)
				if e < 0 {
					return false
				}
				e += p + 1
				a.val = doc[p+1 : e]
				a.spanStart, a.tokValEnd = p, e
				p = e + 1
				a.spanEnd, a.end = p, p
			default:
				e := p + 1
				for e < n && !isHTMLSpace(doc[e]) && doc[e] != '>' {
					e++
				}
				if e >= n {
					return false
				}
				a.val = doc[p:e]
				a.spanStart, a.spanEnd, a.end, a.tokValEnd = p, e, e, e
				p = e
				if isHTMLSpace(doc[e]) {
					p++
				}
			}
		}
		if keyEnd > keyStart {
			a.key = doc[keyStart:keyEnd]
			prevEnd = a.end
			if saveAttrs && findAttrBytes(l.attrs, a.key) == nil {
				l.attrs = append(l.attrs, a)
			}
		}
		p = skipHTMLSpace(doc, p)
	}
}

// readUntilCloseAngle reads a bogus comment up to and including '>'.
func (l *lexer) readUntilCloseAngle() {
	if i := bytes.IndexByte(l.doc[l.pos:], '>'); i >= 0 {
		l.pos += i + 1
	} else {
		l.pos = len(l.doc)
	}
}

// readMarkupDeclaration reads what follows "<!": a comment, a doctype or a
// bogus comment (CDATA sections are bogus comments outside foreign content,
// as with the Tokenizer's default).
func (l *lexer) readMarkupDeclaration() tokKind {
	doc := l.doc
	if len(doc)-l.pos < 2 {
		l.pos = len(doc)
		return tokComment
	}
	if doc[l.pos] == '-' && doc[l.pos+1] == '-' {
		l.pos += 2
		l.readComment()
		return tokComment
	}
	const s = "doctype"
	if len(doc)-l.pos >= len(s) && equalFoldASCII(doc[l.pos:l.pos+len(s)], s) {
		l.pos += len(s)
		l.readUntilCloseAngle()
		return tokDoctype
	}
	l.readUntilCloseAngle()
	return tokComment
}

// readComment reads a comment after its "<!--", up to "-->" or "--!>" (or
// "<!-->" and "<!--->"), or to the end of the input.
func (l *lexer) readComment() {
	doc := l.doc
	dashes := 0
	beginning := true
	for p := l.pos; p < len(doc); p++ {
		switch doc[p] {
		case '-':
			dashes++
			continue
		case '>':
			if dashes >= 2 || beginning {
				l.pos = p + 1
				return
			}
		case '!':
			if dashes >= 2 {
				p++
				if p >= len(doc) {
					l.pos = len(doc)
					return
				}
				switch doc[p] {
				case '>':
					l.pos = p + 1
					return
				case '-':
					dashes, beginning = 1, false
					continue
				}
			}
		}
		dashes, beginning = 0, false
	}
	l.pos = len(doc)
}

// readRawText reads the text of a raw text or RCDATA element (style, title,
// textarea, ...) up to its end tag, which is left for the next token.
func (l *lexer) readRawText() {
	doc := l.doc
	p := l.pos
	for {
		i := bytes.IndexByte(doc[p:], '<')
		if i < 0 {
			l.pos = len(doc)
			return
		}
		p += i + 1
		if p < len(doc) && doc[p] == '/' {
			if end, ok := l.rawEndTag(p + 1); ok {
				l.pos = end
				return
			}
		}
	}
}

// rawEndTag reports whether the raw tag's name, in any case, and then white
// space, '/' or '>' follow at p (just after "</"); it returns where its "</"
// starts. At the end of the input it returns len(doc) and true: the text runs
// to the end.
func (l *lexer) rawEndTag(p int) (int, bool) {
	doc, name := l.doc, l.rawTag
	if len(doc)-p <= len(name) {
		// The Tokenizer reads to the end of the input while matching.
		if equalFoldASCII(doc[p:], name[:len(doc)-p]) {
			return len(doc), true
		}
		return 0, false
	}
	if !equalFoldASCII(doc[p:p+len(name)], name) {
		return 0, false
	}
	switch doc[p+len(name)] {
	case ' ', '\n', '\r', '\t', '\f', '/', '>':
		return p - 2, true
	}
	return 0, false
}

// readScript reads the text of a script element with the script data
// states of the HTML tokenizer (escaped and double escaped), as readScript
// of the Tokenizer does.
func (l *lexer) readScript() {
	doc, n := l.doc, len(l.doc)
	p := l.pos
	// Each state reads one byte at p; at the end of the input the text ends.
	const (
		data = iota
		lessThan
		endTagOpen
		escapeStart
		escapeStartDash
		escaped
		escapedDash
		escapedDashDash
		escapedLessThan
		escapedEndTagOpen
		doubleEscapeStart
		doubleEscaped
		doubleEscapedDash
		doubleEscapedDashDash
		doubleEscapedLessThan
		doubleEscapeEnd
	)
	state := data
	for {
		switch state {
		case endTagOpen, escapedEndTagOpen, doubleEscapeEnd:
			end, ok := l.rawEndTag(p)
			if ok {
				if state == doubleEscapeEnd && end != n {
					// </script> inside the double escape: back to escaped.
					p = end + len("</script>")
					if p > n {
						l.pos = n
						return
					}
					state = escaped
					continue
				}
				l.pos = end
				return
			}
			switch state {
			case endTagOpen:
				state = data
			case escapedEndTagOpen:
				state = escaped
			default:
				state = doubleEscaped
			}
			continue
		case doubleEscapeStart:
			// p is at the letter after "<".
			const s = "script"
			k := 0
			for k < len(s) && p+k < n && doc[p+k]|0x20 == s[k] {
				k++
			}
			if p+k >= n {
				l.pos = n
				return
			}
			if k < len(s) {
				p += k
				state = escaped
				continue
			}
			p += k
			switch doc[p] {
			case ' ', '\n', '\r', '\t', '\f', '/', '>':
				p++
				state = doubleEscaped
			default:
				state = escaped
			}
			continue
		}
		if p >= n {
			l.pos = n
			return
		}
		c := doc[p]
		p++
		switch state {
		case data:
			if i := bytes.IndexByte(doc[p-1:], '<'); i < 0 {
				l.pos = n
				return
			} else {
				p += i
			}
			state = lessThan
		case lessThan:
			switch c {
			case '/':
				state = endTagOpen
			case '!':
				state = escapeStart
			default:
				p--
				state = data
			}
		case escapeStart:
			if c == '-' {
				state = escapeStartDash
			} else {
				p--
				state = data
			}
		case escapeStartDash:
			if c == '-' {
				state = escapedDashDash
			} else {
				p--
				state = data
			}
		case escaped:
			switch c {
			case '-':
				state = escapedDash
			case '<':
				state = escapedLessThan
			}
		case escapedDash:
			switch c {
			case '-':
				state = escapedDashDash
			case '<':
				state = escapedLessThan
			default:
				state = escaped
			}
		case escapedDashDash:
			switch c {
			case '-':
			case '<':
				state = escapedLessThan
			case '>':
				state = data
			default:
				state = escaped
			}
		case escapedLessThan:
			switch {
			case c == '/':
				state = escapedEndTagOpen
			case isASCIILetter(c):
				p--
				state = doubleEscapeStart
			default:
				p--
				state = data
			}
		case doubleEscaped:
			switch c {
			case '-':
				state = doubleEscapedDash
			case '<':
				state = doubleEscapedLessThan
			}
		case doubleEscapedDash:
			switch c {
			case '-':
				state = doubleEscapedDashDash
			case '<':
				state = doubleEscapedLessThan
			default:
				state = doubleEscaped
			}
		case doubleEscapedDashDash:
			switch c {
			case '-':
			case '<':
				state = doubleEscapedLessThan
			case '>':
				state = data
			default:
				state = doubleEscaped
			}
		case doubleEscapedLessThan:
			if c == '/' {
				state = doubleEscapeEnd
			} else {
				p--
				state = doubleEscaped
			}
		}
	}
}

// equalFoldASCII reports whether b equals the lower-case ASCII s, ignoring
// the case of b.
func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(s) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// equalFoldBytes reports whether a and b are equal ignoring ASCII case.
func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
