package classify

import (
	"slices"
	"time"
)

// The honeypot rule (tracking.honeypot): a copy may carry one link that no
// person sees or can reach (no text, hidden from screen readers, not
// focusable, of no size). A hit on it is a machine's (ReasonHoneypot), and
// so are the copy's hits from the same address within the scanner window
// (tracking.scanner_window, DefaultScannerWindow unless configured) before
// or after it (ReasonNearHoneypot), in either order: the machine that
// followed it fetched the rest. Self hits are left as they are.

// DefaultScannerWindow is the scanner window when none is configured: how
// soon after delivery a click is a link scanner's (Hit.ScannerWindow), and
// how far from a honeypot hit the hits from its address are the same
// machine's (NearHoneypot).
const DefaultScannerWindow = 10 * time.Second

// HoneypotHit is a hit on a copy's honeypot link, as the store recorded it.
type HoneypotHit struct {
	// IP is the address as recorded (per tracking.ip_mode; "" when not
	// recorded, which marks no other hit).
	IP string
	// At is when it arrived.
	At time.Time
}

// OnHoneypot returns the verdict of a hit on a honeypot link, as Classify
// gave it: scanner, with ReasonHoneypot in place of ReasonNoMachineSignals.
// v.Reasons is not modified.
func OnHoneypot(v Verdict) Verdict {
	return markScanner(v, ReasonHoneypot)
}

// FromHoneypot reports whether reasons say a hit was on a honeypot link.
func FromHoneypot(reasons []string) bool { return slices.Contains(reasons, ReasonHoneypot) }

// NearHoneypot applies the honeypot rule to a hit's verdict v, recorded
// from ip at at, given a hit h on its copy's honeypot link, before or
// after it: from the same address within window (the scanner window), it
// is scanner, with ReasonNearHoneypot in place of ReasonNoMachineSignals.
// A window that is not positive (the scanner window rule turned off)
// marks nothing. v.Reasons is not modified.
func NearHoneypot(v Verdict, ip string, at time.Time, h HoneypotHit, window time.Duration) Verdict {
	if window <= 0 || ip == "" || ip != h.IP || FromHoneypot(v.Reasons) {
		return v
	}
	if d := at.Sub(h.At); d < -window || d > window {
		return v
	}
	return markScanner(v, ReasonNearHoneypot)
}

// markScanner makes v scanner for reason, unless it is self or says so
// already. v.Reasons is not modified.
func markScanner(v Verdict, reason string) Verdict {
	if v.Class == Self || slices.Contains(v.Reasons, reason) {
		return v
	}
	reasons := slices.DeleteFunc(slices.Clone(v.Reasons), func(r string) bool { return r == ReasonNoMachineSignals })
	v.Class, v.Reasons = Scanner, append(reasons, reason)
	return v
}
