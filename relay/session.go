package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/internal/subject"
)

// Replies the relay gives itself. go-smtp recognises an *smtp.SMTPError by
// a plain type assertion, so these are always returned bare, never wrapped.
var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Authentication required: this server relays only for its accounts"}
	errTLSRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Must issue a STARTTLS command first"}
	errEncryptionRequired = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11},
		Message: "Encryption required for requested authentication mechanism"}
	errAuthRateLimited = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Too many failed logins from your address, try again later"}
	errBadAddress = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3},
		Message: "Bad address syntax"}
	errNoSender = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1},
		Message: "MAIL first"}
	errLineTooLong = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2},
		Message: "Line too long"}
	errHeaderTooLarge = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: "Message header too large"}
	errDataTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "Timeout receiving the message, closing connection"}
)

// session is one SMTP connection's state.
type session struct {
	srv  *Server
	conn *smtp.Conn
	cid  uint64
	ip   netip.Addr
	tls  bool
	log  *slog.Logger

	authAccount *Account // set by a successful AUTH
	netAccount  *Account // the account whose network the client is on

	from     string
	haveFrom bool
	utf8     bool // the client gave SMTPUTF8 on MAIL (RFC 6531)
	rcpts    []string
}

// account is who the session sends as: AUTH wins over network.
func (s *session) account() *Account {
	if s.authAccount != nil {
		return s.authAccount
	}
	return s.netAccount
}

// plaintextAuthOK: AUTH over an unencrypted connection only from loopback,
// where nothing can listen in.
func (s *session) plaintextAuthOK() bool {
	return s.tls || s.ip.IsLoopback()
}

// AuthMechanisms implements smtp.AuthSession.
func (s *session) AuthMechanisms() []string {
	if !s.plaintextAuthOK() || (s.srv.cfg.RequireTLS && !s.tls) {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if !s.plaintextAuthOK() || (s.srv.cfg.RequireTLS && !s.tls) {
		return nil, errEncryptionRequired
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return smtp.ErrAuthFailed
			}
			return s.authenticate(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{authenticate: s.authenticate}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) authenticate(user, pass string) error {
	if !s.srv.limiter.Begin(s.ip, time.Now()) {
		s.srv.metrics.authFailures.WithLabelValues("rate_limited").Inc()
		s.log.Warn("AUTH refused: too many failed logins", "user", user)
		time.Sleep(time.Second) // slow the guesser down, not just refuse it
		return errAuthRateLimited
	}
	acct, err := s.srv.accounts.Load().authenticate(user, pass)
	s.srv.limiter.End(s.ip, time.Now(), err != nil)
	if err != nil {
		s.srv.metrics.authFailures.WithLabelValues("bad_credentials").Inc()
		s.log.Warn("AUTH failed", "user", user)
		return smtp.ErrAuthFailed
	}
	s.authAccount = acct
	s.log.Info("AUTH ok", "account", acct.Name)
	return nil
}

// Mail implements smtp.Session.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.srv.cfg.RequireTLS && !s.tls {
		return s.reject("tls_required", errTLSRequired)
	}
	if s.account() == nil {
		return s.reject("auth_required", errAuthRequired)
	}
	declared := opts != nil && opts.UTF8
	if !declared && !isASCII(from) {
		return s.reject("bad_address", errSenderNeedsSMTPUTF8)
	}
	if from != "" && !validAddress(from) {
		return s.reject("bad_address", errBadSender)
	}
	s.from, s.haveFrom, s.utf8 = from, true, declared
	s.rcpts = s.rcpts[:0]
	return nil
}

// Rcpt implements smtp.Session.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.account() == nil {
		return s.reject("auth_required", errAuthRequired)
	}
	if !s.haveFrom {
		return errNoSender
	}
	if !s.utf8 && !isASCII(to) {
		return s.reject("bad_address", errRecipientNeedsSMTPUTF8)
	}
	if !validAddress(to) {
		return s.reject("bad_address", errBadAddress)
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

// validAddress accepts what an MTA can route: local@domain, no source
// routes, no '%' or '!' relay hacks, no control characters. UTF-8 is
// valid in the local part and the domain (RFC 6531, for a transaction
// with SMTPUTF8); an internationalized domain label must be a valid
// U-label or A-label (RFC 5890).
func validAddress(a string) bool {
	if len(a) > 320 || strings.ContainsAny(a, "%!\r\n\x00 ") || strings.HasPrefix(a, "@") || !utf8.ValidString(a) {
		return false
	}
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return false
	}
	if _, err := mail.ParseAddress("<" + a + ">"); err != nil {
		return false
	}
	return validDomain(a[at+1:])
}

// Reset implements smtp.Session.
func (s *session) Reset() {
	s.from, s.haveFrom, s.utf8 = "", false, false
	s.rcpts = s.rcpts[:0]
}

// Logout implements smtp.Session.
func (s *session) Logout() error { return nil }

func (s *session) reject(reason string, e *smtp.SMTPError) *smtp.SMTPError {
	s.srv.metrics.messages.WithLabelValues("rejected", reason).Inc()
	s.log.Info("rejected", "reason", reason, "code", e.Code)
	return e
}

// Data implements smtp.Session: the message goes to the spool file as it
// arrives, with the relay's trace header in front, and is acknowledged only
// once file, directory and record are durable.
func (s *session) Data(r io.Reader) error {
	acct := s.account()
	if acct == nil || len(s.rcpts) == 0 {
		return s.reject("auth_required", errAuthRequired)
	}
	if d := s.srv.cfg.DataTimeout; d > 0 {
		s.conn.Conn().SetReadDeadline(time.Now().Add(d))
	}
	in, err := s.srv.spool.Create()
	if err != nil {
		return s.fail("spool_error", "", err)
	}
	env, err := s.receive(in, r, acct)
	if err != nil {
		in.Abort()
		if errors.Is(err, smtp.ErrTooLongLine) {
			err = errLineTooLong
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = errDataTimeout
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return s.reject(rejectReason(se), se)
		}
		return s.fail("spool_error", in.ID(), err)
	}
	if err := in.Commit(env); err != nil {
		return s.fail("spool_error", in.ID(), err)
	}
	// The spool is the record that matters. The ledger learns of the
	// message off the SMTP path, or before the 250 but bounded
	// (DeliveryConfig.ReportWait); until it has, the API answers for the
	// message from the delivery queue (Deliverer.Pending).
	s.srv.deliver.Accept(env)
	s.srv.metrics.messages.WithLabelValues("accepted", "").Inc()
	s.srv.metrics.acceptedBytes.Add(float64(env.Size))
	s.log.Info("accepted", "queue_id", env.ID, "account", acct.Name, "from", env.From,
		"rcpts", len(env.Recipients), "size", env.Size, "message_id", env.MessageID, "mode", env.Mode)
	// A 250 that names the queue id: go-smtp sends an SMTPError's text as is.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0},
		Message: "OK: queued as " + env.ID}
}

func rejectReason(se *smtp.SMTPError) string {
	switch {
	case se == smtp.ErrDataTooLarge || se == errHeaderTooLarge:
		return "too_large"
	case se == errLineTooLong:
		return "line_too_long"
	case se == errDataTimeout:
		return "timeout"
	default:
		return "bad_message"
	}
}

// fail is the error boundary for unexpected errors: the client gets a
// temporary failure naming the queue id, the details go to the log only.
func (s *session) fail(reason, id string, err error) *smtp.SMTPError {
	s.srv.metrics.messages.WithLabelValues("rejected", reason).Inc()
	s.log.Error("message not accepted", "queue_id", id, "err", err)
	msg := "Temporary local problem, please try again later"
	if id != "" {
		msg += " (ref " + id + ")"
	}
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: msg}
}

// receive copies the message into the spool file: a Received trace header,
// a Message-ID when the message has none, then the original header minus
// X-Track, then the body, byte for byte.
func (s *session) receive(in *Incoming, r io.Reader, acct *Account) (*Envelope, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	hdr, body, err := readHeader(br, s.srv.cfg.MaxHeaderBytes)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	mode := acct.Mode
	if mode == "" {
		mode = s.srv.cfg.DefaultMode
	}
	if v, ok := hdr.get("X-Track"); ok {
		v = strings.ToLower(strings.TrimSpace(v))
		if ValidMode(v) {
			mode = v
		} else {
			s.log.Warn("ignoring invalid X-Track header", "value", v)
		}
	}
	msgID := ""
	if v, ok := hdr.get("Message-ID"); ok {
		msgID = strings.Trim(strings.TrimSpace(v), "<>")
	}
	subj := ""
	if v, ok := hdr.get("Subject"); ok {
		subj = subject.Decode(v)
	}
	eol := hdr.eol
	var pre bytes.Buffer
	pre.WriteString(s.received(in.ID(), now, eol))
	if msgID == "" {
		msgID = fmt.Sprintf("%s.%d@%s", in.ID(), now.Unix(), s.srv.cfg.Hostname)
		pre.WriteString("Message-ID: <" + msgID + ">" + eol)
	}
	if _, err := in.Write(pre.Bytes()); err != nil {
		return nil, err
	}
	for _, f := range hdr.fields {
		if f.is("X-Track") {
			continue
		}
		if _, err := in.Write(f.raw); err != nil {
			return nil, err
		}
	}
	if _, err := in.Write(hdr.end); err != nil {
		return nil, err
	}
	if _, err := io.Copy(in, body); err != nil {
		return nil, err
	}

	env := &Envelope{
		Account:    acct.Name,
		From:       s.from,
		MessageID:  msgID,
		Subject:    subj,
		Mode:       mode,
		SubmitIP:   s.ip.String(),
		AcceptedAt: now.UTC(),
		SMTPUTF8:   s.utf8,
	}
	for _, rc := range s.rcpts {
		tracked := mode != ModeNone && !sameAddress(rc, s.from) && !acct.isSelf(rc)
		env.Recipients = append(env.Recipients, Recipient{
			Address: rc, Tracked: tracked, Status: StatusQueued, UpdatedAt: now.UTC(),
		})
	}
	return env, nil
}

// received is the RFC 5321 section 4.4 trace header, folded with the
// message's own line ending.
func (s *session) received(id string, now time.Time, eol string) string {
	// RFC 6531 section 3.7.3: with SMTPUTF8 the protocol is UTF8SMTP.
	proto := "ESMTP"
	if s.utf8 {
		proto = "UTF8SMTP"
	}
	if s.tls {
		proto += "S"
	}
	if s.authAccount != nil {
		proto += "A"
	}
	return fmt.Sprintf("Received: from %s ([%s])%s\tby %s (trackrelay) with %s id %s;%s\t%s%s",
		sanitizeHelo(s.conn.Hostname()), s.ip, eol, s.srv.cfg.Hostname, proto, id, eol,
		now.Format(time.RFC1123Z), eol)
}

func sanitizeHelo(h string) string {
	h = strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '(' || r == ')' || r == ';' {
			return -1
		}
		return r
	}, h)
	if len(h) > 255 {
		h = h[:255]
	}
	if h == "" {
		h = "unknown"
	}
	return h
}
