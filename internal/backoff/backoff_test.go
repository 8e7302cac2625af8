package backoff

import (
	"math"
	"testing"
	"time"
)

// The relay's retry schedule with its defaults (retry_initial 1m,
// retry_max 1h), before jitter.
func TestExp_relaySchedule(t *testing.T) {
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range want {
		if got := Exp(time.Minute, time.Hour, i+1); got != w*time.Minute {
			t.Errorf("after failure %d: %v, want %v", i+1, got, w*time.Minute)
		}
	}
}

// The webhook sender's schedule with its defaults (10s up to 1h).
func TestExp_webhookSchedule(t *testing.T) {
	want := []time.Duration{10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600}
	for i, w := range want {
		if got := Exp(10*time.Second, time.Hour, i+1); got != w*time.Second {
			t.Errorf("after failure %d: %v, want %v", i+1, got, w*time.Second)
		}
	}
}

func TestExp_edges(t *testing.T) {
	for _, c := range []struct {
		first, limit time.Duration
		n            int
		want         time.Duration
	}{
		{time.Minute, time.Hour, 0, time.Minute}, // no failure yet counts as the first
		{time.Minute, time.Hour, -3, time.Minute},
		{time.Hour, time.Minute, 1, time.Minute}, // the cap wins over the first wait
		{time.Minute, time.Minute, 5, time.Minute},
		{3 * time.Second, 10 * time.Second, 2, 6 * time.Second},
		{3 * time.Second, 10 * time.Second, 3, 10 * time.Second}, // 12s capped
		{5 * time.Second, 10 * time.Second, 2, 10 * time.Second}, // exactly the cap
		{1 << 61, math.MaxInt64, 10, math.MaxInt64},              // no overflow past the cap
		{time.Second, math.MaxInt64, 1 << 20, math.MaxInt64},
		{0, time.Hour, 10, 0},
	} {
		if got := Exp(c.first, c.limit, c.n); got != c.want {
			t.Errorf("Exp(%v, %v, %d) = %v, want %v", c.first, c.limit, c.n, got, c.want)
		}
	}
}

// Jitter stays within a fifth of d either way and reaches both ends.
func TestJitter(t *testing.T) {
	const d = 10 * time.Nanosecond // a fifth is 2ns: five outcomes, 8ns to 12ns
	seen := map[time.Duration]bool{}
	for range 2000 {
		j := Jitter(d)
		if j < d-d/5 || j > d+d/5 {
			t.Fatalf("Jitter(%v) = %v, outside ±20%%", d, j)
		}
		seen[j] = true
	}
	for w := 8 * time.Nanosecond; w <= 12*time.Nanosecond; w++ {
		if !seen[w] {
			t.Errorf("Jitter(%v) never gave %v in 2000 draws", d, w)
		}
	}
	for range 1000 {
		if j := Jitter(time.Hour); j < 48*time.Minute || j > 72*time.Minute {
			t.Fatalf("Jitter(1h) = %v", j)
		}
	}
	if Jitter(0) != 0 {
		t.Error("Jitter(0) is not 0")
	}
}
