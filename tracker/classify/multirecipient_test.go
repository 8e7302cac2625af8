package classify

import (
	"slices"
	"testing"
	"time"
)

// MultiRecipient makes a scanner of one address and agent clicking the
// copies of 3+ recipients of a message, each within 30 s of its delivery;
// the look-alikes of an office behind one NAT stay human: other agents,
// later clicks, two colleagues, or one colleague clicking thrice.
func TestMultiRecipient(t *testing.T) {
	const (
		chrome  = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
		edge    = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"
		firefox = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
		iphone  = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
		scanIP  = "198.51.100.20"
		natIP   = "203.0.113.9"
	)
	delivered := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	click := func(rcpt int, ip, ua string, after time.Duration) RecipientClick {
		return RecipientClick{Recipient: rcpt, IP: ip, UserAgent: ua, At: delivered.Add(after), DeliveredAt: delivered}
	}
	for _, tc := range []struct {
		name    string
		click   RecipientClick
		history []RecipientClick
		scan    bool
		joined  []int
	}{
		{name: "a scanner clicks three recipients' copies", click: click(2, scanIP, chrome, 12*time.Second),
			history: []RecipientClick{click(0, scanIP, chrome, 4*time.Second), click(1, scanIP, chrome, 8*time.Second)},
			scan:    true, joined: []int{0, 1}},
		{name: "the third copy clicked 30 s after its delivery", click: click(2, scanIP, chrome, 30*time.Second),
			history: []RecipientClick{click(0, scanIP, chrome, 4*time.Second), click(1, scanIP, chrome, 8*time.Second)},
			scan:    true, joined: []int{0, 1}},
		{name: "copies delivered hours apart, each clicked seconds after",
			click: RecipientClick{Recipient: 2, IP: scanIP, UserAgent: chrome, At: delivered.Add(3*time.Hour + 5*time.Second), DeliveredAt: delivered.Add(3 * time.Hour)},
			history: []RecipientClick{click(0, scanIP, chrome, 4*time.Second),
				{Recipient: 1, IP: scanIP, UserAgent: chrome, At: delivered.Add(time.Hour + 3*time.Second), DeliveredAt: delivered.Add(time.Hour)}},
			scan: true, joined: []int{0, 1}},
		{name: "only the scanner's clicks join it", click: click(2, scanIP, chrome, 12*time.Second),
			history: []RecipientClick{click(0, scanIP, chrome, 4*time.Second), click(3, natIP, chrome, 5*time.Second),
				click(1, scanIP, chrome, 8*time.Second), click(4, scanIP, firefox, 6*time.Second)},
			scan: true, joined: []int{0, 2}},
		{name: "office nat: three colleagues, three browsers", click: click(2, natIP, firefox, 12*time.Second),
			history: []RecipientClick{click(0, natIP, chrome, 4*time.Second), click(1, natIP, edge, 8*time.Second)}},
		{name: "office nat: same browser, a minute after delivery", click: click(2, natIP, chrome, time.Minute),
			history: []RecipientClick{click(0, natIP, chrome, 40*time.Second), click(1, natIP, chrome, 50*time.Second)}},
		{name: "office nat: same browser, the third 31 s after delivery", click: click(2, natIP, chrome, 31*time.Second),
			history: []RecipientClick{click(0, natIP, chrome, 4*time.Second), click(1, natIP, chrome, 8*time.Second)}},
		{name: "two colleagues on phones, seconds after delivery", click: click(1, natIP, iphone, 6*time.Second),
			history: []RecipientClick{click(0, natIP, iphone, 4*time.Second)}},
		{name: "one person clicking three links of their copy", click: click(0, natIP, chrome, 12*time.Second),
			history: []RecipientClick{click(0, natIP, chrome, 4*time.Second), click(0, natIP, chrome, 8*time.Second)}},
		{name: "addresses not recorded", click: click(2, "", chrome, 12*time.Second),
			history: []RecipientClick{click(0, "", chrome, 4*time.Second), click(1, "", chrome, 8*time.Second)}},
		{name: "copies not known to be delivered", click: RecipientClick{Recipient: 2, IP: scanIP, UserAgent: chrome, At: delivered},
			history: []RecipientClick{{Recipient: 0, IP: scanIP, UserAgent: chrome, At: delivered}, {Recipient: 1, IP: scanIP, UserAgent: chrome, At: delivered}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scan, joined := MultiRecipient(tc.click, tc.history)
			if scan != tc.scan || !slices.Equal(joined, tc.joined) {
				t.Errorf("MultiRecipient = %v %v, want %v %v", scan, joined, tc.scan, tc.joined)
			}
		})
	}
}

// InMultiRecipient makes a click scanner, once, its reasons saying why; a
// self click stays as it is.
func TestInMultiRecipient(t *testing.T) {
	class, reasons := InMultiRecipient(Human, []string{ReasonNoMachineSignals, ReasonClickBeforeOpen})
	if class != Scanner || !slices.Equal(reasons, []string{ReasonClickBeforeOpen, ReasonMultiRecipient}) {
		t.Errorf("human: %s %v", class, reasons)
	}
	class, reasons = InMultiRecipient(class, reasons)
	if class != Scanner || !slices.Equal(reasons, []string{ReasonClickBeforeOpen, ReasonMultiRecipient}) {
		t.Errorf("again: %s %v", class, reasons)
	}
	class, reasons = InMultiRecipient(Self, []string{ReasonSubmitterIP})
	if class != Self || !slices.Equal(reasons, []string{ReasonSubmitterIP}) {
		t.Errorf("self: %s %v", class, reasons)
	}
}
