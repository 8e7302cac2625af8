package tracker

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of the per-address recording limit.
const (
	DefaultRecordRate  = 20  // hits recorded per second and client address
	DefaultRecordBurst = 200 // hits recorded at once before the rate applies
)

// recordLimiter keeps one client address from filling the store: past its
// rate a hit is still answered (the pixel, the redirect), but not recorded.
// The rate is generous for people and mail clients; an image proxy serving
// many readers from one address stays far below it for a small sender.
// IPv6 clients are limited by their /64, which one host can fill freely.
type recordLimiter struct {
	limit rate.Limit
	burst int

	mu       sync.Mutex
	byAddr   map[netip.Addr]*limitEntry
	lastScan time.Time
}

type limitEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

// newRecordLimiter returns nil (no limit) when perSecond is negative.
func newRecordLimiter(perSecond float64, burst int) *recordLimiter {
	if perSecond < 0 {
		return nil
	}
	if perSecond == 0 {
		perSecond = DefaultRecordRate
	}
	if burst <= 0 {
		burst = DefaultRecordBurst
	}
	return &recordLimiter{limit: rate.Limit(perSecond), burst: burst, byAddr: map[netip.Addr]*limitEntry{}}
}

// allow reports whether a hit from ip may be recorded now.
func (l *recordLimiter) allow(ip netip.Addr, now time.Time) bool {
	if l == nil {
		return true
	}
	key := ip.Unmap()
	if key.Is6() {
		if p, err := key.Prefix(64); err == nil {
			key = p.Addr()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.byAddr[key]
	if e == nil {
		e = &limitEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.byAddr[key] = e
	}
	e.seen = now
	if now.Sub(l.lastScan) > time.Minute {
		// Forget addresses idle long enough to have refilled their bucket.
		l.lastScan = now
		idle := time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)) + time.Minute
		for k, v := range l.byAddr {
			if now.Sub(v.seen) > idle {
				delete(l.byAddr, k)
			}
		}
	}
	return e.lim.AllowN(now, 1)
}
