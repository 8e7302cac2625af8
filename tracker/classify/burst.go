package classify

import (
	"slices"
	"strings"
	"time"
)

// The burst rule: clicks on BurstLinks or more distinct links of one copy
// within BurstWindow, from the first to the last (a window of exactly
// BurstWindow included), are a scanner following every link, whatever each
// click looked like on its own. Every click in such a window is part of
// the burst, repeated clicks on one link included. Self clicks take no
// part. Times are compared to the nanosecond.
const (
	BurstLinks  = 3
	BurstWindow = 5 * time.Second
)

// Click is a click of one copy, as the burst rule sees it.
type Click struct {
	// Link is the index of the clicked link.
	Link int
	// At is when the click arrived.
	At time.Time
}

// Burst applies the burst rule to a copy's new click c. history is
// the copy's other clicks within BurstWindow of c, before or after it (the
// only ones that can share a window with it), in any order; clicks beyond
// that are ignored. It reports whether c is part of a burst, and the
// indexes in history of the clicks that share a burst with it.
//
// Only windows holding c are looked at: the others were judged when their
// own last click arrived. So a copy's clicks end up marked the same,
// whatever order they arrive in: exactly those of every window of
// BurstWindow that holds BurstLinks distinct links.
func Burst(c Click, history []Click) (bool, []int) {
	if len(history)+1 < BurstLinks {
		return false, nil
	}
	all := append(slices.Clip(history), c)
	self := len(history) // c's index in all
	order := make([]int, len(all))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return all[a].At.Compare(all[b].At) })
	// For each click in time order, the window that starts with it: a
	// window with BurstLinks links that holds c marks its span in cover.
	cover := make([]int, len(all)+1)
	links := map[int]int{} // clicks per link in order[lo:hi]
	hi := 0
	for lo := 0; lo < len(order); lo++ {
		start := all[order[lo]].At
		if start.After(c.At) {
			break
		}
		end := start.Add(BurstWindow)
		for hi < len(order) && !all[order[hi]].At.After(end) {
			links[all[order[hi]].Link]++
			hi++
		}
		if len(links) >= BurstLinks && !end.Before(c.At) {
			cover[lo]++
			cover[hi]--
		}
		l := all[order[lo]].Link
		if links[l]--; links[l] == 0 {
			delete(links, l)
		}
	}
	burst := false
	var joined []int
	n := 0
	for p, i := range order {
		if n += cover[p]; n == 0 {
			continue
		}
		if i == self {
			burst = true
		} else {
			joined = append(joined, i)
		}
	}
	return burst, joined
}

// InBurst returns the class and reasons of a click found to be part of a
// burst: scanner, with ReasonClickBurst in place of
// ReasonNoMachineSignals. It may reuse reasons' array.
func InBurst(reasons []string) (string, []string) {
	if slices.Contains(reasons, ReasonClickBurst) {
		return Scanner, reasons
	}
	reasons = slices.DeleteFunc(reasons, func(r string) bool { return r == ReasonNoMachineSignals })
	return Scanner, append(reasons, ReasonClickBurst)
}

// InSequence adds to a click's verdict v, as Classify gave it, what the
// copy's other events show, and returns the indexes in history of the
// clicks that share a burst with it:
//   - the click records whether a counted open came before it (opened):
//     ReasonOpenedBeforeClick, or ReasonClickBeforeOpen (many people read
//     with images blocked, so this alone decides nothing);
//   - the burst rule (Burst) judges it with history, the copy's other
//     clicks within BurstWindow of it: in a burst, it becomes scanner
//     (InBurst), and so must the clicks of history in its burst.
//
// A self click takes no part and is returned as it is. v.Reasons is not
// modified.
func InSequence(v Verdict, c Click, opened bool, history []Click) (Verdict, []int) {
	if v.Class == Self {
		return v, nil
	}
	order := ReasonClickBeforeOpen
	if opened {
		order = ReasonOpenedBeforeClick
	}
	v.Reasons = append(slices.Clip(v.Reasons), order)
	burst, joined := Burst(c, history)
	if !burst {
		return v, nil
	}
	v.Class, v.Reasons = InBurst(v.Reasons)
	return v, joined
}

// The gateway pair rule: a security gateway that fetches a copy's pixel
// also follows its links, from the same address, seconds apart, in either
// order. A click from a gateway's range or network (a reason
// ReasonGatewayRange or ReasonGatewayNetwork) from the address whose pixel
// fetch was a gateway's, within GatewayPairWindow before or after it, is
// the gateway's. Only addresses in a gateway's lists take part: timing
// alone never makes anyone a machine, and an open alone decides nothing
// here.
const GatewayPairWindow = 30 * time.Second

// GatewayOpen is a copy's pixel fetch by a security gateway, as the store
// recorded it.
type GatewayOpen struct {
	// IP is the address as recorded (per tracking.ip_mode; "" when not
	// recorded, which never pairs).
	IP string
	// At is when the pixel was fetched.
	At time.Time
}

// FromGateway reports whether reasons say a hit came from a security
// gateway's range or network: the store keeps such an open of a copy as
// its GatewayOpen.
func FromGateway(reasons []string) bool {
	return slices.ContainsFunc(reasons, func(r string) bool {
		return strings.HasPrefix(r, ReasonGatewayRange) || strings.HasPrefix(r, ReasonGatewayNetwork)
	})
}

// InGatewayPair applies the gateway pair rule to a click's verdict v, as
// Classify or InSequence gave it, recorded from ip at at, given a gateway
// pixel fetch o of its copy, before or after it: the store calls it for a
// new click with the copy's latest such fetch, and for a new such fetch
// with the copy's recent clicks from gateway networks. A pair makes the
// click scanner, with ReasonGatewayPair in place of
// ReasonNoMachineSignals; self clicks are returned as they are. v.Reasons
// is not modified.
func InGatewayPair(v Verdict, ip string, at time.Time, o GatewayOpen) Verdict {
	if v.Class == Self || ip == "" || ip != o.IP || !FromGateway(v.Reasons) {
		return v
	}
	if d := at.Sub(o.At); d < -GatewayPairWindow || d > GatewayPairWindow {
		return v
	}
	if slices.Contains(v.Reasons, ReasonGatewayPair) {
		return v
	}
	reasons := slices.DeleteFunc(slices.Clone(v.Reasons), func(r string) bool { return r == ReasonNoMachineSignals })
	v.Class, v.Reasons = Scanner, append(reasons, ReasonGatewayPair)
	return v
}
