package ratelimit

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Key is what per-client limits count by: an IPv4 address (an IPv4-mapped
// IPv6 one unmapped), or the /64 of an IPv6 address, since one IPv6 client
// is given a whole /64 and could otherwise take a new address for every
// attempt.
func Key(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// scanEvery is how often the idle clients are looked for.
const scanEvery = time.Minute

// Limiter holds a bucket of burst tokens for each client (Key), refilled
// at limit tokens a second. A nil *Limiter allows everything.
//
// A client idle long enough to have refilled its bucket, and a minute
// more, is forgotten: it would start again from a full bucket anyway.
type Limiter struct {
	limit rate.Limit
	burst int
	idle  time.Duration // 0: never forget (the buckets do not refill)

	mu       sync.Mutex
	byKey    map[netip.Addr]*entry
	lastScan time.Time
}

type entry struct {
	lim      *rate.Limiter
	seen     time.Time
	inflight int // attempts begun and not yet ended
}

// New returns a Limiter of burst tokens per client, refilled at limit a
// second.
func New(limit rate.Limit, burst int) *Limiter {
	l := &Limiter{limit: limit, burst: burst, byKey: map[netip.Addr]*entry{}}
	if limit > 0 {
		l.idle = time.Duration(float64(burst)/float64(limit)*float64(time.Second)) + time.Minute
	}
	return l
}

// Allow takes a token of ip's client at now, and reports whether there was
// one.
func (l *Limiter) Allow(ip netip.Addr, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.entry(Key(ip), now).lim.AllowN(now, 1)
}

// Begin starts an attempt of ip's client that is charged only if it fails
// (a login): it returns false, and the attempt must be refused, when the
// client has no token left, counting one for each attempt under way, so
// that attempts made at once cannot all pass before the first is charged.
// Otherwise End must be called once the attempt is decided.
func (l *Limiter) Begin(ip netip.Addr, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(Key(ip), now)
	if e.lim.TokensAt(now)-float64(e.inflight) < 1 {
		return false
	}
	e.inflight++
	return true
}

// End finishes an attempt begun by Begin, taking a token if it failed.
func (l *Limiter) End(ip netip.Addr, now time.Time, failed bool) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// The entry is there: one with an attempt under way is never forgotten.
	if e := l.byKey[Key(ip)]; e != nil {
		e.seen = now
		e.inflight--
		if failed {
			e.lim.AllowN(now, 1)
		}
	}
}

// entry returns the client's entry, made if need be and marked seen at now,
// forgetting idle clients once a scanEvery. l.mu must be held.
func (l *Limiter) entry(key netip.Addr, now time.Time) *entry {
	e := l.byKey[key]
	if e == nil {
		e = &entry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.byKey[key] = e
	}
	e.seen = now
	if l.idle > 0 && now.Sub(l.lastScan) > scanEvery {
		l.lastScan = now
		for k, v := range l.byKey {
			if v.inflight == 0 && now.Sub(v.seen) > l.idle {
				delete(l.byKey, k)
			}
		}
	}
	return e
}
