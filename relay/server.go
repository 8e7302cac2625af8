package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/trackrelay/trackrelay/internal/ratelimit"
	"golang.org/x/time/rate"
)

// ServerConfig is the SMTP submission side of the relay.
type ServerConfig struct {
	Hostname            string
	TLSConfig           *tls.Config // nil: no STARTTLS
	MaxMessageBytes     int64
	MaxRecipients       int
	RequireTLS          bool          // nothing but EHLO/STARTTLS/NOOP/RSET/QUIT before TLS
	CommandTimeout      time.Duration // idle time allowed between commands
	DataTimeout         time.Duration // time allowed to receive one message's DATA
	MaxConnections      int
	MaxConnectionsPerIP int
	MaxHeaderBytes      int
	Accounts            []Account
	DefaultMode         string
}

// Server is the SMTP submission server.
type Server struct {
	cfg      ServerConfig
	smtp     *smtp.Server
	spool    *Spool
	deliver  *Deliverer
	log      *slog.Logger
	metrics  *Metrics
	accounts atomic.Pointer[accounts] // swapped whole by SetAccounts
	limiter  *ratelimit.Limiter       // failed logins per client (Begin, End)
	conns    *connLimiter
	nextCID  atomic.Uint64

	mu        sync.Mutex
	listeners []net.Listener
}

// SetAccounts replaces the account table, for a configuration reload:
// sessions that start afterwards see the new accounts, and a session that
// has already authenticated (or matched a network) keeps its account.
func (s *Server) SetAccounts(list []Account) {
	s.accounts.Store(&accounts{list: list})
}

// NewServer returns an SMTP server that spools into spool and hands each
// accepted message to d.
func NewServer(cfg ServerConfig, spool *Spool, d *Deliverer, log *slog.Logger, m *Metrics) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 5 * time.Minute
	}
	if cfg.DataTimeout == 0 {
		cfg.DataTimeout = 10 * time.Minute
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = 1 << 20
	}
	if cfg.DefaultMode == "" {
		cfg.DefaultMode = ModeAll
	}
	// TLS 1.2 at least, whatever the caller's config or GODEBUG say.
	if cfg.TLSConfig != nil && cfg.TLSConfig.MinVersion < tls.VersionTLS12 {
		cfg.TLSConfig = cfg.TLSConfig.Clone()
		cfg.TLSConfig.MinVersion = tls.VersionTLS12
	}
	s := &Server{
		cfg:     cfg,
		spool:   spool,
		deliver: d,
		log:     log,
		metrics: m,
		limiter: ratelimit.New(rate.Every(30*time.Second), 5), // 5 failures, then one every 30s
		conns:   newConnLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerIP),
	}
	s.accounts.Store(&accounts{list: cfg.Accounts})
	srv := smtp.NewServer(s)
	srv.Domain = cfg.Hostname
	srv.TLSConfig = cfg.TLSConfig
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	// RFC 6531: UTF-8 envelope addresses and header fields, for clients
	// that give SMTPUTF8 on MAIL (see session.Mail).
	srv.EnableSMTPUTF8 = true
	// RFC 5321 allows 1000 bytes a line, but apps write HTML on very long
	// lines and MTAs accept them; 64 KiB keeps memory bounded all the same.
	srv.MaxLineLength = 64 << 10
	srv.ReadTimeout = cfg.CommandTimeout
	srv.WriteTimeout = cfg.CommandTimeout
	// AUTH over plain text is decided per session (loopback only), below.
	srv.AllowInsecureAuth = true
	srv.ErrorLog = slogPrintf{log}
	s.smtp = srv
	return s
}

// Serve accepts SMTP connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	err := s.smtp.Serve(s.conns.wrap(l, s.metrics))
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits, until ctx ends, for the
// sessions under way to finish; then it closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.smtp.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return s.smtp.Close()
	}
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	sess := &session{
		srv:  s,
		conn: c,
		cid:  s.nextCID.Add(1),
	}
	if ap, err := netip.ParseAddrPort(c.Conn().RemoteAddr().String()); err == nil {
		sess.ip = ap.Addr().Unmap()
	}
	_, sess.tls = c.TLSConnectionState()
	sess.netAccount = s.accounts.Load().byNetwork(sess.ip)
	sess.log = s.log.With("cid", sess.cid, "remote", sess.ip.String())
	s.metrics.sessions.Inc()
	return sess, nil
}

// slogPrintf adapts go-smtp's internal error log to slog.
type slogPrintf struct{ log *slog.Logger }

func (l slogPrintf) Printf(format string, v ...any) { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l slogPrintf) Println(v ...any)               { l.log.Warn(fmt.Sprint(v...)) }
