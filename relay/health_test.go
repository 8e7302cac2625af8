//go:build unix

package relay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reservePort holds a loopback port with a socket that is bound but not
// listening: connections to it are refused, and no other socket can take
// the port, until listen makes that socket a listener on it.
func reservePort(t *testing.T) (addr string, listen func() net.Listener) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "reserved port")
	t.Cleanup(func() { f.Close() })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	return addr, func() net.Listener {
		t.Helper()
		if err := syscall.Listen(fd, syscall.SOMAXCONN); err != nil {
			t.Fatal(err)
		}
		ln, err := net.FileListener(f)
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
}

func TestUpstreamHealth(t *testing.T) {
	// A port that refuses connections, held so that the upstream can come
	// back on it.
	addr, listen := reservePort(t)

	p := newUpstreamPool(UpstreamConfig{Address: addr, TLS: TLSNone, DialTimeout: 2 * time.Second}, NewMetrics(nil))
	d := &Deliverer{up: p}
	if ok, failing := d.UpstreamHealth(); !ok.IsZero() || !failing.IsZero() {
		t.Fatalf("before any attempt: lastOK %v, failingSince %v; want both zero", ok, failing)
	}
	msg := "Subject: x\r\n\r\nhello\r\n"
	before := time.Now()
	_, err := p.send("a@example.com", "b@example.net", int64(len(msg)), strings.NewReader(msg), false)
	if ce, ok := err.(connError); !ok || !errors.Is(ce.err, syscall.ECONNREFUSED) {
		t.Fatalf("send to a port that refuses connections: %v", err)
	}
	ok, failing := d.UpstreamHealth()
	if !ok.IsZero() || failing.Before(before) {
		t.Fatalf("after a failed dial: lastOK %v, failingSince %v; want zero and >= %v", ok, failing, before)
	}
	// A second failure keeps the start of the outage.
	p.send("a@example.com", "b@example.net", int64(len(msg)), strings.NewReader(msg), false)
	if _, f2 := d.UpstreamHealth(); !f2.Equal(failing) {
		t.Errorf("failingSince moved from %v to %v", failing, f2)
	}

	// The upstream comes back on the same address.
	s := startSink(t, listen(), nil)
	if _, err := p.send("a@example.com", "b@example.net", int64(len(msg)), strings.NewReader(msg), false); err != nil {
		t.Fatalf("send to the sink: %v", err)
	}
	s.waitFor(t, 1)
	ok, failing = d.UpstreamHealth()
	if ok.Before(before) || !failing.IsZero() {
		t.Fatalf("after a delivery: lastOK %v, failingSince %v; want recent and zero", ok, failing)
	}
	p.Close()

	// Capture mode has no upstream.
	if ok, failing := (&Deliverer{}).UpstreamHealth(); !ok.IsZero() || !failing.IsZero() {
		t.Errorf("capture mode: %v %v", ok, failing)
	}
}
