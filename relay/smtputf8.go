package relay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
	"golang.org/x/net/idna"
)

// Internationalized mail (RFC 6530-6533): the relay offers SMTPUTF8, takes
// UTF-8 envelope addresses and header fields from a client that gives the
// SMTPUTF8 parameter on MAIL, and passes the parameter on to an upstream
// that offers it. A copy that needs it and meets an upstream without it is
// bounced, never downgraded on the way (RFC 6531 section 3.2).

var (
	// RFC 6531 section 3.5: a non-ASCII address in a transaction without
	// the SMTPUTF8 parameter is refused with 553 and X.6.7.
	errSenderNeedsSMTPUTF8 = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
		Message: "Non-ASCII sender address needs the SMTPUTF8 parameter on MAIL"}
	errRecipientNeedsSMTPUTF8 = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
		Message: "Non-ASCII recipient address needs the SMTPUTF8 parameter on MAIL"}
	errBadSender = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 7},
		Message: "Bad sender address syntax"}
)

// Permanent failures of a copy whose upstream does not offer SMTPUTF8. The
// relay makes them itself, before MAIL, so nothing of the copy reaches an
// upstream that could not take it as it is.
var (
	errUpstreamNoSMTPUTF8Sender = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
		Message: "Upstream does not offer SMTPUTF8 (RFC 6531), which the non-ASCII sender address needs; the message was not downgraded"}
	errUpstreamNoSMTPUTF8Recipient = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
		Message: "Upstream does not offer SMTPUTF8 (RFC 6531), which the non-ASCII recipient address needs; the message was not downgraded"}
	errUpstreamNoSMTPUTF8Header = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 9},
		Message: "Upstream does not offer SMTPUTF8 (RFC 6531), which the message's UTF-8 header fields need; the message was not downgraded"}
)

// isASCII reports whether s has no byte above 0x7f.
func isASCII[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// hasACEPrefix reports whether a DNS label claims to be an A-label.
func hasACEPrefix(label string) bool {
	return len(label) >= 4 && strings.EqualFold(label[:4], "xn--")
}

// domainToASCII returns domain with every internationalized label as its
// A-label (RFC 5890, in lower case); other ASCII labels are kept as they
// are, so that names IDNA does not cover (an underscore, a domain literal)
// pass unchanged. It fails on a label that is not a valid U-label or
// A-label.
func domainToASCII(domain string) (string, error) {
	if strings.HasPrefix(domain, "[") {
		if !isASCII(domain) {
			return "", errors.New("non-ASCII address literal")
		}
		return domain, nil
	}
	labels := strings.Split(domain, ".")
	for i, l := range labels {
		if isASCII(l) && !hasACEPrefix(l) {
			continue
		}
		a, err := idna.Lookup.ToASCII(l)
		if err != nil {
			return "", err
		}
		labels[i] = a
	}
	return strings.Join(labels, "."), nil
}

// validDomain reports whether every internationalized label of domain is a
// valid U-label or A-label. ASCII labels are left to the address parser.
func validDomain(domain string) bool {
	_, err := domainToASCII(domain)
	return err == nil
}

// asciiAddress returns addr as a server without SMTPUTF8 can take it: as it
// is when all ASCII, or with its domain as A-labels when only the domain is
// internationalized. RFC 6531 section 3.2 does not count a U-label domain
// as internationalized: its A-label form names the same domain, so this is
// not a downgrade. ok is false when the local part is not ASCII: then the
// address has no ASCII form at all.
func asciiAddress(addr string) (string, bool) {
	if isASCII(addr) {
		return addr, true
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || !isASCII(addr[:at]) {
		return "", false
	}
	d, err := domainToASCII(addr[at+1:])
	if err != nil {
		return "", false
	}
	return addr[:at+1] + d, true
}

// sameAddress reports whether two envelope addresses name the same mailbox
// as far as the relay can tell: local parts equal but for case, domains
// equal once in A-label form (alice@bücher.example is
// alice@xn--bcher-kva.example).
func sameAddress(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	ia, ib := strings.LastIndexByte(a, '@'), strings.LastIndexByte(b, '@')
	if ia < 0 || ib < 0 || !strings.EqualFold(a[:ia], b[:ib]) {
		return false
	}
	da, erra := domainToASCII(a[ia+1:])
	db, errb := domainToASCII(b[ib+1:])
	return erra == nil && errb == nil && strings.EqualFold(da, db)
}

// maxMIMEDepth bounds how deep utf8Headers descends into nested parts.
const maxMIMEDepth = 32

// utf8Headers reports whether the message read from r carries a non-ASCII
// byte in a header field at any level of its MIME structure: the header of
// the message, of every part of a multipart, and of a message/rfc822 part.
// RFC 6531 section 3.2 forbids sending any of those without SMTPUTF8. The
// content of a message/global part is not looked into: RFC 6532 made that
// type for UTF-8 headers that travel as content. A structure that cannot
// be parsed further ends the search with what was found so far: its rest is
// content, not header, to any reader. Only a read error is an error.
func utf8Headers(r io.Reader) (bool, error) {
	er := &readErr{r: r}
	found := utf8Entity(bufio.NewReaderSize(er, 32<<10), 0)
	return found, er.err
}

// utf8Entity reads one entity, its header and then its content, from br.
func utf8Entity(br *bufio.Reader, depth int) bool {
	h, err := textproto.ReadHeader(br)
	if utf8Fields(h) {
		return true
	}
	return err == nil && utf8Content(h, br, depth)
}

// utf8Content looks into content whose header is h when it holds more
// header fields: a multipart's parts, a message/rfc822.
func utf8Content(h textproto.Header, r io.Reader, depth int) bool {
	if depth >= maxMIMEDepth {
		return false
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return false
	}
	switch {
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		mr := textproto.NewMultipartReader(r, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				return false
			}
			if utf8Fields(p.Header) || utf8Content(p.Header, p, depth+1) {
				return true
			}
		}
	case mt == "message/rfc822":
		return utf8Entity(bufio.NewReader(r), depth+1)
	}
	return false
}

// utf8Fields reports whether a field of h, name or value, is not ASCII.
func utf8Fields(h textproto.Header) bool {
	fs := h.Fields()
	for fs.Next() {
		if raw, err := fs.Raw(); err == nil && !isASCII(raw) {
			return true
		}
	}
	return false
}

// readErr remembers the first error of r other than EOF.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}

// withoutSMTPUTF8 readies a copy for an upstream that does not offer
// SMTPUTF8, or says why it cannot go there: it returns the envelope in
// ASCII (U-label domains as A-labels), or the permanent failure of a copy
// that would have to be downgraded. declared is the client's SMTPUTF8
// parameter: only then may the header carry UTF-8 (RFC 6532), and only
// then is it read, from the start of body, which is left at its start.
func withoutSMTPUTF8(from, to string, declared bool, body io.ReadSeeker) (string, string, error) {
	f, ok := asciiAddress(from)
	if !ok {
		return "", "", errUpstreamNoSMTPUTF8Sender
	}
	t, ok := asciiAddress(to)
	if !ok {
		return "", "", errUpstreamNoSMTPUTF8Recipient
	}
	if !declared {
		return f, t, nil
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return "", "", err
	}
	found, err := utf8Headers(body)
	if _, serr := body.Seek(0, io.SeekStart); err == nil {
		err = serr
	}
	if err != nil {
		return "", "", fmt.Errorf("reading the copy's header: %w", err)
	}
	if found {
		return "", "", errUpstreamNoSMTPUTF8Header
	}
	return f, t, nil
}

// utf8AddrUnitext encodes addr as the utf-8-addr-unitext of RFC 6533
// section 3, for a utf-8 address in a message/global-delivery-status:
// UTF-8 as it is, and the ASCII characters a DSN field cannot carry
// (controls, space, '+', '=', '\') as \x{HEX}.
func utf8AddrUnitext(addr string) string {
	var b strings.Builder
	for _, r := range addr {
		switch {
		case r >= utf8.RuneSelf && r != utf8.RuneError:
			b.WriteRune(r)
		case r > 0x20 && r < 0x7f && r != '+' && r != '=' && r != '\\':
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, `\x{%X}`, r)
		}
	}
	return b.String()
}
