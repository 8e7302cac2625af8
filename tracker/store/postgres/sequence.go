package postgres

import (
	"slices"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// The sequence rules, as package bolt applies them, with the history read
// from the database in the batch's transaction (commitEvents), under the
// advisory locks of the batch's messages: whichever node commits a hit,
// it sees every hit of the message committed before, and its verdict is
// the same.
//   - the burst rule (classify.InSequence): a click with its copy's clicks
//     within classify.BurstWindow;
//   - the gateway pair rule (classify.InGatewayPair), in both orders: a
//     click from a gateway's network with the copy's gateway pixel fetches
//     from its address, and such a fetch with the copy's clicks from it,
//     within classify.GatewayPairWindow;
//   - the multi-recipient rule (classify.MultiRecipient): a click soon
//     after its copy's delivery with the message's clicks, on any copy,
//     from the same address and agent soon after theirs;
//   - the honeypot rule (classify.NearHoneypot), in both orders: a hit
//     with the copy's honeypot hits from its address, and a honeypot hit
//     with the copy's hits from it, within the scanner window.
//
// An earlier event whose class changes is written again, with a
// reclassified feed entry when it is kept in detail.

// copyKey names one recipient's copy of a message.
type copyKey struct {
	message   string
	recipient int
}

// copyState is what a batch knows of a copy: how many of its events are
// kept in detail, whether a counted open was seen, when it was delivered,
// and its events near the batch's (from the database, then the batch's
// own).
type copyState struct {
	kept      int
	opened    bool
	delivered time.Time // zero: not (known to be) delivered
	from      int64     // the window of events read, unix ns
	to        int64
	marks     bool // the batch holds a hit that may reclassify the copy's events
	clicks    bool // the batch holds a click of the copy (only clicks read opened)
	uncounted bool // its kept events were not counted: events_seq bounds them under the cap
	atCap     bool // this node had read it at the cap (locks.go)
	hits      []*hist
}

// hist is an event of a copy's or a message's history.
type hist struct {
	seq       int64
	recipient int
	typ       string
	link      int
	at        int64 // unix ns
	kept      bool
	burst     bool // part of a click burst
	class     string
	reasons   []string
	ip        string
	ua        string    // clicks of a message's history only
	delivered time.Time // likewise: its copy's delivery
	row       *eventRow // in this batch; nil: in the database
}

func (h *hist) time() time.Time { return time.Unix(0, h.at) }

func (h *hist) verdict() classify.Verdict {
	return classify.Verdict{Class: h.class, Reasons: h.reasons}
}

func (h *hist) recipientClick() classify.RecipientClick {
	return classify.RecipientClick{Recipient: h.recipient, IP: h.ip, UserAgent: h.ua, At: h.time(), DeliveredAt: h.delivered}
}

// eventRow is an event the batch inserts.
type eventRow struct {
	seq     int64
	hit     string
	e       store.Event
	kept    bool
	burst   bool
	reasons []string
}

// feedRow is a feed entry the batch inserts.
type feedRow struct {
	account, kind, message string
	recipient              int
	event                  int64
	at                     time.Time
	class, prev            string
	reasons                []string
}

// historyWindow is how far from a batch's hits the copies' events are
// read: the widest window of the rules that look at a copy.
func (s *Store) historyWindow() time.Duration {
	return max(classify.BurstWindow, classify.GatewayPairWindow, s.opts.ScannerWindow)
}

// classifier builds a batch's writes, event by event, in arrival order.
type classifier struct {
	s            *Store
	copies       map[copyKey]*copyState
	clicks       map[string][]*hist // by message: its clicks soon after their copy's delivery
	accounts     map[string]string
	events       []*eventRow
	feed         []feedRow
	updates      map[int64]*hist // events of the database whose class changed
	overCap      int
	erased       int
	reclassified []string
	outboxed     bool
}

// add classifies r's event with its copy's and message's history, adds its
// rows, and reclassifies the earlier events its evidence changes.
func (c *classifier) add(r *eventReq, seq int64) {
	e := r.ev
	acct := c.accounts[e.Message]
	st := c.copies[copyKey{e.Message, e.Recipient}]
	at := e.At.UnixNano()
	click := e.Type == store.EventClick && e.Class != classify.Self
	v := classify.Verdict{Class: e.Class, Client: e.Client, Reasons: e.Reasons}
	var burst, scan []*hist
	switch {
	case e.Type == store.EventOpen:
		if classify.Counted(e.Class) {
			st.opened = true
		}
	case click:
		w := int64(classify.BurstWindow)
		var history []*hist
		clicks := []classify.Click{}
		for _, h := range st.hits {
			if h.typ == store.EventClick && h.class != classify.Self && h.at >= at-w && h.at <= at+w {
				history = append(history, h)
				clicks = append(clicks, classify.Click{Link: h.link, At: h.time()})
			}
		}
		var in []int
		v, in = classify.InSequence(v, classify.Click{Link: e.Link, At: e.At}, st.opened, clicks)
		for _, i := range in {
			if !history[i].burst {
				burst = append(burst, history[i])
			}
		}
		for _, h := range st.hits {
			if h.typ == store.EventOpen && classify.FromGateway(h.reasons) {
				v = classify.InGatewayPair(v, e.IP, e.At, classify.GatewayOpen{IP: h.ip, At: h.time()})
			}
		}
	}
	rc := classify.RecipientClick{Recipient: e.Recipient, IP: e.IP, UserAgent: e.UserAgent, At: e.At, DeliveredAt: st.delivered}
	if click && rc.SoonAfterDelivery() {
		history := c.clicks[e.Message]
		rcs := make([]classify.RecipientClick, len(history))
		for i, h := range history {
			rcs[i] = h.recipientClick()
		}
		if ok, in := classify.MultiRecipient(rc, rcs); ok {
			v.Class, v.Reasons = classify.InMultiRecipient(v.Class, slices.Clone(v.Reasons))
			for _, i := range in {
				if !slices.Contains(history[i].reasons, classify.ReasonMultiRecipient) {
					scan = append(scan, history[i])
				}
			}
		}
	}
	for _, h := range st.hits {
		if classify.FromHoneypot(h.reasons) {
			v = classify.NearHoneypot(v, e.IP, e.At, classify.HoneypotHit{IP: h.ip, At: h.time()}, c.s.opts.ScannerWindow)
		}
	}
	e.Class, e.Reasons = v.Class, v.Reasons

	kept := st.kept < c.s.opts.MaxEventsPerRecipient
	row := &eventRow{seq: seq, hit: r.hit, e: e, kept: kept, reasons: e.Reasons, burst: inBurst(e.Class, e.Reasons)}
	if row.reasons == nil {
		row.reasons = []string{}
	}
	c.events = append(c.events, row)
	if kept {
		st.kept++
		if acct != "" {
			c.feedRow(feedRow{account: acct, kind: e.Type, message: e.Message, recipient: e.Recipient, event: seq, at: e.At})
		}
	} else {
		c.overCap++
	}

	for _, h := range burst {
		class, reasons := classify.InBurst(slices.Clone(h.reasons))
		c.change(acct, &e, h, class, reasons, true)
	}
	for _, h := range scan {
		class, reasons := classify.InMultiRecipient(h.class, slices.Clone(h.reasons))
		c.change(acct, &e, h, class, reasons, true)
	}
	if e.IP != "" && classify.FromHoneypot(e.Reasons) {
		hp := classify.HoneypotHit{IP: e.IP, At: e.At}
		for _, h := range st.hits {
			if h.kept && h.ip == e.IP && !classify.FromHoneypot(h.reasons) && h.class != classify.Self {
				nv := classify.NearHoneypot(h.verdict(), h.ip, h.time(), hp, c.s.opts.ScannerWindow)
				c.change(acct, &e, h, nv.Class, nv.Reasons, false)
			}
		}
	}
	if e.Type == store.EventOpen && e.IP != "" && classify.FromGateway(e.Reasons) {
		o := classify.GatewayOpen{IP: e.IP, At: e.At}
		for _, h := range st.hits {
			if h.kept && h.typ == store.EventClick && h.ip == e.IP {
				nv := classify.InGatewayPair(h.verdict(), h.ip, h.time(), o)
				c.change(acct, &e, h, nv.Class, nv.Reasons, false)
			}
		}
	}

	h := &hist{seq: seq, recipient: e.Recipient, typ: e.Type, link: e.Link, at: at, kept: kept, burst: row.burst,
		class: e.Class, reasons: row.reasons, ip: e.IP, ua: e.UserAgent, delivered: st.delivered, row: row}
	st.hits = append(st.hits, h)
	if click && kept && rc.SoonAfterDelivery() {
		c.clicks[e.Message] = append(c.clicks[e.Message], h)
	}
}

// inBurst reports whether an event of class with reasons is part of a
// click burst (events.burst).
func inBurst(class string, reasons []string) bool {
	return class == classify.Scanner && slices.Contains(reasons, classify.ReasonClickBurst)
}

// change gives h, an earlier event that e's evidence judged again, its new
// class and reasons when its class changes, or with reasons when they
// change (as bbolt does for the rules that mark a group: a burst, a
// multi-recipient scan): the event is written again and, when its class
// changed, it is kept in detail and its message has an account, a
// reclassified entry goes to the feed. An event past the cap leaves its
// copy's counts, which are derived from the classes.
func (c *classifier) change(acct string, e *store.Event, h *hist, class string, reasons []string, withReasons bool) {
	prev := h.class
	if class == prev && (!withReasons || slices.Equal(reasons, h.reasons)) {
		return
	}
	h.class, h.reasons, h.burst = class, reasons, inBurst(class, reasons)
	if h.row != nil {
		h.row.e.Class, h.row.reasons, h.row.burst = h.class, h.reasons, h.burst
	} else {
		if c.updates == nil {
			c.updates = map[int64]*hist{}
		}
		c.updates[h.seq] = h
	}
	if !h.kept || prev == class || acct == "" {
		return
	}
	c.reclassified = append(c.reclassified, class)
	c.feedRow(feedRow{account: acct, kind: store.EventReclassified, message: e.Message, recipient: h.recipient,
		event: h.seq, at: e.At, class: class, prev: prev, reasons: reasons})
}

func (c *classifier) feedRow(f feedRow) {
	c.feed = append(c.feed, f)
	if c.s.webhooks[f.account] {
		c.outboxed = true
	}
}
