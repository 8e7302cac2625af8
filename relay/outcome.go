package relay

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"syscall"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/internal/guard"
)

// The texts a failed attempt records as its last response when the
// upstream gave no SMTP reply. The last response reaches the app through
// the API, the feed and the webhooks, and the sender through a bounce, so
// it carries the upstream's reply verbatim or one of these, followed by
// "(ref ID)": the log line holding the whole error carries the same ref.
// Never a local error's text, a file path or an address.
const (
	textLocal       = "local error"
	textTimeout     = "connection error: timeout"
	textNotFound    = "connection error: upstream host not found"
	textUnreachable = "connection error: upstream unreachable"
	textTLS         = "connection error: TLS with the upstream failed"
	textLost        = "connection error: connection to the upstream lost"
	textConnFailed  = "connection error: upstream connection failed"
	// textRefused prefixes the upstream's reply refusing the session
	// (EHLO, STARTTLS, AUTH): the copy is retried, not bounced.
	textRefused = "connection error: upstream refused the session: "
)

// localError marks a failure on this host: reading the spool, making or
// signing the copy, writing it in capture mode.
type localError struct{ err error }

func (e localError) Error() string { return e.err.Error() }
func (e localError) Unwrap() error { return e.err }

// local marks err, if any, as a localError.
func local(err error) error {
	if err == nil {
		return nil
	}
	return localError{err}
}

// localReader marks the read errors of a copy being sent as local, so that
// a failure in the middle of DATA is told apart from the network's.
type localReader struct{ r io.Reader }

func (l localReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if err != nil && err != io.EOF {
		err = localError{err}
	}
	return n, err
}

// attemptFailure is a failed attempt as it may be shown: text is one of the
// texts above with its ref. It does not unwrap, so that nothing inside it is
// taken for a permanent reply of the upstream.
type attemptFailure struct{ text string }

func (f *attemptFailure) Error() string { return f.text }

// publicError returns the error of a delivery attempt as the API and a
// bounce may show it: an upstream's SMTP reply as it is, anything else as an
// attemptFailure whose generic text names a ref, after logging the whole
// error under that ref.
func publicError(err error, log *slog.Logger) error {
	if err == nil {
		return nil
	}
	var le localError
	var ce connError
	var se *smtp.SMTPError
	var p *guard.Panic
	var text string
	switch {
	case errors.As(err, &p):
		// A panic recovered on a library's goroutine (the DKIM key's): the
		// job holds the copy, and its text is never shown.
		return p
	case errors.As(err, &le):
		text = textLocal
	case errors.As(err, &ce):
		if errors.As(ce.err, &se) {
			return &attemptFailure{text: textRefused + smtpReply(se)}
		}
		text = networkText(ce.err)
	case errors.As(err, &se):
		return err
	default:
		text = networkText(err)
	}
	ref := fmt.Sprintf("%08x", rand.Uint32())
	if text == textLocal {
		log.Error("delivery: local error", "ref", ref, "err", err)
	} else {
		log.Warn("delivery: upstream connection error", "ref", ref, "err", err)
	}
	return &attemptFailure{text: text + " (ref " + ref + ")"}
}

// networkText names the kind of a failure to talk to the upstream.
func networkText(err error) string {
	var ne net.Error
	var dns *net.DNSError
	var op *net.OpError
	var certErr *tls.CertificateVerificationError
	var alert tls.AlertError
	var record tls.RecordHeaderError
	var authority x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &dns):
		return textNotFound
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return textTimeout
	case errors.As(err, &certErr), errors.As(err, &alert), errors.As(err, &record),
		errors.As(err, &authority), errors.As(err, &host), errors.As(err, &invalid):
		return textTLS
	case errors.As(err, &op) && op.Op == "dial":
		return textUnreachable
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return textLost
	}
	return textConnFailed
}

// smtpReply renders an SMTP reply as one line: code, enhanced code, text.
func smtpReply(se *smtp.SMTPError) string {
	if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != smtp.EnhancedCodeNotSet {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	return fmt.Sprintf("%d %s", se.Code, se.Message)
}

// replyText is the last response a failed attempt records: the upstream's
// reply, or the text of its attemptFailure (see publicError).
func replyText(err error) string {
	var f *attemptFailure
	if errors.As(err, &f) {
		return f.text
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return smtpReply(se)
	}
	return textLocal // attempt returns nothing else
}
