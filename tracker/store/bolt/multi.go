package bolt

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

// The multi-recipient rule (classify.MultiRecipient) judges a click with
// the message's clicks, on any of its copies, that came soon after their
// copy's delivery. Store keeps them in the message's record in the
// recipients bucket, under the message's bare prefix (the copies' records
// add a recipient to it):
//
//	recipients  queue id NUL -> storedMsgClicks (JSON)
//
// Only clicks kept in detail and soon after delivery enter it, at most
// maxMsgClicks of them, the latest: a scan of a message follows every
// recipient's links within seconds, so a flood of clicks keeps the record
// small and a click beyond it only misses its earliest company.
const maxMsgClicks = 64

// storedMsgClicks is a message's clicks soon after delivery, oldest first.
type storedMsgClicks struct {
	Clicks []msgClick `json:"c"`
}

// msgClick is a click of storedMsgClicks: what the rule compares, and its
// event's sequence.
type msgClick struct {
	Recipient   int       `json:"r"`
	IP          string    `json:"ip"`
	UA          string    `json:"ua"`
	At          time.Time `json:"at"`
	DeliveredAt time.Time `json:"d"`
	Seq         uint64    `json:"s"`
	Scan        bool      `json:"m,omitempty"` // already found part of a scan
}

func (m msgClick) click() classify.RecipientClick {
	return classify.RecipientClick{Recipient: m.Recipient, IP: m.IP, UserAgent: m.UA, At: m.At, DeliveredAt: m.DeliveredAt}
}

// deliveredAt returns when copy rkey was delivered; zero when it is not
// (known to be).
func deliveredAt(tx *bbolt.Tx, rkey []byte) (time.Time, error) {
	v := tx.Bucket(bucketDeliveries).Get(rkey)
	if v == nil {
		return time.Time{}, nil
	}
	var d storedDelivery
	if err := json.Unmarshal(v, &d); err != nil {
		return time.Time{}, err
	}
	if d.Status != delivery.Delivered {
		return time.Time{}, nil
	}
	return d.UpdatedAt, nil
}

// multiRecipient applies the multi-recipient rule to the click e of copy
// rkey before it is stored: it returns the click as the rule sees it (not
// SoonAfterDelivery: the rule does not apply, and nothing is returned),
// the message's record and the indexes in it of the clicks that join a
// scan with e, not being part of one yet. e's class and reasons are
// updated.
func (c *commitTx) multiRecipient(rkey []byte, e *store.Event) (classify.RecipientClick, *storedMsgClicks, []int, error) {
	d, err := deliveredAt(c.tx, rkey)
	if err != nil {
		return classify.RecipientClick{}, nil, nil, err
	}
	rc := classify.RecipientClick{Recipient: e.Recipient, IP: e.IP, UserAgent: e.UserAgent, At: e.At, DeliveredAt: d}
	if !rc.SoonAfterDelivery() {
		return rc, nil, nil, nil
	}
	mc := &storedMsgClicks{}
	if v := c.tx.Bucket(bucketRecipients).Get(prefixKey(e.Message)); v != nil {
		if err := json.Unmarshal(v, mc); err != nil {
			return rc, nil, nil, err
		}
	}
	history := make([]classify.RecipientClick, len(mc.Clicks))
	for i, m := range mc.Clicks {
		history[i] = m.click()
	}
	scan, in := classify.MultiRecipient(rc, history)
	if !scan {
		return rc, mc, nil, nil
	}
	e.Class, e.Reasons = classify.InMultiRecipient(e.Class, e.Reasons)
	var joined []int
	for _, i := range in {
		if !mc.Clicks[i].Scan {
			joined = append(joined, i)
		}
	}
	return rc, mc, joined, nil
}

// keepMultiRecipient reclassifies the clicks of mc at joined as part of
// the scan e completes, each with a reclassified entry in the feed when
// its class changes, and adds e (rc, its event seq; kept in detail) to
// mc. mc is nil when the rule did not apply to e.
func (c *commitTx) keepMultiRecipient(acct string, e *store.Event, rc classify.RecipientClick, mc *storedMsgClicks, joined []int, seq uint64, kept bool) error {
	if mc == nil {
		return nil
	}
	events := c.tx.Bucket(bucketEvents)
	for _, i := range joined {
		m := &mc.Clicks[i]
		m.Scan = true
		key := eventKey(e.Message, m.Seq)
		v := events.Get(key)
		if v == nil {
			continue // expired
		}
		var se storedEvent
		if err := json.Unmarshal(v, &se); err != nil {
			return err
		}
		prev := se.Class
		se.Class, se.Reasons = classify.InMultiRecipient(se.Class, se.Reasons)
		nv, err := encodeEvent(&se)
		if err != nil {
			return err
		}
		if err := events.Put(key, nv); err != nil {
			return err
		}
		if prev == se.Class || acct == "" {
			continue
		}
		c.reclassified = append(c.reclassified, se.Class)
		if _, err := c.feed(acct, storedFeedEntry{
			Kind: feedKindRecls, Message: e.Message, Recipient: se.Recipient, Event: m.Seq, At: e.At,
			Class: se.Class, Prev: prev, Reasons: se.Reasons,
		}); err != nil {
			return err
		}
	}
	if kept && e.Class != classify.Self {
		mc.Clicks = append(mc.Clicks, msgClick{
			Recipient: rc.Recipient, IP: rc.IP, UA: rc.UserAgent, At: rc.At, DeliveredAt: rc.DeliveredAt, Seq: seq,
			Scan: slices.Contains(e.Reasons, classify.ReasonMultiRecipient),
		})
		slices.SortStableFunc(mc.Clicks, func(a, b msgClick) int { return a.At.Compare(b.At) })
		mc.Clicks = mc.Clicks[max(len(mc.Clicks)-maxMsgClicks, 0):]
	} else if len(joined) == 0 {
		return nil
	}
	v, err := json.Marshal(mc)
	if err != nil {
		return err
	}
	return c.tx.Bucket(bucketRecipients).Put(prefixKey(e.Message), v)
}
