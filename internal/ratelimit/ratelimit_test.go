package ratelimit

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":               "192.0.2.7",
		"::ffff:192.0.2.7":        "192.0.2.7", // a dual-stack socket's IPv4 client
		"2001:db8:1:2:3:4:5:6":    "2001:db8:1:2::",
		"2001:db8:1:2:ffff::1":    "2001:db8:1:2::",
		"2001:db8:1:3::1":         "2001:db8:1:3::",
		"fe80::1%eth0":            "fe80::",
		"::1":                     "::",
		"2001:db8::ffff:c000:207": "2001:db8::",
	} {
		if got := Key(netip.MustParseAddr(in)); got != netip.MustParseAddr(want) {
			t.Errorf("Key(%s) = %s, want %s", in, got, want)
		}
	}
	if got := Key(netip.Addr{}); got.IsValid() {
		t.Errorf("Key of no address = %s", got)
	}
}

// A client gets its burst, then one a refill interval; the other clients
// keep theirs, and one IPv6 /64 is one client.
func TestLimiter_Allow(t *testing.T) {
	l := New(1, 3) // 3 at once, then 1 a second
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := range 3 {
		if !l.Allow(a, t0) {
			t.Fatalf("hit %d of the burst refused", i)
		}
	}
	if l.Allow(a, t0) {
		t.Fatal("hit past the burst allowed")
	}
	if !l.Allow(b, t0) {
		t.Fatal("another client refused")
	}
	if l.Allow(a, t0.Add(999*time.Millisecond)) {
		t.Fatal("allowed before a token came back")
	}
	if !l.Allow(a, t0.Add(time.Second)) {
		t.Fatal("refused once a token came back")
	}
	v6 := func(host byte) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 7: 1, 15: host})
	}
	for i := range 3 {
		if !l.Allow(v6(byte(i)), t0) {
			t.Fatalf("IPv6 hit %d refused", i)
		}
	}
	if l.Allow(v6(200), t0) {
		t.Fatal("a new address in the same /64 got a fresh burst")
	}
}

// Logins: only failures are charged, and attempts under way count, so that
// a burst sent on many connections at once cannot all be checked.
func TestLimiter_BeginEnd(t *testing.T) {
	l := New(rate.Every(30*time.Second), 2)
	ip := netip.MustParseAddr("198.51.100.4")
	if !l.Begin(ip, t0) || !l.Begin(ip, t0) {
		t.Fatal("attempts within the burst refused")
	}
	if l.Begin(ip, t0) {
		t.Fatal("a third attempt begun while two are under way")
	}
	l.End(ip, t0, false)
	l.End(ip, t0, false)
	for i := range 5 { // successes cost nothing
		if !l.Begin(ip, t0) {
			t.Fatalf("attempt %d after successes refused", i)
		}
		l.End(ip, t0, false)
	}
	for range 2 {
		if !l.Begin(ip, t0) {
			t.Fatal("attempt refused before any failure")
		}
		l.End(ip, t0, true)
	}
	if l.Begin(ip, t0.Add(29*time.Second)) {
		t.Fatal("attempt allowed after the burst of failures")
	}
	if !l.Begin(ip, t0.Add(30*time.Second)) {
		t.Fatal("attempt refused once a failure was paid back")
	}
	if !l.Begin(netip.MustParseAddr("198.51.100.5"), t0) {
		t.Fatal("another client refused")
	}
}

// Guesses sent on many connections at once: only the burst begins.
func TestLimiter_BeginConcurrent(t *testing.T) {
	l := New(rate.Every(30*time.Second), 5)
	var begun atomic.Int32
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			// Each from its own address in one /64, none yet ended.
			if l.Begin(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}), t0) {
				begun.Add(1)
			}
		})
	}
	wg.Wait()
	if n := begun.Load(); n != 5 {
		t.Fatalf("%d attempts begun at once, want the burst of 5", n)
	}
}

// Idle clients are forgotten once their bucket is full again, never while
// an attempt is under way; a forgotten client starts from a full bucket,
// as it would have had.
func TestLimiter_forgetsIdleClients(t *testing.T) {
	l := New(1, 10) // refilled in 10s: forgotten after 1m10s
	busy, idle := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if !l.Begin(busy, t0) {
		t.Fatal("refused")
	}
	for range 10 {
		l.Allow(idle, t0)
	}
	l.Allow(netip.MustParseAddr("192.0.2.3"), t0.Add(70*time.Second)) // a scan, before the idle one is due
	if len(l.byKey) != 3 {
		t.Fatalf("%d clients held after 70s, want 3", len(l.byKey))
	}
	l.Allow(netip.MustParseAddr("192.0.2.4"), t0.Add(131*time.Second)) // next scan
	if _, ok := l.byKey[Key(idle)]; ok {
		t.Error("idle client not forgotten")
	}
	if _, ok := l.byKey[Key(busy)]; !ok {
		t.Error("client with an attempt under way forgotten")
	}
	for i := range 10 {
		if !l.Allow(idle, t0.Add(131*time.Second)) {
			t.Fatalf("forgotten client refused at hit %d of its burst", i)
		}
	}
}

func TestLimiter_nilAllowsEverything(t *testing.T) {
	var l *Limiter
	ip := netip.MustParseAddr("192.0.2.1")
	for range 100 {
		if !l.Allow(ip, t0) || !l.Begin(ip, t0) {
			t.Fatal("a nil limiter refused")
		}
		l.End(ip, t0, true)
	}
}
