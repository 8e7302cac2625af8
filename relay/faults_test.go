package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// scriptedUpstream is a raw TCP SMTP server whose n-th connection is
// handled by behave(n, conn): for failures go-smtp would never produce.
func scriptedUpstream(t *testing.T, behave func(n int, c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				behave(int(n.Add(1)), c)
			}()
		}
	}()
	return ln.Addr().String()
}

// speak runs a minimal SMTP dialogue up to DATA's 354 and returns the
// reader positioned at the message data.
func speak(c net.Conn) *bufio.Reader {
	r := bufio.NewReader(c)
	c.Write([]byte("220 scripted ESMTP\r\n"))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			c.Write([]byte("250-scripted\r\n250 8BITMIME\r\n"))
		case cmd == "DATA":
			c.Write([]byte("354 go ahead\r\n"))
			return r
		case cmd == "QUIT":
			c.Write([]byte("221 bye\r\n"))
			return nil
		default:
			c.Write([]byte("250 ok\r\n"))
		}
	}
}

// readData consumes a message's DATA up to the terminating dot.
func readData(r *bufio.Reader) {
	for {
		line, err := r.ReadString('\n')
		if err != nil || line == ".\r\n" {
			return
		}
	}
}

func deliveryHarness(t *testing.T, up UpstreamConfig) (*Deliverer, *Spool, *memLedger) {
	t.Helper()
	spool, err := OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ledger := newMemLedger()
	up.TLS = TLSNone
	d := NewDeliverer(DeliveryConfig{Upstream: &up, RetryInitial: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond},
		spool, ledger, testMinters{}, testLogger(t), nil)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Shutdown(shutdownCtx(t))
		spool.Close()
	})
	return d, spool, ledger
}

func enqueue(t *testing.T, d *Deliverer, s *Spool, from string, rcpts ...string) *Envelope {
	t.Helper()
	env := &Envelope{From: from, Mode: ModeAll, AcceptedAt: time.Now().UTC()}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, Recipient{Address: r, Tracked: true, Status: StatusQueued})
	}
	if err := s.Enqueue(env, []byte(crlf(htmlMsg))); err != nil {
		t.Fatal(err)
	}
	d.Submit(env, true)
	return env
}

func TestDelivery_connectionDroppedMidData(t *testing.T) {
	var got atomic.Value
	addr := scriptedUpstream(t, func(n int, c net.Conn) {
		r := speak(c)
		if r == nil {
			return
		}
		if n == 1 {
			buf := make([]byte, 100)
			r.Read(buf) // take part of the message, then vanish
			return
		}
		var b bytes.Buffer
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == ".\r\n" {
				break
			}
			b.WriteString(line)
		}
		got.Store(b.String())
		c.Write([]byte("250 2.0.0 kept\r\n"))
		speak(c)
	})
	d, s, ledger := deliveryHarness(t, UpstreamConfig{Address: addr})
	env := enqueue(t, d, s, "alice@example.com", "bob@example.net")
	r := ledger.waitStatus(t, env.ID, 0, StatusDelivered)
	if r.Attempts != 2 {
		t.Errorf("attempts %d, want 2 (one cut off, one delivered)", r.Attempts)
	}
	if v, _ := got.Load().(string); !strings.Contains(v, "Subject: Your quote") {
		t.Errorf("second attempt delivered %q", v)
	}
}

// An upstream that accepts the connection and never says a word does not
// hold the attempt: it fails on the command timeout and the copy is
// deferred.
func TestDelivery_hungUpstreamTimesOut(t *testing.T) {
	addr := scriptedUpstream(t, func(n int, c net.Conn) {
		io.Copy(io.Discard, c) // says nothing at all, until the client leaves
	})
	d, s, ledger := deliveryHarness(t, UpstreamConfig{Address: addr, CommandTimeout: 300 * time.Millisecond, DialTimeout: 300 * time.Millisecond})
	env := enqueue(t, d, s, "alice@example.com", "bob@example.net")
	r := ledger.waitStatus(t, env.ID, 0, StatusDeferred)
	if !strings.Contains(r.LastResponse, "timeout") {
		t.Errorf("last response %q", r.LastResponse)
	}
}

func TestDelivery_421ThenAccepted(t *testing.T) {
	addr := scriptedUpstream(t, func(n int, c net.Conn) {
		if n == 1 {
			c.Write([]byte("421 4.3.2 busy, come back later\r\n"))
			return
		}
		r := speak(c)
		if r == nil {
			return
		}
		readData(r)
		c.Write([]byte("250 2.0.0 ok\r\n"))
		speak(c)
	})
	d, s, ledger := deliveryHarness(t, UpstreamConfig{Address: addr})
	env := enqueue(t, d, s, "alice@example.com", "bob@example.net")
	r := ledger.waitStatus(t, env.ID, 0, StatusDelivered)
	if r.Attempts != 2 {
		t.Errorf("attempts %d, want 2", r.Attempts)
	}
}

func TestDelivery_delayedNoticeOnce(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true})
	h.d.cfg.DelayWarning = time.Millisecond
	h.sink.reply = func(rcpt string, n int) error {
		if rcpt == "bob@example.net" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "greylisted"}
		}
		return nil
	}
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	msgs := h.sink.waitFor(t, 1)
	if msgs[0].To != "alice@example.com" || !bytes.Contains(msgs[0].Data, []byte("Action: delayed")) || !bytes.Contains(msgs[0].Data, []byte("Status: 4.4.1")) {
		t.Fatalf("delayed notice:\n%s", msgs[0].Data)
	}
	// More failed attempts, but no second notice.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if r, _ := h.ledger.get(id, 0); r.Attempts >= 3 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(h.sink.messages()); n != 1 {
		t.Fatalf("%d notices, want 1", n)
	}
}

func TestDelivery_expiryBounces(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true, lifetime: time.Millisecond})
	h.sink.reply = func(rcpt string, n int) error {
		if rcpt == "bob@example.net" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "later"}
		}
		return nil
	}
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	if err != nil {
		t.Fatal(err)
	}
	r := h.ledger.waitStatus(t, queueID(t, reply), 0, StatusBounced)
	if !strings.HasPrefix(r.LastResponse, "message expired") {
		t.Errorf("last response %q", r.LastResponse)
	}
	msgs := h.sink.waitFor(t, 1)
	if !bytes.Contains(msgs[0].Data, []byte("Status: 4.4.7")) || !bytes.Contains(msgs[0].Data, []byte("Action: failed")) {
		t.Errorf("expiry bounce:\n%s", msgs[0].Data)
	}
}

func TestServer_diskFailureDuringAccept(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.spool.writeFault = errors.New("no space left on device")
	_, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || strings.Contains(se.Message, "space") {
		t.Fatalf("want a 451 that does not leak the cause, got %v", err)
	}
	h.spool.writeFault = nil
	h.assertNothingStored() // no half-stored message
	// The next message goes through.
	if _, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg)); err != nil {
		t.Fatal(err)
	}
}

func TestAdmin_queueCommands(t *testing.T) {
	h := newHarness(t, harnessOpts{upstream: true, retry: time.Hour})
	h.sink.reply = func(rcpt string, n int) error {
		if n == 0 && rcpt != "alice@example.com" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
		}
		return nil
	}
	reply1, _ := h.send("alice@example.com", []string{"bob@example.net"}, crlf(htmlMsg))
	reply2, _ := h.send("alice@example.com", []string{"carol@example.net"}, crlf(htmlMsg))
	id1, id2 := queueID(t, reply1), queueID(t, reply2)
	h.ledger.waitStatus(t, id1, 0, StatusDeferred)
	h.ledger.waitStatus(t, id2, 0, StatusDeferred)

	list, err := h.spool.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("queue list: %d entries, %v", len(list), err)
	}
	if _, err := h.spool.Get("NOPE"); !errors.Is(err, ErrNoSuchMessage) {
		t.Errorf("show unknown: %v", err)
	}
	// Retry one now: it goes through on its second attempt without waiting an hour.
	if n, released, err := h.d.Retry(id1); n != 1 || released != 0 || err != nil {
		t.Fatalf("retry: %d rescheduled, %d released, %v", n, released, err)
	}
	h.ledger.waitStatus(t, id1, 0, StatusDelivered)
	// Delete the other with a bounce.
	if err := h.d.Delete(id2, true); err != nil {
		t.Fatalf("delete: %v", err)
	}
	r := h.ledger.waitStatus(t, id2, 0, StatusBounced)
	if !strings.Contains(r.LastResponse, "operator") {
		t.Errorf("last response %q", r.LastResponse)
	}
	if _, err := h.spool.Get(id2); !errors.Is(err, ErrNoSuchMessage) {
		t.Errorf("deleted message still queued: %v", err)
	}
	var dsn bool
	for _, m := range h.sink.waitFor(t, 2) {
		if m.To == "alice@example.com" && bytes.Contains(m.Data, []byte("carol@example.net")) {
			dsn = true
		}
	}
	if !dsn {
		t.Error("no bounce for the deleted message")
	}
}

// An upstream that drops a cached connection while it is idle costs no
// failed attempt: the dead connection is found (by the RSET before reuse)
// and a new one is dialled.
func TestDelivery_idleConnectionDroppedByUpstream(t *testing.T) {
	addr := scriptedUpstream(t, func(n int, c net.Conn) {
		r := speak(c)
		if r == nil {
			return
		}
		readData(r)
		c.Write([]byte("250 2.0.0 ok\r\n"))
		if n == 1 {
			return // hang up on the idle connection
		}
		speak(c)
	})
	d, s, ledger := deliveryHarness(t, UpstreamConfig{Address: addr})
	first := enqueue(t, d, s, "alice@example.com", "bob@example.net")
	ledger.waitStatus(t, first.ID, 0, StatusDelivered)
	time.Sleep(100 * time.Millisecond) // the upstream has closed the idle connection
	second := enqueue(t, d, s, "alice@example.com", "carol@example.net")
	r := ledger.waitStatus(t, second.ID, 0, StatusDelivered)
	if r.Attempts != 1 {
		t.Errorf("attempts %d, want 1: a dropped idle connection cost an attempt", r.Attempts)
	}
}

// A cached connection is reset before its next transaction.
func TestDelivery_rsetBetweenMessages(t *testing.T) {
	var mu sync.Mutex
	var cmds []string
	addr := scriptedUpstream(t, func(n int, c net.Conn) {
		r := bufio.NewReader(c)
		c.Write([]byte("220 scripted ESMTP\r\n"))
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.ToUpper(strings.TrimSpace(line))
			verb, _, _ := strings.Cut(cmd, " ")
			verb, _, _ = strings.Cut(verb, ":")
			mu.Lock()
			cmds = append(cmds, fmt.Sprint(n, verb))
			mu.Unlock()
			switch verb {
			case "EHLO":
				c.Write([]byte("250-scripted\r\n250 8BITMIME\r\n"))
			case "DATA":
				c.Write([]byte("354 go ahead\r\n"))
				readData(r)
				c.Write([]byte("250 2.0.0 ok\r\n"))
			case "QUIT":
				c.Write([]byte("221 bye\r\n"))
				return
			default:
				c.Write([]byte("250 ok\r\n"))
			}
		}
	})
	d, s, ledger := deliveryHarness(t, UpstreamConfig{Address: addr, MaxConnections: 1})
	first := enqueue(t, d, s, "alice@example.com", "bob@example.net")
	ledger.waitStatus(t, first.ID, 0, StatusDelivered)
	second := enqueue(t, d, s, "alice@example.com", "carol@example.net")
	ledger.waitStatus(t, second.ID, 0, StatusDelivered)
	mu.Lock()
	got := strings.Join(cmds, " ")
	mu.Unlock()
	// go-smtp's client greets again after RSET; what matters is that the
	// second transaction reuses connection 1, after a RSET.
	if !regexp.MustCompile(`^1EHLO 1MAIL 1RCPT 1DATA 1RSET (1EHLO )?1MAIL 1RCPT 1DATA$`).MatchString(got) {
		t.Errorf("upstream saw %q, want a RSET between the two transactions on one connection", got)
	}
}

// An upstream that takes DATA and then stops reading must not hold the
// attempt: each write of the body is bounded by the command timeout.
func TestUpstream_stalledDuringBodyTimesOut(t *testing.T) {
	release := make(chan struct{})
	addr := scriptedUpstream(t, func(n int, c net.Conn) {
		if speak(c) != nil {
			<-release // reads no more, and keeps the connection, until the test ends
		}
	})
	t.Cleanup(func() { close(release) })
	p := newUpstreamPool(UpstreamConfig{Address: addr, TLS: TLSNone, MaxConnections: 1,
		CommandTimeout: 300 * time.Millisecond, DataTimeout: time.Hour}, NewMetrics(nil))
	defer p.Close()
	body := strings.Repeat(strings.Repeat("a", 76)+"\r\n", 400_000) // 31 MB: more than any socket buffer
	// The data timeout is far beyond the test's patience: only the
	// command timeout, per write, can end the transfer.
	sent := make(chan error, 1)
	go func() {
		_, err := p.send("a@example.com", "b@example.net", int64(len(body)), strings.NewReader(body), false)
		sent <- err
	}()
	var err error
	select {
	case err = <-sent:
	case <-time.After(hangGuard):
		t.Fatalf("a stalled upstream still held the transfer after %v", hangGuard)
	}
	if err == nil {
		t.Fatal("a stalled upstream took the message")
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", err)
	}
}

// A slow upstream that keeps reading gets the whole body, however long the
// transfer takes: the timeout is per write, not per message.
func TestUpstream_slowButLiveUpstreamTakesTheBody(t *testing.T) {
	var got atomic.Int64
	addr := scriptedUpstream(t, func(n int, c net.Conn) {
		r := speak(c)
		if r == nil {
			return
		}
		buf := make([]byte, 64<<10)
		var tail []byte
		for {
			k, err := r.Read(buf)
			got.Add(int64(k))
			tail = append(tail, buf[:k]...)
			tail = tail[max(0, len(tail)-5):]
			if err != nil || string(tail) == "\r\n.\r\n" {
				break
			}
			time.Sleep(6 * time.Millisecond) // at most 10 MB/s
		}
		c.Write([]byte("250 ok\r\n"))
		for { // RSET, QUIT
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(strings.ToUpper(line), "QUIT") {
				c.Write([]byte("221 bye\r\n"))
				return
			}
			c.Write([]byte("250 ok\r\n"))
		}
	})
	p := newUpstreamPool(UpstreamConfig{Address: addr, TLS: TLSNone, MaxConnections: 1,
		CommandTimeout: time.Second, DataTimeout: time.Minute}, NewMetrics(nil))
	defer p.Close()
	body := strings.Repeat(strings.Repeat("a", 76)+"\r\n", 400_000) // 31 MB: a second or more at that pace
	start := time.Now()
	if _, err := p.send("a@example.com", "b@example.net", int64(len(body)), strings.NewReader(body), false); err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("the transfer took %v, under twice the timeout: the test proves nothing", d)
	}
	if got.Load() < int64(len(body)) {
		t.Errorf("upstream read %d of %d bytes", got.Load(), len(body))
	}
}

// A panic in the middle of a transaction closes its upstream connection:
// it is neither reused nor left open at the upstream.
func TestUpstream_panicClosesTheConnection(t *testing.T) {
	closed := make(chan int, 4)
	addr := scriptedUpstream(t, func(n int, c net.Conn) {
		r := speak(c)
		if r != nil {
			readData(r) // until the end of the data, or the connection's
		}
		closed <- n
	})
	p := newUpstreamPool(UpstreamConfig{Address: addr, TLS: TLSNone, MaxConnections: 1}, NewMetrics(nil))
	defer p.Close()
	body := &panicReader{r: strings.NewReader(crlf(htmlMsg))}
	func() {
		defer func() {
			if v := recover(); v == nil {
				t.Fatal("the body's panic did not reach the caller")
			}
		}()
		p.send("a@example.com", "b@example.net", 1000, body, false)
	}()
	select {
	case n := <-closed:
		if n != 1 {
			t.Errorf("connection %d ended, want the first", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection of the panicked transaction is still open")
	}
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if idle != 0 {
		t.Errorf("%d idle connections kept", idle)
	}
}

// panicReader panics once the first bytes have been read.
type panicReader struct {
	r    io.ReadSeeker
	read bool
}

func (p *panicReader) Read(b []byte) (int, error) {
	if p.read {
		panic("body read failure")
	}
	p.read = true
	return p.r.Read(b[:min(len(b), 20)])
}

func (p *panicReader) Seek(off int64, whence int) (int64, error) { return p.r.Seek(off, whence) }
