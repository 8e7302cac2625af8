package relay

import (
	"sync"
	"time"
)

// upstreamHealth remembers when the upstream last answered and since when
// it has been failing, for readiness checks.
type upstreamHealth struct {
	mu           sync.Mutex
	lastOK       time.Time
	failingSince time.Time
}

// ok records an exchange in which the upstream answered.
func (h *upstreamHealth) ok() {
	h.mu.Lock()
	h.lastOK = time.Now()
	h.failingSince = time.Time{}
	h.mu.Unlock()
}

// failed records a failure to reach or to set up a session with the upstream.
func (h *upstreamHealth) failed() {
	h.mu.Lock()
	if h.failingSince.IsZero() {
		h.failingSince = time.Now()
	}
	h.mu.Unlock()
}

// UpstreamHealth reports when the upstream last answered and, when every
// attempt since has failed to reach it, when that began (zero otherwise).
// Both are zero before the first attempt and in capture mode.
func (d *Deliverer) UpstreamHealth() (lastOK, failingSince time.Time) {
	if d.up == nil {
		return time.Time{}, time.Time{}
	}
	h := &d.up.health
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastOK, h.failingSince
}
