package tracker

import (
	"golang.org/x/time/rate"

	"github.com/trackrelay/trackrelay/internal/ratelimit"
)

// Defaults of the per-address recording limit.
const (
	DefaultRecordRate  = 20  // hits recorded per second and client address
	DefaultRecordBurst = 200 // hits recorded at once before the rate applies
)

// newRecordLimiter returns the limit that keeps one client address from
// filling the store: past its rate a hit is still answered (the pixel, the
// redirect), but not recorded. The rate is generous for people and mail
// clients; an image proxy serving many readers from one address stays far
// below it for a small sender. IPv6 clients are limited by their /64
// (ratelimit.Key), which one host can fill freely. It returns nil (no
// limit) when perSecond is negative; zero takes the defaults.
func newRecordLimiter(perSecond float64, burst int) *ratelimit.Limiter {
	if perSecond < 0 {
		return nil
	}
	if perSecond == 0 {
		perSecond = DefaultRecordRate
	}
	if burst <= 0 {
		burst = DefaultRecordBurst
	}
	return ratelimit.New(rate.Limit(perSecond), burst)
}
