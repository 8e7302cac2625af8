package relay

// Attack tests: each one tries an attack against a relay listening on
// loopback and asserts the exact outcome. SECURITY.md lists them.

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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// attackOpts configures a relay under attack. Zero values keep the relay's
// own defaults, except the timeouts, which are short so that no test waits
// long.
type attackOpts struct {
	tls         bool
	requireTLS  bool
	cmdTimeout  time.Duration
	dataTimeout time.Duration
	maxConns    int
	maxPerIP    int
	maxSize     int64
	maxRcpts    int
	networks    []netip.Prefix // alice's networks
	remote      string         // when set, every peer appears to come from this IP
	remotes     func() string  // when set, each peer appears to come from the IP it returns
	accounts    []Account      // replaces alice
	log         *slog.Logger
	// ownDummy leaves the dummy hash to the accounts' dummyHash; other
	// tests preset one of the cheapest cost, which changes no answer, only
	// the time.
	ownDummy bool
}

var cheapHash, _ = bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)

type attackServer struct {
	t      *testing.T
	addr   string
	dir    string
	srv    *Server
	ledger *memLedger
}

func newAttackServer(t *testing.T, o attackOpts) *attackServer {
	t.Helper()
	a := &attackServer{t: t, dir: t.TempDir(), ledger: newMemLedger()}
	spool, err := OpenSpool(filepath.Join(a.dir, "spool"), nil)
	if err != nil {
		t.Fatal(err)
	}
	log := o.log
	if log == nil {
		log = testLogger(t)
	}
	d := NewDeliverer(DeliveryConfig{Hostname: "relay.test", CaptureDir: filepath.Join(a.dir, "outbox"),
		RetryInitial: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, BaseURL: "http://t.test"},
		spool, a.ledger, testMinters{}, log, nil)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{
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
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 5 * time.Second
	}
	if cfg.DataTimeout == 0 {
		cfg.DataTimeout = 5 * time.Second
	}
	if cfg.Accounts == nil {
		cfg.Accounts = []Account{{Name: "alice", PasswordHash: cheapHash, Networks: o.networks, Mode: ModeAll}}
	}
	if o.tls {
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	}
	a.srv = NewServer(cfg, spool, d, log, nil)
	if !o.ownDummy {
		a.srv.accounts.dummyOnce.Do(func() { a.srv.accounts.dummy = cheapHash })
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = ln.Addr().String()
	var l net.Listener = ln
	if o.remote != "" {
		l = remoteListener{Listener: ln, next: func() string { return o.remote }}
	}
	if o.remotes != nil {
		l = remoteListener{Listener: ln, next: o.remotes}
	}
	go a.srv.Serve(l)
	t.Cleanup(func() {
		a.srv.smtp.Close()
		d.Shutdown(shutdownCtx(t))
		spool.Close()
	})
	return a
}

// stored lists every message file the spool or the outbox holds.
func (a *attackServer) stored() []string {
	var files []string
	for _, d := range []string{filepath.Join(a.dir, "spool", "msg"), filepath.Join(a.dir, "outbox")} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			files = append(files, filepath.Join(d, e.Name()))
		}
	}
	a.ledger.mu.Lock()
	for id := range a.ledger.accepted {
		files = append(files, "ledger:"+id)
	}
	a.ledger.mu.Unlock()
	return files
}

func (a *attackServer) assertNothingStored() {
	a.t.Helper()
	if f := a.stored(); len(f) != 0 {
		a.t.Fatalf("the relay stored something: %v", f)
	}
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
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// dialFrom connects from the loopback address local ("" for any) and reads
// the greeting.
func dialFrom(t *testing.T, addr, local string) (*rawClient, reply) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: t, c: c, r: bufio.NewReader(c)}
	return rc, rc.read()
}

// dial connects from 127.0.0.1 and expects the 220 greeting.
func (a *attackServer) dial(local string) *rawClient {
	a.t.Helper()
	rc, greet := dialFrom(a.t, a.addr, local)
	if greet.code != 220 {
		a.t.Fatalf("greeting: %v", greet)
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

func clientTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// ---- 1. Open relay ----

func TestAttack_openRelay(t *testing.T) {
	// alice may send without AUTH from 192.0.2.0/24 only; the attacker is
	// on 127.0.0.1 and has no password.
	a := newAttackServer(t, attackOpts{networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	senders := []string{
		"alice@example.com",              // the account's own address
		"spammer@elsewhere.example",      // a remote sender
		"",                               // the null sender <>
		"postmaster",                     // no domain
		`"alice@example.com"@relay.test`, // quoted local part
		"@relay.test:alice@example.com",  // source route
		"alice%example.com@relay.test",   // percent hack
		"alice@[127.0.0.1]",              // address literal
	}
	rcpts := []string{
		"victim@evil.example",
		"alice@example.com",
		"postmaster",
		"postmaster@relay.test",
		"@relay.test:victim@evil.example",
		"@relay.test,@relay2.test:victim@evil.example",
		"victim%evil.example@relay.test",
		"victim%evil.example@[127.0.0.1]",
		`"victim@evil.example"@relay.test`,
		`"victim%evil.example"@relay.test`,
		"evil.example!victim@relay.test",
		"victim@evil.example@relay.test",
		"victim@[192.0.2.1]",
	}
	verbs := [][2]string{{"MAIL FROM:", "RCPT TO:"}, {"mail from:", "rcpt to:"}, {"MaIl FrOm:", "RcPt To:"}}
	greets := []string{"EHLO attacker.example", "HELO attacker.example", "ehlo relay.test"}
	for i, from := range senders {
		v := verbs[i%len(verbs)]
		c := a.dial("")
		c.expect(greets[i%len(greets)], 250)
		if r := c.cmd(v[0] + "<" + from + ">"); r.code < 500 || r.code > 599 {
			t.Errorf("MAIL <%s>: want 5xx, got %v", from, r)
		}
		for _, to := range rcpts {
			if r := c.cmd(v[1] + "<" + to + ">"); r.code < 500 || r.code > 599 {
				t.Errorf("MAIL <%s> RCPT <%s>: want 5xx, got %v", from, to, r)
			}
		}
		if r := c.cmd("DATA"); r.code < 500 {
			t.Errorf("DATA after refused MAIL/RCPT: want 5xx, got %v", r)
		}
		c.expect("QUIT", 221)
	}

	// RCPT before MAIL, and MAIL before any greeting.
	c := a.dial("")
	c.expect("EHLO attacker.example", 250)
	if r := c.cmd("RCPT TO:<victim@evil.example>"); r.code < 500 {
		t.Errorf("RCPT before MAIL: want 5xx, got %v", r)
	}
	c = a.dial("")
	if r := c.cmd("MAIL FROM:<spammer@elsewhere.example>"); r.code < 500 {
		t.Errorf("MAIL before EHLO: want 5xx, got %v", r)
	}

	// Spoofing the client address or the authenticated identity gets nothing.
	c = a.dial("")
	c.expect("EHLO attacker.example", 250)
	for _, line := range []string{"XCLIENT ADDR=192.0.2.10", "XFORWARD ADDR=192.0.2.10"} {
		if r := c.cmd(line); r.code < 500 {
			t.Errorf("%s: want 5xx, got %v", line, r)
		}
	}
	if r := c.cmd("MAIL FROM:<alice@example.com> AUTH=alice@example.com"); r.code != 530 {
		t.Errorf("MAIL with AUTH= parameter: want 530, got %v", r)
	}

	// Everything in one packet, the way a spam bot pipelines it.
	c = a.dial("")
	c.write("EHLO bot.example\r\nMAIL FROM:<spammer@elsewhere.example>\r\nRCPT TO:<victim@evil.example>\r\n" +
		"DATA\r\nSubject: buy now\r\n\r\nspam\r\n.\r\nQUIT\r\n")
	if r := c.read(); r.code != 250 {
		t.Fatalf("EHLO: %v", r)
	}
	for {
		r := c.read()
		if r.err != nil {
			break
		}
		if r.code == 221 {
			break
		}
		if r.code < 500 {
			t.Errorf("pipelined spam run: a command was accepted: %v", r)
		}
	}

	// The refusals are not an artefact of the harness: alice with AUTH gets through.
	c = a.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	c.expect("RSET", 250)
	a.assertNothingStored()
}

// A peer on one of the account's networks may send; one outside may not,
// even when it claims to be on it.
func TestAttack_openRelay_networkBoundary(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	in := newAttackServer(t, attackOpts{networks: nets, remote: "192.0.2.10"})
	c := in.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	c.expect("RCPT TO:<bob@example.net>", 250)
	c.expect("RSET", 250)

	for _, ip := range []string{"192.0.3.10", "::ffff:192.0.3.10", "2001:db8::1"} {
		out := newAttackServer(t, attackOpts{networks: nets, remote: ip})
		c := out.dial("")
		c.expect("EHLO app.example", 250)
		c.expect("MAIL FROM:<alice@example.com>", 530)
		out.assertNothingStored()
	}
}

// ---- 2. STARTTLS ----

// CVE-2011-0411 class: what a man in the middle appends after STARTTLS in
// the same packet must not run inside the TLS session.
func TestAttack_startTLSInjection(t *testing.T) {
	a := newAttackServer(t, attackOpts{tls: true})
	for _, injected := range []string{
		"RSET\r\n",
		"NOOP\r\nNOOP\r\n",
		"EHLO mitm.example\r\nMAIL FROM:<mitm@evil.example>\r\nRCPT TO:<mitm@evil.example>\r\n",
	} {
		c := a.dial("")
		c.expect("EHLO app.example", 250)
		c.write("STARTTLS\r\n" + injected)
		if r := c.read(); r.code != 220 {
			t.Fatalf("STARTTLS: %v", r)
		}
		if err := c.startTLS(clientTLS()); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		// The server must say nothing until the client speaks.
		c.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if b, err := c.r.ReadByte(); err == nil {
			rest, _ := c.r.ReadString('\n')
			t.Fatalf("injected %q was answered inside TLS: %q", injected, string(b)+rest)
		}
		r := c.expect("EHLO app.example", 250)
		if !strings.Contains(r.text(), "AUTH PLAIN LOGIN") || strings.Contains(r.text(), "STARTTLS") {
			t.Errorf("EHLO inside TLS: %v", r)
		}
		// The victim's transaction gets exactly the victim's recipient.
		c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
		c.expect("MAIL FROM:<alice@example.com>", 250)
		c.expect("RCPT TO:<bob@example.net>", 250)
		c.expect("DATA", 354)
		r = c.expect("Subject: hi\r\n\r\nhello\r\n.", 250)
		id := queueID(t, r.text())
		a.ledger.mu.Lock()
		env := a.ledger.accepted[id]
		a.ledger.mu.Unlock()
		if env == nil {
			// The ledger learns off the SMTP path: wait for it.
			a.ledger.waitStatus(t, id, 0, StatusDelivered)
			a.ledger.mu.Lock()
			env = a.ledger.accepted[id]
			a.ledger.mu.Unlock()
		}
		if env.From != "alice@example.com" || len(env.Recipients) != 1 || env.Recipients[0].Address != "bob@example.net" {
			t.Errorf("injected envelope leaked into the message: %+v", env)
		}
		c.expect("QUIT", 221)
	}
}

// STARTTLS forgets what was said in the clear, AUTH included (RFC 3207).
func TestAttack_startTLSResetsState(t *testing.T) {
	a := newAttackServer(t, attackOpts{tls: true})
	c := a.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235) // loopback: allowed in the clear
	c.expect("STARTTLS", 220)
	if err := c.startTLS(clientTLS()); err != nil {
		t.Fatal(err)
	}
	if r := c.cmd("MAIL FROM:<alice@example.com>"); r.code != 502 {
		t.Errorf("MAIL without EHLO after STARTTLS: want 502, got %v", r)
	}
	c.expect("EHLO app.example", 250)
	c.expect("MAIL FROM:<alice@example.com>", 530)
	if r := c.cmd("STARTTLS"); r.code != 502 {
		t.Errorf("second STARTTLS: want 502, got %v", r)
	}
}

func TestAttack_authBeforeTLS_nonLoopback(t *testing.T) {
	a := newAttackServer(t, attackOpts{tls: true, remote: "203.0.113.7"})
	c := a.dial("")
	r := c.expect("EHLO app.example", 250)
	if strings.Contains(r.text(), "AUTH") || !strings.Contains(r.text(), "STARTTLS") {
		t.Errorf("EHLO in the clear from the internet: %v", r)
	}
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 538)
	c.expect("AUTH LOGIN", 538)
	c.expect("MAIL FROM:<alice@example.com>", 530)
	c.expect("STARTTLS", 220)
	if err := c.startTLS(clientTLS()); err != nil {
		t.Fatal(err)
	}
	r = c.expect("EHLO app.example", 250)
	if !strings.Contains(r.text(), "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO inside TLS lacks AUTH: %v", r)
	}
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	c.expect("MAIL FROM:<alice@example.com>", 250)

	// Without any TLS configured, such a peer can never AUTH.
	b := newAttackServer(t, attackOpts{remote: "203.0.113.7"})
	c = b.dial("")
	r = c.expect("EHLO app.example", 250)
	if strings.Contains(r.text(), "AUTH") || strings.Contains(r.text(), "STARTTLS") {
		t.Errorf("EHLO without TLS: %v", r)
	}
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 538)
	c.expect("STARTTLS", 502)
}

func TestAttack_tlsMinimumVersion(t *testing.T) {
	// newAttackServer's TLS config sets no minimum: NewServer does.
	a := newAttackServer(t, attackOpts{tls: true})
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		c := a.dial("")
		c.expect("EHLO app.example", 250)
		c.expect("STARTTLS", 220)
		err := c.startTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
		if err == nil {
			t.Errorf("TLS version %x: handshake succeeded", v)
		}
	}
	c := a.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("STARTTLS", 220)
	if err := c.startTLS(&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err != nil {
		t.Errorf("TLS 1.2: %v", err)
	}
}

func TestAttack_requireTLS(t *testing.T) {
	// Even alice's own network and loopback get nothing before STARTTLS.
	a := newAttackServer(t, attackOpts{tls: true, requireTLS: true, networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	c := a.dial("")
	r := c.expect("EHLO app.example", 250)
	if strings.Contains(r.text(), "AUTH") {
		t.Errorf("EHLO before TLS with require_tls advertises AUTH: %v", r)
	}
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 538)
	r = c.expect("MAIL FROM:<alice@example.com>", 530)
	if !strings.HasPrefix(r.text(), "5.7.0") {
		t.Errorf("MAIL before STARTTLS: %v", r)
	}
	c.expect("STARTTLS", 220)
	if err := c.startTLS(clientTLS()); err != nil {
		t.Fatal(err)
	}
	c.expect("EHLO app.example", 250)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	c.expect("RSET", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	a.assertNothingStored()
}

// ---- 3. Credentials ----

func TestAttack_wrongCredentials(t *testing.T) {
	a := newAttackServer(t, attackOpts{accounts: []Account{
		{Name: "alice", PasswordHash: cheapHash, Mode: ModeAll},
		{Name: "netonly", Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Mode: ModeAll},
	}})
	cases := []struct{ what, cmd string }{
		{"wrong password", "AUTH PLAIN " + plainIR("", "alice", "wrong")},
		{"unknown user", "AUTH PLAIN " + plainIR("", "mallory", testPassword)},
		{"empty password", "AUTH PLAIN " + plainIR("", "alice", "")},
		{"account without password", "AUTH PLAIN " + plainIR("", "netonly", "")},
		{"authorize as another account", "AUTH PLAIN " + plainIR("netonly", "alice", testPassword)},
		{"user name case", "AUTH PLAIN " + plainIR("", "ALICE", testPassword)},
		{"password with NUL", "AUTH PLAIN " + plainIR("", "alice", testPassword+"\x00x")}, // malformed: 454
	}
	for i, tc := range cases {
		// A fresh source address each, so the rate limiter stays out of it.
		c := a.dial(fmt.Sprintf("127.0.1.%d", i+1))
		c.expect("EHLO app.example", 250)
		want := 535
		if strings.Contains(tc.what, "NUL") {
			want = 454
		}
		if r := c.cmd(tc.cmd); r.code != want {
			t.Errorf("%s: want %d, got %v", tc.what, want, r)
		}
		c.expect("MAIL FROM:<alice@example.com>", 530)
	}
	// AUTH LOGIN the same way.
	c := a.dial("127.0.1.100")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH LOGIN", 334)
	c.expect(base64.StdEncoding.EncodeToString([]byte("alice")), 334)
	c.expect(base64.StdEncoding.EncodeToString([]byte("wrong")), 535)
	a.assertNothingStored()
}

// Every failed login costs the same, so the time does not tell a guesser
// which user names exist: a known user with a wrong password, an unknown
// user and a user without a password are each checked with exactly one
// bcrypt compare, against a hash of the accounts' cost (here 11, above the
// dummy's floor of 10). The compares are recorded, not timed;
// BenchmarkAccounts_authenticate has the figures.
func TestAttack_authOneCompareOfTheAccountsCost(t *testing.T) {
	const cost = 11
	alice, bob := fakeBcrypt(cost, "alice"), fakeBcrypt(cost, "bob")
	type check struct {
		hash string
		cost int
	}
	var (
		mu     sync.Mutex
		checks []check
	)
	compare, generate := compareHash, generateHash
	t.Cleanup(func() { compareHash, generateHash = compare, generate })
	generateHash = func(_ []byte, cost int) ([]byte, error) { return fakeBcrypt(cost, "dummy"), nil }
	compareHash = func(hash, _ []byte) error {
		c, err := bcrypt.Cost(hash)
		if err != nil {
			t.Errorf("compared against %q: %v", hash, err)
		}
		mu.Lock()
		checks = append(checks, check{string(hash), c})
		mu.Unlock()
		return bcrypt.ErrMismatchedHashAndPassword
	}
	a := newAttackServer(t, attackOpts{ownDummy: true, accounts: []Account{
		{Name: "alice", PasswordHash: alice, Mode: ModeAll},
		{Name: "bob", PasswordHash: bob, Mode: ModeAll},
		{Name: "netonly", Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Mode: ModeAll},
	}})
	var dummy string
	for i, tc := range []struct {
		what, user string
		hash       []byte // the account's own; nil: the dummy
		login      bool   // AUTH LOGIN rather than PLAIN
	}{
		{"known user, wrong password", "alice", alice, false},
		{"another known user", "bob", bob, false},
		{"unknown user", "nobody", nil, false},
		{"user without password", "netonly", nil, false},
		{"user name in another case", "ALICE", nil, false},
		{"unknown user, AUTH LOGIN", "nobody", nil, true},
		{"known user, AUTH LOGIN", "alice", alice, true},
	} {
		mu.Lock()
		checks = nil
		mu.Unlock()
		c := a.dial(fmt.Sprintf("127.0.2.%d", i+1)) // each its own address: no rate limit
		c.expect("EHLO app.example", 250)
		if tc.login {
			c.expect("AUTH LOGIN", 334)
			c.expect(base64.StdEncoding.EncodeToString([]byte(tc.user)), 334)
			c.expect(base64.StdEncoding.EncodeToString([]byte("wrong password")), 535)
		} else {
			c.expect("AUTH PLAIN "+plainIR("", tc.user, "wrong password"), 535)
		}
		mu.Lock()
		got := checks
		mu.Unlock()
		if len(got) != 1 {
			t.Errorf("%s: %d bcrypt compares, want 1", tc.what, len(got))
			continue
		}
		if got[0].cost != cost {
			t.Errorf("%s: compared against a hash of cost %d, want %d", tc.what, got[0].cost, cost)
		}
		switch {
		case tc.hash != nil && got[0].hash != string(tc.hash):
			t.Errorf("%s: compared against %q, not the account's hash", tc.what, got[0].hash)
		case tc.hash == nil && (got[0].hash == string(alice) || got[0].hash == string(bob)):
			t.Errorf("%s: compared against an account's hash", tc.what)
		case tc.hash == nil && dummy != "" && got[0].hash != dummy:
			t.Errorf("%s: a dummy hash of its own", tc.what)
		case tc.hash == nil:
			dummy = got[0].hash
		}
	}
}

// fakeBcrypt is a well-formed bcrypt hash of the given cost that no
// password matches: bcrypt.Cost reads it, and only the test's compare sees it.
func fakeBcrypt(cost int, tag string) []byte {
	h := fmt.Sprintf("$2a$%02d$%s", cost, tag)
	return []byte(h + strings.Repeat(".", 60-len(h)))
}

// BenchmarkAccounts_authenticate times a failed login by what was wrong
// with it, on real bcrypt hashes of cost 10: unknown/known and
// nopassword/known near 1 mean the time does not tell a guesser which user
// names exist.
func BenchmarkAccounts_authenticate(b *testing.B) {
	as := &accounts{list: []Account{{Name: "alice", PasswordHash: testHash}, {Name: "netonly"}}}
	as.dummyHash() // made once, by the first unknown user
	users := []string{"alice", "nobody", "netonly"}
	var took [3]time.Duration
	for range b.N {
		for i, u := range users {
			start := time.Now()
			if _, err := as.authenticate(u, "wrong password"); err == nil {
				b.Fatalf("%s logged in with a wrong password", u)
			}
			took[i] += time.Since(start)
		}
	}
	b.ReportMetric(float64(took[0].Nanoseconds())/float64(b.N), "known-ns/login")
	b.ReportMetric(float64(took[1])/float64(took[0]), "unknown/known")
	b.ReportMetric(float64(took[2])/float64(took[0]), "nopassword/known")
}

// The dummy hash an unknown user is checked against costs what the
// accounts' own hashes cost: hash-password makes cost 12 hashes, and a
// cheaper dummy would tell a guesser which names exist.
func TestAccounts_dummyHashMatchesCost(t *testing.T) {
	h11, err := bcrypt.GenerateFromPassword([]byte("pw"), 11)
	if err != nil {
		t.Fatal(err)
	}
	as := &accounts{list: []Account{{Name: "a", PasswordHash: testHash}, {Name: "b", PasswordHash: h11}, {Name: "c"}}}
	if cost, err := bcrypt.Cost(as.dummyHash()); err != nil || cost != 11 {
		t.Errorf("dummy hash cost %d (%v), want 11", cost, err)
	}
	none := &accounts{}
	if cost, err := bcrypt.Cost(none.dummyHash()); err != nil || cost < 10 {
		t.Errorf("dummy hash without accounts: cost %d (%v)", cost, err)
	}
}

func TestAttack_authRateLimit(t *testing.T) {
	a := newAttackServer(t, attackOpts{})
	// Five guesses on one connection, then the next is refused, slowly.
	c := a.dial("127.0.3.1")
	c.expect("EHLO guesser.example", 250)
	for i := range 5 {
		c.expect("AUTH PLAIN "+plainIR("", "alice", "guess"+strconv.Itoa(i)), 535)
	}
	start := time.Now()
	r := c.expect("AUTH PLAIN "+plainIR("", "alice", "guess5"), 454)
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("454 came after %v; want a delay of about a second", el)
	}
	if !strings.HasPrefix(r.text(), "4.7.0") {
		t.Errorf("rate limited: %v", r)
	}
	// A new connection from the same address is still refused, right password or not.
	c = a.dial("127.0.3.1")
	c.expect("EHLO guesser.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 454)
	c.expect("AUTH LOGIN "+base64.StdEncoding.EncodeToString([]byte("alice")), 334)
	c.expect(base64.StdEncoding.EncodeToString([]byte(testPassword)), 454)
	// Other addresses are not punished for it.
	c = a.dial("127.0.3.2")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
}

// Guesses sent on many connections at once still count against the one
// budget of the address: the limit is not checked and charged separately.
func TestAttack_authRateLimitParallel(t *testing.T) {
	a := newAttackServer(t, attackOpts{})
	const n = 20
	conns := make([]*rawClient, n)
	for i := range conns {
		conns[i] = a.dial("127.0.3.3")
		conns[i].expect("EHLO guesser.example", 250)
	}
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			c.write("AUTH PLAIN " + plainIR("", "alice", "guess"+strconv.Itoa(i)) + "\r\n")
			codes[i] = c.read().code
		})
	}
	wg.Wait()
	var tried, limited int
	for _, code := range codes {
		switch code {
		case 535:
			tried++
		case 454:
			limited++
		default:
			t.Errorf("unexpected reply %d", code)
		}
	}
	t.Logf("%d parallel guesses: %d checked (535), %d refused (454)", n, tried, limited)
	if tried > 5 {
		t.Errorf("%d guesses were checked; the burst allows 5", tried)
	}
	// A right password right after is refused as well.
	c := a.dial("127.0.3.3")
	c.expect("EHLO guesser.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 454)
}

// An IPv6 guesser cannot take a fresh address of its /64 for each guess.
func TestAttack_authRateLimitIPv6(t *testing.T) {
	var mu sync.Mutex
	n := 0
	a := newAttackServer(t, attackOpts{tls: true, remotes: func() string {
		mu.Lock()
		defer mu.Unlock()
		n++
		return fmt.Sprintf("2001:db8:1:2::%x", n)
	}})
	guess := func(pass string) int {
		c := a.dial("")
		c.expect("EHLO guesser.example", 250)
		c.expect("STARTTLS", 220)
		if err := c.startTLS(clientTLS()); err != nil {
			t.Fatal(err)
		}
		c.expect("EHLO guesser.example", 250)
		return c.cmd("AUTH PLAIN " + plainIR("", "alice", pass)).code
	}
	for i := range 5 {
		if code := guess("guess" + strconv.Itoa(i)); code != 535 {
			t.Fatalf("guess %d: %d", i, code)
		}
	}
	if code := guess(testPassword); code != 454 {
		t.Errorf("sixth attempt from another address of the same /64: %d, want 454", code)
	}
}

// Successful logins do not use up the budget of an address.
func TestAttack_authRateLimitSparesSuccess(t *testing.T) {
	a := newAttackServer(t, attackOpts{})
	for range 8 {
		c := a.dial("127.0.3.4")
		c.expect("EHLO app.example", 250)
		c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
		c.expect("QUIT", 221)
	}
}

// ---- 4. Resource limits ----

func TestAttack_maxConnections(t *testing.T) {
	a := newAttackServer(t, attackOpts{maxConns: 3})
	var held []*rawClient
	for i := range 3 {
		held = append(held, a.dial(fmt.Sprintf("127.0.4.%d", i+1)))
	}
	c, greet := dialFrom(t, a.addr, "127.0.4.9")
	if greet.code != 421 || !strings.HasPrefix(greet.text(), "4.7.0") {
		t.Fatalf("connection over max_connections: %v", greet)
	}
	if !c.closed(hangGuard) {
		t.Error("connection over the limit left open")
	}
	// A slot that frees up is given to the next client.
	held[0].expect("QUIT", 221)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, greet := dialFrom(t, a.addr, "127.0.4.9")
		if greet.code == 220 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("freed slot never reused: %v", greet)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAttack_maxConnectionsPerIP(t *testing.T) {
	a := newAttackServer(t, attackOpts{maxConns: 100, maxPerIP: 2})
	a.dial("127.0.5.1")
	a.dial("127.0.5.1")
	_, greet := dialFrom(t, a.addr, "127.0.5.1")
	if greet.code != 421 {
		t.Fatalf("third connection from one address: %v", greet)
	}
	a.dial("127.0.5.2") // another address is unaffected
}

// A slowloris client that trickles a command byte by byte, or says nothing,
// is cut after the command timeout: it gets 421 4.4.2 and the connection
// closes while it is still trickling.
func TestAttack_slowloris(t *testing.T) {
	a := newAttackServer(t, attackOpts{cmdTimeout: 300 * time.Millisecond})
	c := a.dial("")
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// One byte every 50 ms, with no end of line, until the server cuts
		// the connection (or the test gives up): a server that let a
		// trickle reset its timeout would never answer 421.
		for b := byte('a'); ; b = 'a' + (b-'a'+1)%26 {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c.c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.c.Write([]byte{b}); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	c.write("EHLO slow.example.")
	// The fragment read when the timeout struck may be answered (bufio
	// hands it over as a line); then the session ends.
	var replies []reply
	for {
		r := c.read()
		if r.err != nil {
			break
		}
		replies = append(replies, r)
		if r.code == 421 || len(replies) > 2 {
			break
		}
	}
	if n := len(replies); n == 0 || n > 2 || replies[n-1].code != 421 || !strings.HasPrefix(replies[n-1].text(), "4.4.2") {
		t.Errorf("slowloris: replies %v after %d bytes trickled; want at most one answer, then 421 4.4.2", replies, sent.Load())
	}
	if !c.closed(hangGuard) {
		t.Error("slowloris connection left open")
	}
	close(stop)
	<-done

	idle := a.dial("")
	if r := idle.read(); r.code != 421 || !strings.HasPrefix(r.text(), "4.4.2") {
		t.Errorf("idle client: %v", r)
	}
	if !idle.closed(hangGuard) {
		t.Error("idle client left connected")
	}
}

// A client that trickles its DATA, without end, is cut after the data
// timeout with 421 4.4.2, and nothing is stored. The command timeout is
// far beyond the test's patience, so only the data timeout can cut it.
func TestAttack_dataTimeout(t *testing.T) {
	a := newAttackServer(t, attackOpts{dataTimeout: 400 * time.Millisecond, cmdTimeout: time.Hour})
	c := a.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	c.expect("RCPT TO:<bob@example.net>", 250)
	c.expect("DATA", 354)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c.c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := fmt.Fprintf(c.c, "X-Slow-%d: drip\r\n", i); err != nil {
				return
			}
		}
	}()
	r := c.read()
	if r.code != 421 || !strings.HasPrefix(r.text(), "4.4.2") {
		t.Errorf("trickled DATA: %v", r)
	}
	if !c.closed(hangGuard) {
		t.Error("trickling client left connected")
	}
	a.assertNothingStored()
}

func TestAttack_longLines(t *testing.T) {
	a := newAttackServer(t, attackOpts{maxSize: 4 << 20})
	// A command line past the limit closes the connection.
	c := a.dial("")
	c.write("EHLO " + strings.Repeat("a", 100<<10) + "\r\n")
	if r := c.read(); r.code != 500 {
		t.Errorf("100 KiB command line: %v", r)
	}
	if !c.closed(hangGuard) {
		t.Error("connection left open after a command line over the limit")
	}
	// A data line past the limit refuses the message.
	c = a.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	c.expect("RCPT TO:<bob@example.net>", 250)
	c.expect("DATA", 354)
	c.write("Subject: x\r\n\r\n" + strings.Repeat("b", 100<<10) + "\r\n.\r\n")
	if r := c.read(); r.code != 500 {
		t.Errorf("100 KiB data line: %v", r)
	}
	c.closed(2 * time.Second)
	a.assertNothingStored()
}

// sendRaw authenticates and sends msg with DATA, returning the final reply.
func (a *attackServer) sendRaw(c *rawClient, rcpts int, msg string) reply {
	a.t.Helper()
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	for i := range rcpts {
		c.expect(fmt.Sprintf("RCPT TO:<r%d@example.net>", i), 250)
	}
	c.expect("DATA", 354)
	c.write(msg + ".\r\n")
	return c.read()
}

func TestAttack_headerTooLarge(t *testing.T) {
	a := newAttackServer(t, attackOpts{maxSize: 8 << 20})
	var b strings.Builder
	line := "X-Pad: " + strings.Repeat("p", 990) + "\r\n"
	for b.Len() < 1<<20+1 {
		b.WriteString(line)
	}
	b.WriteString("Subject: big header\r\n\r\nbody\r\n")
	c := a.dial("")
	r := a.sendRaw(c, 1, b.String())
	if r.code != 552 || !strings.HasPrefix(r.text(), "5.3.4") {
		t.Errorf("1 MiB header: %v", r)
	}
	c.expect("NOOP", 250) // the session goes on, the client got a clean refusal
	a.assertNothingStored()
	// One long folded field is the same.
	c = a.dial("")
	r = a.sendRaw(c, 1, "Subject: x\r\n"+strings.Repeat(" fold "+strings.Repeat("f", 1000)+"\r\n", 1100)+"\r\nbody\r\n")
	if r.code != 552 {
		t.Errorf("1 MiB folded field: %v", r)
	}
	a.assertNothingStored()
}

func TestAttack_messageTooLarge(t *testing.T) {
	a := newAttackServer(t, attackOpts{maxSize: 64 << 10})
	body := strings.Repeat(strings.Repeat("z", 998)+"\r\n", 200)
	c := a.dial("")
	r := a.sendRaw(c, 1, "Subject: big\r\n\r\n"+body)
	if r.code != 552 || !strings.HasPrefix(r.text(), "5.3.4") {
		t.Errorf("200 KB message with a 64 KiB limit: %v", r)
	}
	c.expect("NOOP", 250)
	// Declared up front with SIZE, it is refused at MAIL.
	c = a.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	r = c.cmd("MAIL FROM:<alice@example.com> SIZE=10000000")
	if r.code != 552 || !strings.HasPrefix(r.text(), "5.3.4") {
		t.Errorf("MAIL with SIZE over the limit: %v", r)
	}
	a.assertNothingStored()
}

func TestAttack_maxRecipients(t *testing.T) {
	a := newAttackServer(t, attackOpts{maxRcpts: 3})
	c := a.dial("")
	c.expect("EHLO app.example", 250)
	c.expect("AUTH PLAIN "+plainIR("", "alice", testPassword), 235)
	c.expect("MAIL FROM:<alice@example.com>", 250)
	for i := range 3 {
		c.expect(fmt.Sprintf("RCPT TO:<r%d@example.net>", i), 250)
	}
	for i := 3; i < 6; i++ {
		r := c.cmd(fmt.Sprintf("RCPT TO:<r%d@example.net>", i))
		if r.code != 452 || !strings.HasPrefix(r.text(), "4.5.3") {
			t.Errorf("recipient %d: %v", i+1, r)
		}
	}
}

// Unknown commands: a few are answered, then the connection is closed.
func TestAttack_invalidCommands(t *testing.T) {
	a := newAttackServer(t, attackOpts{})
	c := a.dial("")
	c.expect("EHLO scanner.example", 250)
	for _, junk := range []string{"GET / HTTP/1.1", "Host: relay.test", "USER root", "\x16\x03\x01"} {
		if r := c.cmd(junk); r.code != 500 && r.code != 501 {
			t.Errorf("%q: %v", junk, r)
		}
	}
	r := c.read()
	if r.code != 500 || !strings.Contains(r.text(), "Too many errors") {
		t.Errorf("after 4 errors: %v", r)
	}
	if !c.closed(hangGuard) {
		t.Error("connection left open after too many errors")
	}
}

// 200 idle connections that said EHLO cost little memory.
func TestAttack_idleConnectionsMemory(t *testing.T) {
	a := newAttackServer(t, attackOpts{maxConns: 1000, maxPerIP: 1000, log: slog.New(slog.DiscardHandler)})
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	goBefore := runtime.NumGoroutine()
	const n = 200
	for i := range n {
		c := a.dial(fmt.Sprintf("127.0.6.%d", i%250+1))
		c.expect("EHLO idle.example", 250)
	}
	after := heap()
	growth := int64(after) - int64(before)
	t.Logf("%d idle connections: heap %d → %d bytes (%+d, %d per connection), goroutines %d → %d",
		n, before, after, growth, growth/n, goBefore, runtime.NumGoroutine())
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB for %d idle connections", growth>>20, n)
	}
}
