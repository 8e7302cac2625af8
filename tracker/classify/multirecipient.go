package classify

import (
	"slices"
	"time"
)

// The multi-recipient rule: a link scanner that checks a message as it is
// delivered follows the links of every recipient's copy from the same
// address with the same agent. Clicks on the copies of MultiRecipients or
// more distinct recipients of one message, from the same recorded address
// and the same user agent, each within MultiRecipientWindow after its own
// copy's delivery (a window of exactly MultiRecipientWindow included), are
// a scanner's, however far apart the deliveries were.
//
// Only clicks take part: people open push notifications in seconds, so
// opens alone never make anyone a machine. An office behind one NAT where
// colleagues read the same message stays human: their agents differ, they
// click later than this, or fewer of them click this soon.
const (
	MultiRecipients      = 3
	MultiRecipientWindow = 30 * time.Second
)

// RecipientClick is a click of one of a message's copies, as the
// multi-recipient rule sees it.
type RecipientClick struct {
	// Recipient is the index of the copy's recipient.
	Recipient int
	// IP is the address as recorded (per tracking.ip_mode; "" when not
	// recorded, which never takes part).
	IP string
	// UserAgent is the click's user agent ("" never takes part).
	UserAgent string
	// At is when the click arrived.
	At time.Time
	// DeliveredAt is when the copy was delivered; zero when not (known to
	// be) delivered, which never takes part.
	DeliveredAt time.Time
}

// SoonAfterDelivery reports whether c is within MultiRecipientWindow after
// its copy's delivery, with an address and an agent: only such clicks take
// part in the multi-recipient rule, so the store need keep no others.
func (c RecipientClick) SoonAfterDelivery() bool {
	if c.IP == "" || c.UserAgent == "" || c.DeliveredAt.IsZero() {
		return false
	}
	d := c.At.Sub(c.DeliveredAt)
	return d >= 0 && d <= MultiRecipientWindow
}

// MultiRecipient applies the multi-recipient rule to a message's new click
// c. history is the message's other clicks soon after delivery (see
// SoonAfterDelivery; others are ignored), of any of its copies, c's
// included, in any order. It reports whether c is part of such a scan, and
// the indexes in history of the clicks that are part of it with c.
func MultiRecipient(c RecipientClick, history []RecipientClick) (bool, []int) {
	if !c.SoonAfterDelivery() {
		return false, nil
	}
	var same []int
	rcpts := []int{c.Recipient}
	for i, h := range history {
		if h.IP != c.IP || h.UserAgent != c.UserAgent || !h.SoonAfterDelivery() {
			continue
		}
		same = append(same, i)
		if !slices.Contains(rcpts, h.Recipient) {
			rcpts = append(rcpts, h.Recipient)
		}
	}
	if len(rcpts) < MultiRecipients {
		return false, nil
	}
	return true, same
}

// InMultiRecipient returns the class and reasons of a click found to be
// part of a multi-recipient scan: scanner, with ReasonMultiRecipient in
// place of ReasonNoMachineSignals. It may reuse reasons' array. Self
// clicks are returned as they are.
func InMultiRecipient(class string, reasons []string) (string, []string) {
	if class == Self || slices.Contains(reasons, ReasonMultiRecipient) {
		return class, reasons
	}
	reasons = slices.DeleteFunc(reasons, func(r string) bool { return r == ReasonNoMachineSignals })
	return Scanner, append(reasons, ReasonMultiRecipient)
}
