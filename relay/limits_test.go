package relay

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the reads that reach the socket.
type countingConn struct {
	net.Conn
	reads atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(b)
}

// read4K reads r to its end, or n bytes when n > 0, asking for at most
// 4 KiB a call, as go-smtp's textproto reader fills its buffer.
func read4K(r io.Reader, n int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for n <= 0 || len(out) < n {
		want := len(buf)
		if n > 0 {
			want = min(want, n-len(out))
		}
		k, err := r.Read(buf[:want])
		out = append(out, buf[:k]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// tcpPair is a connected pair of loopback TCP connections.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A stream read 4 KiB at a time, as go-smtp reads it, arrives byte for
// byte through the read-ahead, the end of the stream after its last byte,
// and in far fewer socket reads than 4 KiB ones.
func TestLimitConn_readAheadKeepsTheStream(t *testing.T) {
	client, server := tcpPair(t)
	cc := &countingConn{Conn: server}
	lc := &limitConn{Conn: cc, release: func() {}}

	// Commands, then a large body, then more commands after a pause: the
	// read-ahead must hand every byte on, in order.
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	var want bytes.Buffer
	want.WriteString("EHLO a\r\nMAIL FROM:<a@b.c>\r\n")
	want.Write(payload)
	want.WriteString("\r\n.\r\nQUIT\r\n")
	go func() {
		b := want.Bytes()
		client.Write(b[:20])
		time.Sleep(20 * time.Millisecond)
		client.Write(b[20 : len(b)-6])
		time.Sleep(20 * time.Millisecond)
		client.Write(b[len(b)-6:])
		client.Close()
	}()

	got, err := read4K(lc, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("stream changed: got %d bytes, want %d (sha %x, want %x)", len(got), want.Len(),
			sha256.Sum256(got), sha256.Sum256(want.Bytes()))
	}
	// 3 MiB in 4 KiB reads would be 768 socket reads.
	if n := cc.reads.Load(); n > 300 {
		t.Errorf("%d socket reads for 3 MiB: the read-ahead is not in use", n)
	}
	if lc.ahead != nil {
		t.Error("the read-ahead buffer is still held after the stream was drained")
	}
}

// blockedConn records the size of the buffer of the socket read under way.
type blockedConn struct {
	net.Conn
	inflight atomic.Int64 // 0 when no read is under way
}

func (c *blockedConn) Read(b []byte) (int, error) {
	c.inflight.Store(int64(len(b)))
	defer c.inflight.Store(0)
	return c.Conn.Read(b)
}

// A session that goes quiet after a burst (an idle client after a large
// message) waits on its socket with the caller's buffer, not a read-ahead
// one: the last read-ahead did not fill, so streaming ended.
func TestLimitConn_idleAfterBurstHoldsNoReadAhead(t *testing.T) {
	client, server := tcpPair(t)
	bc := &blockedConn{Conn: server}
	lc := &limitConn{Conn: bc, release: func() {}}
	burst := bytes.Repeat([]byte(strings.Repeat("x", 70)+"\r\n"), 200) // 14.4 KB
	client.Write(burst)
	time.Sleep(50 * time.Millisecond)
	if _, err := read4K(lc, len(burst)); err != nil {
		t.Fatal(err)
	}
	if lc.ahead != nil {
		t.Error("the read-ahead buffer is still held after the burst was read")
	}
	done := make(chan struct{})
	go func() { read4K(lc, 1); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for bc.inflight.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := bc.inflight.Load(); n >= readAheadSize {
		t.Errorf("an idle session waits with a %d-byte read-ahead buffer", n)
	}
	client.Close()
	<-done
}

// Past maxReadAheads reads waiting at once with a read-ahead buffer (clients
// that stall just after filling a read), reads go straight to the socket,
// and still lose nothing.
func TestLimitConn_readAheadsBounded(t *testing.T) {
	// Take every slot, as maxReadAheads stalled reads would.
	taken := 0
	for range maxReadAheads + 1 {
		select {
		case readAheadSlots <- struct{}{}:
			taken++
			continue
		default:
		}
		break
	}
	defer func() {
		for range taken {
			<-readAheadSlots
		}
	}()
	if taken != maxReadAheads {
		t.Fatalf("%d read-ahead slots free, want %d", taken, maxReadAheads)
	}
	client, server := tcpPair(t)
	cc := &countingConn{Conn: server}
	lc := &limitConn{Conn: cc, release: func() {}}
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	go func() { client.Write(payload); client.Close() }()
	got, err := read4K(lc, 0)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("stream changed without read-ahead buffers (%d bytes, %v)", len(got), err)
	}
	if lc.ahead != nil {
		t.Error("a read-ahead buffer was used past the bound")
	}
	if n := cc.reads.Load(); n < 256 {
		t.Errorf("%d socket reads for 1 MiB in 4 KiB reads: a read-ahead was used past the bound", n)
	}
}

// A command that does not fill the caller's buffer is read straight into
// it: no pooled buffer is taken for an idle session.
func TestLimitConn_commandsBypassReadAhead(t *testing.T) {
	client, server := tcpPair(t)
	lc := &limitConn{Conn: server, release: func() {}}
	client.Write([]byte("NOOP\r\n"))
	b := make([]byte, 4096)
	n, err := lc.Read(b)
	if err != nil || string(b[:n]) != "NOOP\r\n" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
	if lc.ahead != nil || lc.streaming {
		t.Error("a short command engaged the read-ahead")
	}
}

// A read timeout stays final with the read-ahead, after any bytes already
// read ahead are handed on.
func TestLimitConn_timeoutAfterReadAhead(t *testing.T) {
	client, server := tcpPair(t)
	lc := &limitConn{Conn: server, release: func() {}}
	data := bytes.Repeat([]byte("x"), 20000)
	client.Write(data)
	time.Sleep(50 * time.Millisecond)
	br := bufio.NewReaderSize(lc, 4096)
	got := make([]byte, len(data))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := br.ReadByte(); !os.IsTimeout(err) {
		t.Fatalf("want a timeout, got %v", err)
	}
	server.SetReadDeadline(time.Time{})
	client.Write([]byte("more\r\n"))
	if _, err := lc.Read(make([]byte, 10)); !os.IsTimeout(err) {
		t.Fatalf("a read after the timeout: want the timeout again, got %v", err)
	}
}

// Through the real server: a large message whose end of data shares a
// write with the next transaction's commands (as a pipelining client
// sends them) is stored intact, and so is the next message.
func TestServer_pipelinedAfterLargeMessage(t *testing.T) {
	h := newHarness(t, harnessOpts{maxSize: 8 << 20})
	c := h.dial("")
	c.startData("bob@example.net")
	var body strings.Builder
	body.WriteString("Subject: big\r\n\r\n")
	line := strings.Repeat("0123456789", 7) + "\r\n"
	for body.Len() < 2<<20 {
		body.WriteString(line)
	}
	c.write(body.String() + ".\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n")
	for _, want := range []int{250, 250, 250, 354} {
		if r := c.read(); r.code != want {
			t.Fatalf("pipelined replies: want %d, got %v", want, r)
		}
	}
	c.write("Subject: small\r\n\r\nhello\r\n.\r\n")
	if r := c.read(); r.code != 250 {
		t.Fatalf("second message: %v", r)
	}
	c.expect("QUIT", 221)

	// Both messages reach the outbox, the large one byte for byte.
	deadline := time.Now().Add(10 * time.Second)
	var files []string
	for time.Now().Before(deadline) {
		files, _ = filepath.Glob(filepath.Join(h.dir, "outbox", "*.eml"))
		if len(files) == 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(files) != 2 {
		t.Fatalf("outbox holds %d copies, want 2", len(files))
	}
	var sawBig, sawSmall bool
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case bytes.HasSuffix(b, []byte("\r\n\r\n"+body.String()[len("Subject: big\r\n\r\n"):])):
			sawBig = true
		case bytes.HasSuffix(b, []byte("Subject: small\r\n\r\nhello\r\n")):
			sawSmall = true
		}
	}
	if !sawBig || !sawSmall {
		t.Errorf("outbox copies not intact: large %v, small %v", sawBig, sawSmall)
	}
}

// A session that ends with bytes still read ahead (a client cut off while
// it streams: a line too long, a message too large) leaves no read-ahead
// slot taken: slots are held only across a socket read.
func TestLimitConn_abandonedReadAheadKeepsNoSlot(t *testing.T) {
	before := len(readAheadSlots)
	client, server := tcpPair(t)
	lc := &limitConn{Conn: server, release: func() {}}
	client.Write(bytes.Repeat([]byte("x"), 200<<10))
	time.Sleep(50 * time.Millisecond)
	if _, err := read4K(lc, 8192); err != nil {
		t.Fatal(err)
	}
	if lc.ahead == nil {
		t.Fatal("the read-ahead was not in use")
	}
	lc.Close()
	if n := len(readAheadSlots); n != before {
		t.Errorf("%d read-ahead slots taken after the session ended, want %d", n, before)
	}
}
