package bolt

import (
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// The honeypot rule (classify.NearHoneypot) in both orders: a copy's hit
// after a hit on its honeypot link is judged with the copy's latest such
// hit (storedRcpt.Honeypot); a hit on the honeypot link reclassifies the
// copy's recent hits kept in detail from the same address
// (storedRcpt.Recent), each with a reclassified entry in the feed. Hits
// past MaxEventsPerRecipient are judged but not reclassified later.

// nearHoneypot applies the honeypot rule to e, before it is stored, with
// the copy's latest honeypot hit and the scanner window; it reports
// whether e changed.
func nearHoneypot(rs *storedRcpt, e *store.Event, window time.Duration) bool {
	hp := rs.Honeypot
	if hp == nil {
		return false
	}
	v := classify.NearHoneypot(classify.Verdict{Class: e.Class, Client: e.Client, Reasons: e.Reasons}, e.IP, e.At,
		classify.HoneypotHit{IP: hp.IP, At: hp.At}, window)
	if v.Class == e.Class && len(v.Reasons) == len(e.Reasons) {
		return false
	}
	e.Class, e.Reasons = v.Class, v.Reasons
	return true
}

// honeypotMarks, after e is stored (its event seq, when kept): a hit on
// the honeypot link becomes the copy's latest and marks its recent hits
// from the same address; any other hit kept in detail that is neither
// scanner's nor self's is remembered in rs.Recent for a later one.
func (c *commitTx) honeypotMarks(acct string, e *store.Event, rs *storedRcpt, seq uint64, kept bool) error {
	if e.IP == "" {
		return nil
	}
	window := c.s.opts.ScannerWindow
	if !classify.FromHoneypot(e.Reasons) {
		if !kept || e.Class == classify.Scanner || e.Class == classify.Self || window <= 0 {
			return nil
		}
		rs.Recent = rememberHit(rs.Recent, gatewayClick{IP: e.IP, At: e.At, Seq: seq}, window, maxRecentHits)
		return nil
	}
	if rs.Honeypot == nil || !e.At.Before(rs.Honeypot.At) {
		rs.Honeypot = &gatewayOpen{IP: e.IP, At: e.At}
	}
	hp := classify.HoneypotHit{IP: e.IP, At: e.At}
	left, err := c.reclassifyRecent(acct, e, rs.Recent, func(g gatewayClick) bool { return g.IP == e.IP },
		func(v classify.Verdict, ip string, at time.Time) classify.Verdict {
			return classify.NearHoneypot(v, ip, at, hp, window)
		})
	if err != nil {
		return err
	}
	rs.Recent = left
	return nil
}
