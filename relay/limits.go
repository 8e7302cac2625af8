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

	readAhead // while a client streams (readahead.go)
}

// Read makes a read timeout final. On a timeout bufio hands go-smtp the
// part of a line read so far as if it were a whole line, and go-smtp resets
// the deadline and reads on: a client trickling bytes would have its
// fragments run as commands and never be cut. After a timeout every read
// fails, so the session ends with 421. Reads are never concurrent.
func (c *limitConn) Read(b []byte) (int, error) {
	return c.readThrough(b, c.read)
}

// read reads the socket, once no read has timed out.
func (c *limitConn) read(b []byte) (int, error) {
	if c.timedOut != nil {
		return 0, c.timedOut
	}
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
