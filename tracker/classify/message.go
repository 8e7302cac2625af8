package classify

import (
	"net/netip"
	"slices"
	"time"
)

// MessageFacts is what Classify learns from a hit's message: what a
// tracker that could not read the message (its store unavailable, or the
// message's record not stored yet) classified without.
type MessageFacts struct {
	// Submitter reports whether the hit came from the address that
	// submitted the message.
	Submitter bool
	// Untracked is true for a hit on a copy that was not to be tracked.
	Untracked bool
	// Click is true for a click.
	Click bool
	// At is when the hit arrived.
	At time.Time
	// DeliveredAt is when the copy was delivered; zero when not (known to
	// be) delivered.
	DeliveredAt time.Time
	// ScannerWindow is Hit.ScannerWindow.
	ScannerWindow time.Duration
}

// SameAddress reports whether ip and submitIP are one address, as Classify
// compares a hit's address with its message's submitter.
func SameAddress(ip netip.Addr, submitIP string) bool {
	if submitIP == "" || !ip.IsValid() {
		return false
	}
	sip, err := netip.ParseAddr(submitIP)
	return err == nil && sip.Unmap() == ip.Unmap()
}

// WithMessage returns v, the verdict of a hit classified without its
// message (Classify with SubmitIP, Untracked and DeliveredAt unset, and
// perhaps the sequence rules after it), with the evidence of the message's
// facts f added as Classify adds it: the same verdict as if the message
// had been known. It leaves a verdict that already holds the evidence as
// it is, so applying it again, e.g. once a click's delivery is known,
// changes nothing more. v's reasons are not modified.
func WithMessage(v Verdict, f MessageFacts) Verdict {
	var self []string
	if f.Submitter && !slices.Contains(v.Reasons, ReasonSubmitterIP) {
		self = append(self, ReasonSubmitterIP)
	}
	if f.Untracked && !slices.Contains(v.Reasons, ReasonUntrackedCopy) {
		self = append(self, ReasonUntrackedCopy)
	}
	scan := ""
	if f.Click && !f.DeliveredAt.IsZero() && f.ScannerWindow > 0 {
		if d := f.At.Sub(f.DeliveredAt); d >= 0 && d < f.ScannerWindow {
			scan = "click-" + shortDuration(d) + "-after-delivery"
			if slices.Contains(v.Reasons, scan) {
				scan = ""
			}
		}
	}
	if len(self) == 0 && scan == "" {
		return v
	}
	// Classify's order: the self reasons first, then the request's own
	// scanner evidence (method, agent), then the delivery's.
	rs := make([]string, 0, len(v.Reasons)+len(self)+1)
	i := 0
	for i < len(v.Reasons) && (v.Reasons[i] == ReasonSubmitterIP || v.Reasons[i] == ReasonUntrackedCopy) {
		i++
	}
	if f.Submitter || slices.Contains(v.Reasons[:i], ReasonSubmitterIP) {
		rs = append(rs, ReasonSubmitterIP)
	}
	if f.Untracked || slices.Contains(v.Reasons[:i], ReasonUntrackedCopy) {
		rs = append(rs, ReasonUntrackedCopy)
	}
	for i < len(v.Reasons) {
		r := v.Reasons[i]
		if r != ReasonHeadRequest && r != ReasonEmptyUA && r != ReasonScannerUA {
			break
		}
		rs = append(rs, r)
		i++
	}
	if scan != "" {
		rs = append(rs, scan)
	}
	for _, r := range v.Reasons[i:] {
		if r != ReasonNoMachineSignals {
			rs = append(rs, r)
		}
	}
	// The class is the strongest evidence's: self, then scanner.
	switch {
	case len(self) > 0 || v.Class == Self:
		v.Class = Self
	default:
		v.Class = Scanner
	}
	v.Reasons = rs
	return v
}
