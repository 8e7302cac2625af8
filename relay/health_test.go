package relay

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestUpstreamHealth(t *testing.T) {
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	p := newUpstreamPool(UpstreamConfig{Address: addr, TLS: TLSNone, DialTimeout: 2 * time.Second}, NewMetrics(nil))
	d := &Deliverer{up: p}
	if ok, failing := d.UpstreamHealth(); !ok.IsZero() || !failing.IsZero() {
		t.Fatalf("before any attempt: lastOK %v, failingSince %v; want both zero", ok, failing)
	}
	msg := "Subject: x\r\n\r\nhello\r\n"
	before := time.Now()
	if _, err := p.send("a@example.com", "b@example.net", int64(len(msg)), strings.NewReader(msg), false); err == nil {
		t.Fatal("send to a closed port succeeded")
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
	s, err := trySinkAt(t, addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
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
