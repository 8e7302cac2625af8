package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Upstream TLS modes.
const (
	TLSStartTLS = "starttls"
	TLSImplicit = "implicit"
	TLSNone     = "none"
)

// UpstreamConfig is the smarthost every copy is delivered to.
type UpstreamConfig struct {
	Address        string
	TLS            string // starttls | implicit | none
	Username       string // AUTH PLAIN when set
	Password       string
	Hostname       string      // our EHLO name
	TLSConfig      *tls.Config // nil: verify against the system roots for the address's host
	MaxConnections int
	DialTimeout    time.Duration
	CommandTimeout time.Duration // per command reply, and per write of a body
	DataTimeout    time.Duration // for the reply to the end of DATA
	IdleTimeout    time.Duration // idle connections are closed after this
}

// upstreamPool keeps connections to the smarthost open between messages.
type upstreamPool struct {
	cfg     UpstreamConfig
	metrics *Metrics

	mu     sync.Mutex
	idle   []*upConn
	closed bool
	sem    chan struct{}

	health upstreamHealth
}

// upConn is one upstream connection. raw is the transport go-smtp writes
// to when the relay holds it (no TLS, implicit TLS), for the fast DATA
// path; nil after STARTTLS.
type upConn struct {
	c        *smtp.Client
	raw      net.Conn
	lastUsed time.Time
}

func newUpstreamPool(cfg UpstreamConfig, m *Metrics) *upstreamPool {
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 4
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 2 * time.Minute
	}
	if cfg.DataTimeout == 0 {
		cfg.DataTimeout = 10 * time.Minute
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	return &upstreamPool{cfg: cfg, metrics: m, sem: make(chan struct{}, cfg.MaxConnections)}
}

func (p *upstreamPool) tlsConfig() *tls.Config {
	if p.cfg.TLSConfig != nil {
		return p.cfg.TLSConfig.Clone()
	}
	host, _, _ := net.SplitHostPort(p.cfg.Address)
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}

// sendTimeoutConn bounds every write with a deadline of its own: go-smtp
// sets none while a message body is written, so an upstream that stops
// reading would hold a delivery worker for good. Each write, not the whole
// body, gets the time (RFC 5321 section 4.5.3.2: a timeout per data block
// sent), so a slow but live upstream still takes a large message.
type sendTimeoutConn struct {
	net.Conn
	timeout time.Duration
}

func (c sendTimeoutConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (p *upstreamPool) dial() (*upConn, error) {
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	tcp, err := d.Dial("tcp", p.cfg.Address)
	if err != nil {
		p.metrics.upstreamDials.WithLabelValues("error").Inc()
		p.health.failed()
		return nil, err
	}
	conn := net.Conn(sendTimeoutConn{Conn: tcp, timeout: p.cfg.CommandTimeout})
	fail := func(err error) (*upConn, error) {
		p.metrics.upstreamDials.WithLabelValues("error").Inc()
		p.health.failed()
		return nil, err
	}
	var c *smtp.Client
	var raw net.Conn
	switch p.cfg.TLS {
	case TLSImplicit:
		tc := tls.Client(conn, p.tlsConfig())
		tc.SetDeadline(time.Now().Add(p.cfg.DialTimeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return fail(err)
		}
		tc.SetDeadline(time.Time{})
		c, raw = smtp.NewClient(tc), tc
	case TLSStartTLS:
		// The first EHLO, before STARTTLS, says "localhost"; the one that
		// counts, over TLS, gives our name.
		conn.SetDeadline(time.Now().Add(p.cfg.DialTimeout))
		c, err = smtp.NewClientStartTLS(conn, p.tlsConfig())
		if err != nil {
			conn.Close()
			return fail(fmt.Errorf("STARTTLS: %w", err))
		}
		conn.SetDeadline(time.Time{})
	default:
		c, raw = smtp.NewClient(conn), conn
	}
	c.CommandTimeout = p.cfg.CommandTimeout
	c.SubmissionTimeout = p.cfg.DataTimeout
	if err := c.Hello(p.cfg.Hostname); err != nil {
		c.Close()
		return fail(err)
	}
	if p.cfg.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", p.cfg.Username, p.cfg.Password)); err != nil {
			c.Close()
			return fail(fmt.Errorf("AUTH: %w", err))
		}
	}
	p.metrics.upstreamDials.WithLabelValues("ok").Inc()
	p.health.ok()
	return &upConn{c: c, raw: raw}, nil
}

// get returns an idle connection if one is fresh enough, else a new one.
func (p *upstreamPool) get() (uc *upConn, reused bool, err error) {
	p.mu.Lock()
	now := time.Now()
	for len(p.idle) > 0 {
		uc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(uc.lastUsed) < p.cfg.IdleTimeout {
			p.mu.Unlock()
			// RSET between messages, as Postfix does before reusing a
			// cached connection: it also finds a connection the upstream
			// closed while it was idle, before a transaction starts on it.
			if err := uc.c.Reset(); err == nil {
				return uc, true, nil
			}
			uc.c.Close()
			p.mu.Lock()
			continue
		}
		go uc.c.Close()
	}
	p.mu.Unlock()
	uc, err = p.dial()
	return uc, false, err
}

func (p *upstreamPool) put(uc *upConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= p.cfg.MaxConnections {
		go uc.c.Quit()
		return
	}
	uc.lastUsed = time.Now()
	p.idle = append(p.idle, uc)
}

// Close quits every idle connection.
func (p *upstreamPool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, uc := range idle {
		uc.c.Quit()
	}
}

// send delivers one copy in one transaction and returns the upstream's
// final reply. A connection that turns out to be dead before anything of
// the transaction was accepted is replaced once. smtputf8 is the client's
// SMTPUTF8 parameter (Envelope.SMTPUTF8).
func (p *upstreamPool) send(from, to string, size int64, body io.ReadSeeker, smtputf8 bool) (string, error) {
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	for try := 0; ; try++ {
		uc, reused, err := p.get()
		if err != nil {
			// Whatever the upstream said while we connected (a refused
			// STARTTLS or AUTH is a configuration problem), the copy is
			// retried, never bounced.
			return "", connError{err}
		}
		c := uc.c
		resp, fresh, err := p.transactionOrClose(uc, from, to, size, body, smtputf8)
		if err == nil {
			p.health.ok()
			p.put(uc)
			return resp, nil
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			// The connection is fine, the transaction was refused.
			p.health.ok()
			if c.Reset() == nil {
				p.put(uc)
			} else {
				c.Close()
			}
			return "", err
		}
		c.Close()
		if reused && fresh && try == 0 {
			if _, serr := body.Seek(0, io.SeekStart); serr == nil {
				continue
			}
		}
		return "", err
	}
}

// transactionOrClose is transaction, closing the connection when it
// panics (the panic goes on to the delivery job's boundary): a connection
// left in the middle of a transaction is never reused, nor left open.
func (p *upstreamPool) transactionOrClose(uc *upConn, from, to string, size int64, body io.ReadSeeker, smtputf8 bool) (resp string, fresh bool, err error) {
	returned := false
	defer func() {
		if !returned {
			uc.c.Close()
		}
	}()
	resp, fresh, err = p.transaction(uc, from, to, size, body, smtputf8)
	returned = true
	return resp, fresh, err
}

// transaction runs MAIL, RCPT, DATA. fresh reports that the failure came
// before the upstream accepted anything of the transaction.
func (p *upstreamPool) transaction(uc *upConn, from, to string, size int64, body io.ReadSeeker, smtputf8 bool) (string, bool, error) {
	c := uc.c
	if max, ok := c.MaxMessageSize(); ok && max > 0 && size > int64(max) {
		return "", true, &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("message of %d bytes exceeds the upstream's size limit of %d", size, max)}
	}
	opts := &smtp.MailOptions{Size: size}
	if ok, _ := c.Extension("8BITMIME"); ok {
		opts.Body = smtp.Body8BitMIME
	}
	// A non-ASCII envelope needs SMTPUTF8 whatever the record says (a
	// message spooled before the relay offered it has no flag).
	if smtputf8 || !isASCII(from) || !isASCII(to) {
		if ok, _ := c.Extension("SMTPUTF8"); ok {
			// Passed on as the client gave it, even when nothing turns
			// out to be non-ASCII: the upstream learns what the client
			// declared.
			opts.UTF8 = true
		} else {
			// RFC 6531 section 3.2: to a server without the extension no
			// internationalized address goes, nor a header field with
			// UTF-8 at any level of the MIME structure. A copy that has
			// one bounces; it is never rewritten on the way. A copy that
			// has none is not an internationalized message, whatever the
			// client declared, so it goes as it is without the
			// parameter (a U-label domain as its A-labels, which that
			// section does not count as internationalized).
			var err error
			if from, to, err = withoutSMTPUTF8(from, to, smtputf8, body); err != nil {
				return "", true, err
			}
		}
	}
	if err := c.Mail(from, opts); err != nil {
		return "", true, err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", false, err
	}
	w, err := c.Data()
	if err != nil {
		return "", false, err
	}
	src := localReader{body}
	if uc.raw != nil {
		d := newDotStuffer(uc.raw)
		if _, err = io.Copy(d, src); err == nil {
			err = d.finish(w)
		} else {
			d.release()
		}
	} else {
		_, err = io.Copy(&crDotGuard{w: w}, src)
	}
	if err != nil {
		return "", false, err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", false, err
	}
	return "250 " + resp.StatusText, false, nil
}

// connError is a failure to get a usable upstream connection. It hides
// any SMTP reply inside it from permanent.
type connError struct{ err error }

func (e connError) Error() string { return e.err.Error() }

// permanent reports whether an upstream failure is final: only a 5xx reply
// is; anything not understood is retried.
func permanent(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code >= 500 && se.Code < 600
}
