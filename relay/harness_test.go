package relay

// The test relay: a server, its spool and its deliverer on loopback, and
// the clients that talk to it, go-smtp's and a raw one.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

var testPassword = "correct horse battery staple"

// testHash is testPassword hashed at bcrypt's default cost, as
// hash-password makes them; cheapHash at the cheapest cost.
var (
	testHash, _  = bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost+6)
	cheapHash, _ = bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
)

// harnessOpts configures a test relay. Zero values keep the relay's own
// defaults, but for the retry delays, short so that no test waits long.
type harnessOpts struct {
	// The account is alice, with password testPassword, these networks and
	// these self addresses; accounts, when set, replaces her.
	networks  []netip.Prefix
	selfAddrs []string
	accounts  []Account
	// realBcrypt keeps the costs of production: alice's hash costs 10 and
	// an unknown user is checked against the hash the accounts' dummyHash
	// makes. Otherwise both cost the minimum, which changes no answer,
	// only the time.
	realBcrypt bool

	maxSize     int64
	maxRcpts    int
	maxConns    int
	maxPerIP    int
	cmdTimeout  time.Duration
	dataTimeout time.Duration
	tls         bool // offer STARTTLS, with a self-signed certificate for 127.0.0.1
	requireTLS  bool
	remote      string        // when set, every peer appears to come from this IP
	remotes     func() string // when set, each peer appears to come from the IP it returns
	log         *slog.Logger  // the relay's log; the test's log when nil
	server      func(*Server) // when set, adjusts the server before it serves

	upstream   bool // deliver to a sink on loopback; otherwise capture to dir/outbox
	upSMTPUTF8 bool // the upstream sink offers SMTPUTF8
	upConns    int
	retry      time.Duration // the first retry delay, 50ms when 0; the longest is four times it
	lifetime   time.Duration
	dir        string        // the spool's parent; a temporary directory when ""
	noStart    bool          // leave the deliverer stopped
	reportWait time.Duration // DeliveryConfig.ReportWait
	metrics    *Metrics      // the deliverer's; its own when nil
	// ledger, when set, wraps the harness's ledger for the deliverer.
	ledger func(*memLedger) Ledger
}

// harness is a relay on loopback: h.addr takes SMTP, h.ledger hears of
// every message, and h.sink (with upstream) or dir/outbox gets the copies.
type harness struct {
	t      testing.TB
	spool  *Spool
	d      *Deliverer
	srv    *Server
	addr   string
	sink   *sink
	ledger *memLedger
	dir    string
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, ledger: newMemLedger(), dir: o.dir}
	if h.dir == "" {
		h.dir = t.TempDir()
	}
	var err error
	h.spool, err = OpenSpool(filepath.Join(h.dir, "spool"), nil)
	if err != nil {
		t.Fatal(err)
	}
	log := o.log
	if log == nil {
		log = testLogger(t)
	}
	dc := DeliveryConfig{Hostname: "relay.test", RetryInitial: o.retry, RetryMax: 4*o.retry + time.Millisecond, Lifetime: o.lifetime,
		ReportWait: o.reportWait}
	if o.retry == 0 {
		dc.RetryInitial, dc.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	}
	if o.upstream {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		h.sink = serveSink(t, ln, nil, o.upSMTPUTF8)
		dc.Upstream = &UpstreamConfig{Address: h.sink.addr, TLS: TLSNone, MaxConnections: 2}
		if o.upConns > 0 {
			dc.Upstream.MaxConnections = o.upConns
		}
	} else {
		dc.CaptureDir = filepath.Join(h.dir, "outbox")
	}
	var ledger Ledger = h.ledger
	if o.ledger != nil {
		ledger = o.ledger(h.ledger)
	}
	h.d = NewDeliverer(dc, h.spool, ledger, testMinters{}, log, o.metrics)
	if !o.noStart {
		if err := h.d.Start(); err != nil {
			t.Fatal(err)
		}
	}
	hash := cheapHash
	if o.realBcrypt {
		hash = testHash
	}
	sc := ServerConfig{
		Hostname:            "relay.test",
		MaxMessageBytes:     o.maxSize,
		MaxRecipients:       o.maxRcpts,
		RequireTLS:          o.requireTLS,
		CommandTimeout:      o.cmdTimeout,
		DataTimeout:         o.dataTimeout,
		MaxConnections:      o.maxConns,
		MaxConnectionsPerIP: o.maxPerIP,
		Accounts:            o.accounts,
	}
	if sc.Accounts == nil {
		sc.Accounts = []Account{{Name: "alice", PasswordHash: hash, Networks: o.networks, Mode: ModeAll,
			SelfAddresses: o.selfAddrs}}
	}
	if o.tls {
		sc.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	}
	h.srv = NewServer(sc, h.spool, h.d, log, nil)
	if !o.realBcrypt {
		as := h.srv.accounts.Load()
		as.dummyOnce.Do(func() { as.dummy = cheapHash })
	}
	if o.server != nil {
		o.server(h.srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	var l net.Listener = ln
	if o.remote != "" {
		l = remoteListener{Listener: ln, next: func() string { return o.remote }}
	}
	if o.remotes != nil {
		l = remoteListener{Listener: ln, next: o.remotes}
	}
	served := make(chan struct{})
	go func() { h.srv.Serve(l); close(served) }()
	t.Cleanup(func() {
		h.srv.smtp.Close()
		<-served
		h.d.Shutdown(shutdownCtx(t))
		h.spool.Close()
	})
	return h
}

// stored lists every message the relay holds: its spool's files and
// records, its outbox's copies and the ledger's reports.
func (h *harness) stored() []string {
	var found []string
	for _, d := range []string{h.spool.msgDir, filepath.Join(h.dir, "outbox")} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			found = append(found, filepath.Join(d, e.Name()))
		}
	}
	envs, err := h.spool.List()
	if err != nil {
		h.t.Fatalf("spool: %v", err)
	}
	for _, env := range envs {
		found = append(found, "spool:"+env.ID)
	}
	h.ledger.mu.Lock()
	for id := range h.ledger.accepted {
		found = append(found, "ledger:"+id)
	}
	h.ledger.mu.Unlock()
	return found
}

func (h *harness) assertNothingStored() {
	h.t.Helper()
	if f := h.stored(); len(f) != 0 {
		h.t.Fatalf("the relay stored something: %v", f)
	}
}

// client dials the relay with go-smtp's client and says EHLO.
func (h *harness) client() *smtp.Client {
	h.t.Helper()
	c, err := smtp.Dial(h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := c.Hello("client.test"); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// send submits msg as alice with AUTH PLAIN and returns the 250 text.
func (h *harness) send(from string, to []string, msg string) (string, error) {
	return h.sendWith(nil, from, to, msg)
}

// sendWith is send with opts on MAIL.
func (h *harness) sendWith(opts *smtp.MailOptions, from string, to []string, msg string) (string, error) {
	c := h.client()
	if err := c.Auth(sasl.NewPlainClient("", "alice", testPassword)); err != nil {
		return "", err
	}
	return sendOnWith(c, opts, from, to, msg)
}

// sendOn submits msg on c, as it stands, and returns the 250 text.
func sendOn(c *smtp.Client, from string, to []string, msg string) (string, error) {
	return sendOnWith(c, nil, from, to, msg)
}

func sendOnWith(c *smtp.Client, opts *smtp.MailOptions, from string, to []string, msg string) (string, error) {
	if err := c.Mail(from, opts); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, strings.NewReader(msg)); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// remoteListener makes every connection appear to come from ip, so that a
// client on loopback can play a peer on the internet.
type remoteListener struct {
	net.Listener
	next func() string
}

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	port := c.RemoteAddr().(*net.TCPAddr).Port
	return remoteConn{Conn: c, remote: &net.TCPAddr{IP: net.ParseIP(l.next()), Port: port}}, nil
}

type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }

// testCert is a self-signed certificate for 127.0.0.1.
func testCert(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "relay.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func clientTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// reply is one SMTP reply: its code and its lines, without the codes.
type reply struct {
	code  int
	lines []string
	err   error
}

func (r reply) text() string { return strings.Join(r.lines, "\n") }

func (r reply) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	return strconv.Itoa(r.code) + " " + r.text()
}

// rawClient speaks SMTP byte by byte, so that tests can send what no
// well-behaved client would.
type rawClient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

// connect connects from the loopback address local ("" for any) and
// reads the greeting, whatever it is.
func (h *harness) connect(local string) (*rawClient, reply) {
	h.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: h.t, c: c, r: bufio.NewReader(c)}
	return rc, rc.read()
}

// dial connects from the loopback address local ("" for any) and expects
// the 220 greeting.
func (h *harness) dial(local string) *rawClient {
	h.t.Helper()
	rc, greet := h.connect(local)
	if greet.code != 220 {
		h.t.Fatalf("greeting: %v", greet)
	}
	return rc
}

func (rc *rawClient) read() reply {
	rc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var r reply
	for {
		line, err := rc.r.ReadString('\n')
		if err != nil {
			r.err = err
			return r
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			r.err = fmt.Errorf("short reply line %q", line)
			return r
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			r.err = fmt.Errorf("bad reply line %q", line)
			return r
		}
		r.code = code
		r.lines = append(r.lines, line[min(4, len(line)):])
		if len(line) == 3 || line[3] != '-' {
			return r
		}
	}
}

func (rc *rawClient) write(s string) {
	rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawClient) cmd(line string) reply {
	rc.write(line + "\r\n")
	return rc.read()
}

// expect sends line and fails unless the reply has code want.
func (rc *rawClient) expect(line string, want int) reply {
	rc.t.Helper()
	r := rc.cmd(line)
	if r.code != want {
		rc.t.Fatalf("%.60q: want %d, got %v", line, want, r)
	}
	return r
}

// hangGuard bounds a wait for something that must happen, so that a broken
// server fails the test instead of hanging it; it is no claim of how soon.
const hangGuard = 30 * time.Second

// closed reports whether the server closes the connection within d,
// reading and discarding whatever it still sends.
func (rc *rawClient) closed(d time.Duration) bool {
	rc.c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, rc.r)
	return err == nil || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// startTLS upgrades the connection; the server's 220 must already be read.
func (rc *rawClient) startTLS(conf *tls.Config) error {
	tc := tls.Client(rc.c, conf)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	tc.SetDeadline(time.Time{})
	rc.c = tc
	rc.r = bufio.NewReader(tc)
	return nil
}

func plainIR(identity, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(identity + "\x00" + user + "\x00" + pass))
}

// startData says EHLO, logs in as alice and opens a message to rcpts:
// the server's 354 is read.
func (rc *rawClient) startData(rcpts ...string) {
	rc.t.Helper()
	rc.expect("EHLO app.example", 250)
	rc.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	rc.expect("MAIL FROM:<alice@example.com>", 250)
	for _, r := range rcpts {
		rc.expect("RCPT TO:<"+r+">", 250)
	}
	rc.expect("DATA", 354)
}

// sendRaw sends msg as alice to rcpts recipients, r0@example.net and on,
// returning the reply to its end of data.
func (rc *rawClient) sendRaw(rcpts int, msg string) reply {
	rc.t.Helper()
	to := make([]string, rcpts)
	for i := range to {
		to[i] = fmt.Sprintf("r%d@example.net", i)
	}
	rc.startData(to...)
	rc.write(msg + ".\r\n")
	return rc.read()
}
