package relay

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/internal/ratelimit"
)

// connLimiter caps the connections held open at once, overall and per
// client IP. Over the cap a client gets 421 and is disconnected at once,
// before any session is made for it.
type connLimiter struct {
	max, perIP int

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

func newConnLimiter(max, perIP int) *connLimiter {
	return &connLimiter{max: max, perIP: perIP, byIP: map[netip.Addr]int{}}
}

func (cl *connLimiter) wrap(l net.Listener, m *Metrics) net.Listener {
	return &limitListener{Listener: l, cl: cl, m: m}
}

func (cl *connLimiter) acquire(ip netip.Addr) bool {
	ip = ratelimit.Key(ip)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.max > 0 && cl.total >= cl.max {
		return false
	}
	if cl.perIP > 0 && cl.byIP[ip] >= cl.perIP {
		return false
	}
	cl.total++
	cl.byIP[ip]++
	return true
}

func (cl *connLimiter) release(ip netip.Addr) {
	ip = ratelimit.Key(ip)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.total--
	if cl.byIP[ip]--; cl.byIP[ip] <= 0 {
		delete(cl.byIP, ip)
	}
}

type limitListener struct {
	net.Listener
	cl *connLimiter
	m  *Metrics
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var ip netip.Addr
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			ip = ap.Addr().Unmap()
		}
		if !l.cl.acquire(ip) {
			l.m.connRejected.Inc()
			go func() {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("421 4.7.0 Too many connections, try again later\r\n"))
				c.Close()
			}()
			continue
		}
		return &limitConn{Conn: c, release: func() { l.cl.release(ip) }}, nil
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()

	timedOut error // the read timeout that ended the session

	// Read-ahead while a client streams: go-smtp reads its connection 4 KiB
	// at a time, one system call each, which on a large message is most of
	// the kernel's share of receiving it. Once a read fills the caller's
	// buffer, the next reads go through ahead, a pooled 64 KiB buffer given
	// back when drained, for as long as each fills it. Commands, which never
	// fill a read, bypass it. A read that waits on the socket may hold the
	// buffer (a client that stalls just after filling a read), so at most
	// maxReadAheads such reads wait at once; past that, reads go straight
	// through. A session that ends before draining its buffer leaves it to
	// the garbage collector, and no slot taken.
	ahead     *[]byte
	ar, aw    int   // unread bytes of ahead are ahead[ar:aw]
	aheadErr  error // came with the bytes read ahead; given after them
	streaming bool  // the last read filled its buffer
}

// readAheadSize is the most a connection reads from its socket at once;
// maxReadAheads bounds the read-ahead buffers waiting on sockets to 8 MiB.
const (
	readAheadSize = 64 << 10
	maxReadAheads = 128
)

var (
	readAheadBufs  = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}
	readAheadSlots = make(chan struct{}, maxReadAheads)
)

// readAhead reads the socket into a read-ahead buffer. It returns nil
// when maxReadAheads reads already wait, and the caller reads straight
// into its own buffer.
func (c *limitConn) readAhead() (*[]byte, int, error) {
	select {
	case readAheadSlots <- struct{}{}:
	default:
		return nil, 0, nil
	}
	buf := readAheadBufs.Get().(*[]byte)
	n, err := c.read(*buf)
	<-readAheadSlots
	return buf, n, err
}

// Read makes a read timeout final. On a timeout bufio hands go-smtp the
// part of a line read so far as if it were a whole line, and go-smtp resets
// the deadline and reads on: a client trickling bytes would have its
// fragments run as commands and never be cut. After a timeout every read
// fails, so the session ends with 421. Reads are never concurrent.
func (c *limitConn) Read(b []byte) (int, error) {
	if c.ahead != nil {
		n := copy(b, (*c.ahead)[c.ar:c.aw])
		c.ar += n
		if c.ar < c.aw {
			return n, nil
		}
		readAheadBufs.Put(c.ahead)
		c.ahead = nil
		err := c.aheadErr
		c.aheadErr = nil
		return n, err
	}
	if c.timedOut != nil {
		return 0, c.timedOut
	}
	if c.streaming && len(b) < readAheadSize {
		if buf, n, err := c.readAhead(); buf != nil {
			c.streaming = n == len(*buf)
			if n == 0 {
				readAheadBufs.Put(buf)
				return 0, err
			}
			c.ahead, c.ar, c.aw, c.aheadErr = buf, 0, n, err
			return c.Read(b)
		}
	}
	n, err := c.read(b)
	c.streaming = n == len(b) && n > 0
	return n, err
}

func (c *limitConn) read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.timedOut = err
	}
	return n, err
}

func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
