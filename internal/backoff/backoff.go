package backoff

import (
	"math/rand/v2"
	"time"
)

// Exp is the wait after the n-th failure in a row (n >= 1): first after
// the first, doubling with each further failure, never more than limit.
// n below 1 is taken as 1.
func Exp(first, limit time.Duration, n int) time.Duration {
	w := first
	for i := 1; i < n && w > 0 && w < limit; i++ {
		if w > limit/2 { // doubling would pass the cap (or overflow)
			return limit
		}
		w *= 2
	}
	return min(w, limit)
}

// Jitter returns d moved at random by up to a fifth either way, so that
// retries scheduled together do not all fall due at once.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d + time.Duration(rand.Int64N(int64(d)/5*2+1)) - d/5
}
