package rewrite

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"slices"
	"strings"
)

// htmlPart copies a text/html part, instrumenting it when it can: the body
// is buffered (up to MaxHTMLBytes), decoded, edited and encoded again with
// the same transfer encoding. A part it cannot handle is copied unchanged and
// the reason is noted for Result.Skipped.
func (m *messageRewriter) htmlPart(w *bufio.Writer, src lineSource, h *header, params map[string]string) error {
	enc := h.transferEncoding()
	switch enc {
	case "", "7bit", "8bit", "binary", "quoted-printable", "base64":
	case "7-bit", "8-bit", "7bits", "8bits":
		// Misspellings seen in the wild of encodings that leave bytes as they are.
		enc = "8bit"
	default:
		m.noteSkip(SkipEncoding)
		return m.copyEntity(w, src, h)
	}
	if unsupportedCharset(h, params) {
		m.noteSkip(SkipCharset)
		return m.copyEntity(w, src, h)
	}

	body := m.sc.body[:0]
	for {
		line, _, err := src.readLine()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if len(body)+len(line) > MaxHTMLBytes {
			m.noteSkip(SkipTooLarge)
			for _, b := range [][]byte{h.Raw, body, line} {
				if _, err := w.Write(b); err != nil {
					return err
				}
			}
			return copyLines(w, src)
		}
		body = append(body, line...)
	}
	m.sc.body = body[:0]
	if len(body) == 0 {
		// Nothing to instrument; and in a multipart, the line ending before
		// the next delimiter was the header's empty line, so any byte added
		// here would run into the delimiter.
		return m.copyEntity(w, src, h)
	}

	hraw, out, changed, err := m.instrument(h, enc, body)
	if err != nil {
		return err
	}
	if !changed {
		hraw, out = h.Raw, body
	}
	if _, err := w.Write(hraw); err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// instrument returns the new header block and body of an HTML part, or
// changed == false when the part is to be copied as it is.
func (m *messageRewriter) instrument(h *header, enc string, body []byte) (hraw, out []byte, changed bool, err error) {
	// The line ending before the next delimiter belongs to the delimiter
	// (RFC 2046 section 5.1.1): it is kept aside and written back as it was.
	content, tail := splitTail(body)
	eol := detectEOL(body, h.Raw)

	var doc []byte
	switch enc {
	case "quoted-printable":
		doc, err = decodeQP(m.sc.dec[:0], content)
		m.sc.dec = doc[:0]
	case "base64":
		doc, err = decodeBase64(m.sc.dec[:0], content)
		m.sc.dec = doc[:0]
	default:
		doc = content
	}
	if err != nil {
		m.noteSkip(SkipEncoding)
		return nil, nil, false, nil
	}
	if hasWideBOM(doc) {
		m.noteSkip(SkipCharset)
		return nil, nil, false, nil
	}

	doc, changed, err = m.rewriteHTML(doc)
	if err != nil || !changed {
		return nil, nil, false, err
	}

	hraw = h.Raw
	switch enc {
	case "quoted-printable":
		out = encodeQP(m.sc.enc[:0], doc, eol)
		hraw = h.withTransferEncoding(enc, eol)
	case "base64":
		out = encodeBase64(m.sc.enc[:0], doc, eol)
		hraw = h.withTransferEncoding(enc, eol)
	case "binary":
		out = doc
	default:
		// 7bit and 8bit lines are limited to 998 bytes (RFC 5322 section
		// 2.1.1); a long click URL may cross it. Then the part, and only it,
		// becomes quoted-printable, which is safe for any line length.
		if maxLineLen(doc) > 998 {
			out = encodeQP(m.sc.enc[:0], doc, eol)
			hraw = h.withTransferEncoding("quoted-printable", eol)
		} else {
			out = doc
		}
	}
	if len(out) > 0 && len(doc) > 0 && &out[0] == &doc[0] {
		out = append(out, tail...)
		m.sc.doc = out[:0]
	} else {
		out = append(out, tail...)
		m.sc.enc = out[:0]
	}

	m.res.Changed = true
	m.res.HTMLParts++
	return hraw, out, true, nil
}

// honeypot reports whether instrumented HTML parts get the honeypot link.
func (m *messageRewriter) honeypot() bool { return m.opts.Clicks && m.opts.Honeypot != "" }

// rewriteHTML returns the instrumented copy of one decoded HTML document, or
// changed == false when there is nothing to do in it.
func (m *messageRewriter) rewriteHTML(doc []byte) (out []byte, changed bool, err error) {
	s := htmlScan{rules: &m.rules, clicks: m.opts.Clicks, opens: m.opts.Opens, honeypot: m.honeypot(),
		attrs: m.sc.attrs, edits: m.sc.edits[:0]}
	err = s.scan(doc, 0, false, false)
	m.sc.attrs, m.sc.edits = s.attrs[:0], s.edits[:0]
	if err != nil || len(s.edits) == 0 {
		return nil, false, err
	}
	if !m.opts.Opens && len(s.edits) == 1 && s.edits[0].kind == editPixel {
		return nil, false, nil // the honeypot alone: nothing to instrument
	}
	out, err = m.applyEdits(doc, s.edits)
	if err != nil {
		return nil, false, err
	}
	m.res.PixelsRemoved += s.removed
	return out, true, nil
}

// splitTail splits the final line ending off body.
func splitTail(body []byte) (content, tail []byte) {
	switch {
	case bytes.HasSuffix(body, []byte("\r\n")):
		return body[:len(body)-2], body[len(body)-2:]
	case bytes.HasSuffix(body, []byte("\n")):
		return body[:len(body)-1], body[len(body)-1:]
	}
	return body, nil
}

// detectEOL returns the line ending the part uses: that of its body's first
// line, else of its header, else CRLF.
func detectEOL(body, hraw []byte) string {
	for _, b := range [][]byte{body, hraw} {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			if i > 0 && b[i-1] == '\r' {
				return "\r\n"
			}
			return "\n"
		}
	}
	return "\r\n"
}

// maxLineLen returns the length of the longest line of b, line ending excluded.
func maxLineLen(b []byte) int {
	longest := 0
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			i = len(b)
		}
		n := i
		if n > 0 && b[n-1] == '\r' {
			n--
		}
		longest = max(longest, n)
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return longest
}

// hasWideBOM reports a UTF-16 or UTF-32 byte order mark: such a body is not
// ASCII-compatible whatever its header says.
func hasWideBOM(b []byte) bool {
	return bytes.HasPrefix(b, []byte{0xFE, 0xFF}) || bytes.HasPrefix(b, []byte{0xFF, 0xFE}) ||
		bytes.HasPrefix(b, []byte{0x00, 0x00, 0xFE, 0xFF})
}

// unsupportedCharset reports whether the part's charset is not
// ASCII-compatible, so that editing its bytes could garble it: UTF-16/32,
// UCS-2/4, UTF-7, ISO-2022-*, HZ and EBCDIC code pages.
func unsupportedCharset(h *header, params map[string]string) bool {
	if params != nil {
		return !asciiCompatible(params["charset"])
	}
	// The parameters did not parse: look for such a name anywhere.
	v := strings.ToLower(h.get("content-type"))
	for _, bad := range []string{"utf-16", "utf16", "utf-32", "utf32", "ucs-2", "ucs-4", "utf-7", "2022", "hz-gb", "ebcdic"} {
		if strings.Contains(v, bad) {
			return true
		}
	}
	return false
}

// asciiCompatible reports whether a charset encodes ASCII as ASCII and never
// uses ASCII bytes inside multi-byte characters in a way that could form
// markup. Unknown names are assumed compatible, as almost all are.
func asciiCompatible(cs string) bool {
	cs = strings.ToLower(strings.Trim(cs, " \t\"'"))
	for _, p := range []string{"utf-16", "utf16", "utf-32", "utf32", "ucs-2", "ucs2", "ucs-4", "ucs4",
		"iso-2022", "iso2022", "csiso2022", "hz-gb", "ebcdic", "x-ebcdic"} {
		if strings.HasPrefix(cs, p) {
			return false
		}
	}
	switch cs {
	case "utf-7", "utf7", "csutf7", "unicode-1-1-utf-7", "hz", "unicode", "unicodefffe", "jis", "csunicode":
		return false
	}
	// EBCDIC code pages by number: cp037, ibm037, ibm-037, ccsid00037, ...
	num := strings.TrimLeft(cs, "abcdefghijklmnopqrstuvwxyz-_")
	if num != cs && num != "" {
		switch strings.TrimLeft(num, "0") {
		case "37", "273", "277", "278", "280", "284", "285", "290", "297", "420", "423", "424",
			"500", "833", "836", "838", "870", "871", "875", "880", "905", "924", "1025", "1026",
			"1047", "1140", "1141", "1142", "1143", "1144", "1145", "1146", "1147", "1148", "1149":
			return false
		}
	}
	return true
}

// decodeBase64 appends the decoded base64 body b to dst, ignoring white
// space and line breaks.
func decodeBase64(dst, b []byte) ([]byte, error) {
	n, dl := len(dst), base64.StdEncoding.DecodedLen(len(b))
	// The room after dst: the output first, then the cleaned text.
	dst = slices.Grow(dst, dl+len(b))
	clean := dst[n+dl : n+dl : cap(dst)]
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			clean = append(clean, c)
		}
	}
	out := dst[n : n+base64.StdEncoding.DecodedLen(len(clean))]
	k, err := base64.StdEncoding.Decode(out, clean)
	return dst[:n+k], err
}

// errQP is returned for a quoted-printable body that mime/quotedprintable
// would not decode either.
var errQP = errors.New("rewrite: invalid quoted-printable")

// decodeQP appends the quoted-printable body src, decoded, to dst. It
// decodes exactly as mime/quotedprintable's Reader does (whose leniencies
// mail clients share: "=\n" soft breaks, '=' not followed by two hex
// digits kept literally, bytes >= 0x80 accepted, trailing white space
// dropped), and fails where that Reader fails, including on a line longer
// than its 4096-byte buffer; but it works over the slice, without a reader.
// TestDecodeQPAgreesWithStdlib and FuzzDecodeQP hold it to the Reader.
func decodeQP(dst, src []byte) ([]byte, error) {
	const maxLine = 4096 // bufio.NewReader's buffer, in the Reader
	dst = slices.Grow(dst, len(src))
	for len(src) > 0 {
		var line []byte
		eof := false
		i := bytes.IndexByte(src, '\n')
		switch {
		case i >= 0 && i < maxLine:
			line, src = src[:i+1], src[i+1:]
		case i < 0 && len(src) < maxLine:
			line, src, eof = src, nil, true
		default:
			return dst, errQP
		}
		hasLF := line[len(line)-1] == '\n'
		hasCR := hasLF && len(line) >= 2 && line[len(line)-2] == '\r'
		whole := line
		for len(line) > 0 {
			c := line[len(line)-1]
			if c != '\n' && c != '\r' && c != ' ' && c != '\t' {
				break
			}
			line = line[:len(line)-1]
		}
		var hard []byte // the hard line break to append
		if len(line) > 0 && line[len(line)-1] == '=' {
			rest := bytes.TrimLeft(whole[len(line):], " \t")
			line = line[:len(line)-1]
			if !bytes.HasPrefix(rest, []byte("\n")) && !bytes.HasPrefix(rest, []byte("\r\n")) &&
				!(len(rest) == 0 && len(line) > 0 && eof) {
				return dst, errQP
			}
		} else if hasLF {
			if hasCR {
				hard = []byte("\r\n")
			} else {
				hard = []byte("\n")
			}
		}
		// line, then hard, are decoded; '=' escapes may not span into hard
		// except to fail as the Reader does.
		for k := 0; k < len(line); k++ {
			c := line[k]
			if qpDecodeLiteral[c] {
				// A run of bytes that decode to themselves.
				j := k + 1
				for j < len(line) && qpDecodeLiteral[line[j]] {
					j++
				}
				dst = append(dst, line[k:j]...)
				k = j - 1
				continue
			}
			switch {
			case c == '=':
				// The Reader looks at the two bytes after '=' in line+hard.
				var h1, h2 byte
				n := 0
				for _, b := range [2]int{k + 1, k + 2} {
					switch {
					case b < len(line):
						if n == 0 {
							h1 = line[b]
						} else {
							h2 = line[b]
						}
						n++
					case b-len(line) < len(hard):
						if n == 0 {
							h1 = hard[b-len(line)]
						} else {
							h2 = hard[b-len(line)]
						}
						n++
					}
				}
				if n == 2 && isHex(h1) && isHex(h2) {
					dst = append(dst, unhex(h1)<<4|unhex(h2))
					k += 2
					if k >= len(line) {
						// The escape used bytes of the line break: the
						// Reader consumes them likewise.
						hard = hard[k-len(line)+1:]
					}
					continue
				}
				if n >= 1 && h1 != '\r' && h1 != '\n' {
					dst = append(dst, '=') // taken literally
					continue
				}
				return dst, errQP
			case c == '\t' || c == '\r' || c == '\n' || c >= 0x80:
			case c < ' ' || c > '~':
				return dst, errQP
			}
			dst = append(dst, c)
		}
		dst = append(dst, hard...)
	}
	return dst, nil
}

// qpDecodeLiteral: bytes that quoted-printable decoding passes through.
var qpDecodeLiteral = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c != '=' && (c >= ' ' && c <= '~' || c == '\t' || c == '\r' || c == '\n' || c >= 0x80)
	}
	return t
}()

// qpPlain: bytes that quoted-printable encoding writes as they are, with
// no context to look at (not white space, not '=').
var qpPlain = func() (t [256]bool) {
	for c := '!'; c <= '~'; c++ {
		t[c] = c != '='
	}
	return t
}()

func isHex(c byte) bool { return isDigit(c) || 'A' <= c && c <= 'F' || 'a' <= c && c <= 'f' }

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// encodeBase64 appends b in base64, in lines of 76 characters separated by
// eol (RFC 2045 section 6.8), without a final line ending.
func encodeBase64(dst, b []byte, eol string) []byte {
	const perLine = 57 // bytes in 76 characters
	dst = slices.Grow(dst, base64.StdEncoding.EncodedLen(len(b))+(len(b)/perLine+1)*len(eol))
	for i := 0; i < len(b); i += perLine {
		if i > 0 {
			dst = append(dst, eol...)
		}
		dst = base64.StdEncoding.AppendEncode(dst, b[i:min(i+perLine, len(b))])
	}
	return dst
}

// encodeQP appends b in quoted-printable (RFC 2045 section 6.7): line breaks
// of b (CRLF or LF) become eol, lines are at most 76 characters with soft
// breaks, white space before a line break and every byte that is not
// printable ASCII are escaped. No final line ending is added.
func encodeQP(dst, b []byte, eol string) []byte {
	const hex = "0123456789ABCDEF"
	dst = slices.Grow(dst, len(b)+len(b)/8+64)
	lineLen := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		if qpPlain[c] && (c != '.' || lineLen > 0) && lineLen < 75 {
			// A run of plain bytes, up to the end of the line's room.
			j, end := i+1, min(len(b), i+75-lineLen)
			for j < end && qpPlain[b[j]] {
				j++
			}
			dst = append(dst, b[i:j]...)
			lineLen += j - i
			i = j - 1
			continue
		}
		if c == '\n' || c == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			if c == '\r' {
				i++
			}
			dst = append(dst, eol...)
			lineLen = 0
			continue
		}
		literal := c >= '!' && c <= '~' && c != '='
		if c == ' ' || c == '\t' {
			// White space is literal unless it ends a line, where transports
			// may strip it.
			next := i + 1
			literal = next < len(b) && b[next] != '\n' && !(b[next] == '\r' && next+1 < len(b) && b[next+1] == '\n')
		}
		// A '.' opening a line is escaped too, for transports that mishandle it.
		if c == '.' && lineLen == 0 {
			literal = false
		}
		n := 3
		if literal {
			n = 1
		}
		if lineLen+n > 75 {
			dst = append(dst, '=')
			dst = append(dst, eol...)
			lineLen = 0
			if c == '.' {
				n = 3
				literal = false
			}
		}
		if literal {
			dst = append(dst, c)
		} else {
			dst = append(dst, '=', hex[c>>4], hex[c&15])
		}
		lineLen += n
	}
	return dst
}
