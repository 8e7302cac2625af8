package classify

import (
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// A hit on the honeypot link is a scanner's, whatever it looked like; the
// copy's hits from the same address within the scanner window of it
// (10 s by default, 30 s or none as configured), before or after, are too. A person on the same office NAT, or the same address later, or
// the sender itself stay as they were.
func TestHoneypot(t *testing.T) {
	const chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	at := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	human := Classify(Hit{Click: true, Method: http.MethodGet, IP: netip.MustParseAddr("203.0.113.9"), Header: http.Header{}, UserAgent: chrome, At: at})
	if human.Class != Human {
		t.Fatalf("look-alike classified %+v", human)
	}
	v := OnHoneypot(human)
	if v.Class != Scanner || !slices.Equal(v.Reasons, []string{ReasonHoneypot}) || !FromHoneypot(v.Reasons) {
		t.Errorf("OnHoneypot = %+v", v)
	}
	if !slices.Equal(human.Reasons, []string{ReasonNoMachineSignals}) {
		t.Errorf("reasons written to: %v", human.Reasons)
	}
	if v := OnHoneypot(Verdict{Class: Self, Reasons: []string{ReasonSubmitterIP}}); v.Class != Self {
		t.Errorf("self on honeypot: %+v", v)
	}
	hp := HoneypotHit{IP: "198.51.100.20", At: at}
	for _, tc := range []struct {
		name   string
		v      Verdict
		ip     string
		at     time.Time
		window time.Duration
		want   string
	}{
		{"its address 3 s before", human, "198.51.100.20", at.Add(-3 * time.Second), DefaultScannerWindow, Scanner},
		{"its address 10 s after", human, "198.51.100.20", at.Add(10 * time.Second), DefaultScannerWindow, Scanner},
		{"its address 11 s after", human, "198.51.100.20", at.Add(11 * time.Second), DefaultScannerWindow, Human},
		{"its address 11 s after, window 30 s", human, "198.51.100.20", at.Add(11 * time.Second), 30 * time.Second, Scanner},
		{"its address 25 s before, window 30 s", human, "198.51.100.20", at.Add(-25 * time.Second), 30 * time.Second, Scanner},
		{"its address 31 s after, window 30 s", human, "198.51.100.20", at.Add(31 * time.Second), 30 * time.Second, Human},
		{"its address 3 s before, window 2 s", human, "198.51.100.20", at.Add(-3 * time.Second), 2 * time.Second, Human},
		{"its address, same second, window turned off", human, "198.51.100.20", at, -1, Human},
		{"its address a minute before", human, "198.51.100.20", at.Add(-time.Minute), DefaultScannerWindow, Human},
		{"a colleague on another address, same second", human, "203.0.113.9", at, DefaultScannerWindow, Human},
		{"address not recorded", human, "", at, DefaultScannerWindow, Human},
		{"the sender itself", Verdict{Class: Self, Reasons: []string{ReasonSubmitterIP}}, "198.51.100.20", at, DefaultScannerWindow, Self},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NearHoneypot(tc.v, tc.ip, tc.at, hp, tc.window)
			if v.Class != tc.want || slices.Contains(v.Reasons, ReasonNearHoneypot) != (tc.want == Scanner) {
				t.Errorf("NearHoneypot = %+v, want %s", v, tc.want)
			}
		})
	}
	if v := NearHoneypot(OnHoneypot(human), "198.51.100.20", at, hp, DefaultScannerWindow); !slices.Equal(v.Reasons, []string{ReasonHoneypot}) {
		t.Errorf("a honeypot hit near itself: %+v", v)
	}
}
