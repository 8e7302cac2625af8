package bolt

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

// appendFill is how full bbolt fills a page before it splits one, in the
// buckets whose keys mostly arrive in order: an account's feed (its keys
// only grow), and the messages, their links and their copies' deliveries
// (keyed by queue id, which sorts by time of acceptance). bbolt's default,
// half full, is right for random inserts; on appends it leaves every page
// half empty: twice the pages in the file and in each commit. Events are
// not appended this way (a commit adds to many messages' key ranges), and
// keep the default: at 90% they measured 55% full instead of 66%.
const appendFill = 0.9

// appendBucket returns the bucket name of a write transaction, set to fill
// its pages to appendFill (bbolt keeps the setting on the bucket for the
// transaction only). For the buckets written in key order.
func appendBucket(tx *bbolt.Tx, name []byte) *bbolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = appendFill
	return b
}

// commitTx is the state of one group commit: the recipients' running state
// and the messages' accounts, read once per batch.
type commitTx struct {
	s            *Store
	tx           *bbolt.Tx
	rcpts        map[string]*storedRcpt // by string(recipient key)
	accts        map[string]string      // queue id -> account; "" unknown
	erasedIDs    map[string]bool        // queue id -> erased (Erase never runs in a batch)
	overCap      int
	erased       int
	outboxAdded  int
	reclassified []string // new classes, for metrics
	size         int64    // of the database after the commit
}

// update runs fn in a write transaction, turning a panic in it (the
// transaction is rolled back) into its error, a *guard.Panic.
func (s *Store) update(component string, fn func(*bbolt.Tx) error) (err error) {
	if p := guard.Run(component, s.panicLog, func() { err = s.db.Update(fn) }); p != nil {
		return p
	}
	return err
}

// write adds one request to the transaction: an event, or the relay's
// write. A panic is its error, a *guard.Panic, and the caller rolls the
// transaction back. guard.Check lets a test make an event's write panic.
func (c *commitTx) write(component string, r *eventReq) (err error) {
	if p := guard.Run(component, c.s.panicLog, func() {
		if r.fn != nil {
			err = r.fn(c.tx)
			clear(c.accts) // the write may have put a message
			return
		}
		guard.Check(component, r.ev.Message)
		err = c.add(r)
	}); p != nil {
		return p
	}
	return err
}

func (c *commitTx) account(id string) (string, error) {
	if a, ok := c.accts[id]; ok {
		return a, nil
	}
	if e, ok := c.s.cache.get(id); ok && e.msg != nil {
		c.accts[id] = e.msg.Account
		return e.msg.Account, nil
	}
	a, _, err := accountOf(c.tx, id)
	if err != nil {
		return "", err
	}
	c.accts[id] = a
	return a, nil
}

func (c *commitTx) rcpt(key []byte) (*storedRcpt, error) {
	if r, ok := c.rcpts[string(key)]; ok {
		return r, nil
	}
	r := &storedRcpt{}
	if v := c.tx.Bucket(bucketRecipients).Get(key); v != nil {
		if err := json.Unmarshal(v, r); err != nil {
			return nil, err
		}
	}
	c.rcpts[string(key)] = r
	return r, nil
}

func (c *commitTx) flush() error {
	b := c.tx.Bucket(bucketRecipients)
	for k, r := range c.rcpts {
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

func (c *commitTx) add(r *eventReq) error {
	// A copy: the evidence added below must not stay on the request if this
	// transaction is rolled back and the event added again.
	ev := r.ev
	e := &ev
	erased, ok := c.erasedIDs[e.Message]
	if !ok {
		erased = isErased(c.tx, e.Message)
		c.erasedIDs[e.Message] = erased
	}
	if erased {
		c.erased++
		return nil
	}
	acct, err := c.account(e.Message)
	if err != nil {
		return err
	}
	if e.Recipient < 0 || int64(e.Recipient) > int64(^uint32(0)) {
		return fmt.Errorf("invalid recipient %d", e.Recipient)
	}
	rkey := deliveryKey(e.Message, e.Recipient)
	rs, err := c.rcpt(rkey)
	if err != nil {
		return err
	}
	burstable := e.Type == store.EventClick && e.Class != classify.Self
	var history []windowClick
	if burstable {
		if history, err = c.clickWindow(rkey, rs, e.At); err != nil {
			return err
		}
	}
	changed, joined := sequenceEvidence(rs, e, history)
	var (
		rc      classify.RecipientClick
		mc      *storedMsgClicks
		scanned []int
	)
	if burstable {
		if rc, mc, scanned, err = c.multiRecipient(rkey, e); err != nil {
			return err
		}
	}
	if nearHoneypot(rs, e, c.s.opts.ScannerWindow) {
		changed = true
	}
	kept := rs.Kept < c.s.opts.MaxEventsPerRecipient
	var seq uint64
	if kept {
		value := r.value
		if changed {
			if value, err = encodeEvent(&storedEvent{
				Type: e.Type, At: e.At, Recipient: e.Recipient, Link: e.Link, URL: e.URL,
				IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Country: e.Country, City: e.City,
				Class: e.Class, Reasons: e.Reasons,
			}); err != nil {
				return err
			}
		}
		events := c.tx.Bucket(bucketEvents)
		if seq, err = events.NextSequence(); err != nil {
			return err
		}
		if err := events.Put(eventKey(e.Message, seq), value); err != nil {
			return err
		}
		rs.Kept++
		if acct != "" {
			if _, err := c.feed(acct, storedFeedEntry{Kind: e.Type, Message: e.Message, Recipient: e.Recipient, Event: seq, At: e.At}); err != nil {
				return err
			}
		}
	} else {
		c.overCap++
		if rs.Tally == nil {
			rs.Tally = &tally{}
		}
		rs.Tally.add(e.Type, e.Class, e.Link, e.At)
	}
	// Before keepClick, which may reorder rs.OverCap.
	for _, w := range joined {
		if err := c.reclassify(acct, e, rs, w); err != nil {
			return err
		}
	}
	if err := c.keepMultiRecipient(acct, e, rc, mc, scanned, seq, kept); err != nil {
		return err
	}
	if err := c.honeypotMarks(acct, e, rs, seq, kept); err != nil {
		return err
	}
	if err := c.gatewayPairs(acct, e, rs, seq, kept); err != nil {
		return err
	}
	if burstable {
		return c.keepClick(rkey, rs, e, seq, kept)
	}
	return nil
}

// reclassify makes w, a click of e's copy, part of the burst e completes:
// its class becomes scanner, with the reason click-burst. A click kept in
// detail gets a reclassified entry in the feed when its class changes; one
// past the cap leaves the copy's counts.
func (c *commitTx) reclassify(acct string, e *store.Event, rs *storedRcpt, w windowClick) error {
	if w.key == nil {
		oc := &rs.OverCap[w.over]
		if t := rs.Tally; t != nil && classify.Counted(oc.Class) {
			t.Clicks = max(t.Clicks-1, 0)
			if t.Links[oc.Link] > 0 {
				t.Links[oc.Link]--
			}
		}
		oc.Class, oc.Burst = classify.Scanner, true
		return nil
	}
	if err := c.tx.Bucket(bucketClicks).Put(w.key, clickValue(w.Link, true)); err != nil {
		return err
	}
	events := c.tx.Bucket(bucketEvents)
	key := eventKey(e.Message, w.seq)
	v := events.Get(key)
	if v == nil {
		return nil // expired
	}
	var se storedEvent
	if err := json.Unmarshal(v, &se); err != nil {
		return err
	}
	prev := se.Class
	se.Class, se.Reasons = classify.InBurst(se.Reasons)
	nv, err := encodeEvent(&se)
	if err != nil {
		return err
	}
	if err := events.Put(key, nv); err != nil {
		return err
	}
	if prev == se.Class || acct == "" {
		return nil
	}
	c.reclassified = append(c.reclassified, se.Class)
	_, err = c.feed(acct, storedFeedEntry{
		Kind: feedKindRecls, Message: e.Message, Recipient: e.Recipient, Event: w.seq, At: e.At,
		Class: se.Class, Prev: prev, Reasons: se.Reasons,
	})
	return err
}

// gatewayPairs applies the gateway pair rule (classify.InGatewayPair) in
// the order a click then a pixel fetch: a gateway's pixel fetch e makes
// the copy's recent clicks from the same gateway address scanner's, each
// with a reclassified entry in the feed. A click e that may pair with a
// later fetch is remembered in rs.GatewayClicks.
func (c *commitTx) gatewayPairs(acct string, e *store.Event, rs *storedRcpt, seq uint64, kept bool) error {
	switch {
	case e.IP == "" || !classify.FromGateway(e.Reasons):
		return nil
	case e.Type == store.EventClick:
		if !kept || e.Class == classify.Scanner || e.Class == classify.Self {
			return nil
		}
		rs.GatewayClicks = rememberHit(rs.GatewayClicks, gatewayClick{IP: e.IP, At: e.At, Seq: seq}, classify.GatewayPairWindow, maxGatewayClicks)
		return nil
	case e.Type != store.EventOpen:
		return nil
	}
	o := classify.GatewayOpen{IP: e.IP, At: e.At}
	left, err := c.reclassifyRecent(acct, e, rs.GatewayClicks, nil, func(v classify.Verdict, ip string, at time.Time) classify.Verdict {
		return classify.InGatewayPair(v, ip, at, o)
	})
	if err != nil {
		return err
	}
	rs.GatewayClicks = left
	return nil
}

// rememberHit adds g to a copy's bounded list of recent hits that a later
// event may reclassify: in time order, only those within window of the
// newest, at most limit of them.
func rememberHit(list []gatewayClick, g gatewayClick, window time.Duration, limit int) []gatewayClick {
	list = append(list, g)
	slices.SortFunc(list, func(a, b gatewayClick) int { return a.At.Compare(b.At) })
	newest := list[len(list)-1].At
	list = slices.DeleteFunc(list, func(g gatewayClick) bool { return g.At.Before(newest.Add(-window)) })
	return list[max(len(list)-limit, 0):]
}

// reclassifyRecent applies rule to the copy's recent hits refs that match
// (all of them when match is nil), as evidence e brings: each event whose
// class changes is stored again and, for an account's message, announced
// with a reclassified feed entry. It returns the refs still to be judged by
// a later event: those that did not match or whose class did not change.
// An expired event is dropped.
func (c *commitTx) reclassifyRecent(acct string, e *store.Event, refs []gatewayClick, match func(gatewayClick) bool,
	rule func(v classify.Verdict, ip string, at time.Time) classify.Verdict) ([]gatewayClick, error) {
	events := c.tx.Bucket(bucketEvents)
	var left []gatewayClick
	for _, g := range refs {
		if match != nil && !match(g) {
			left = append(left, g)
			continue
		}
		key := eventKey(e.Message, g.Seq)
		v := events.Get(key)
		if v == nil {
			continue // expired
		}
		var se storedEvent
		if err := json.Unmarshal(v, &se); err != nil {
			return nil, err
		}
		prev := se.Class
		nv := rule(classify.Verdict{Class: se.Class, Client: se.Client, Reasons: se.Reasons}, se.IP, se.At)
		if nv.Class == prev {
			left = append(left, g)
			continue
		}
		se.Class, se.Reasons = nv.Class, nv.Reasons
		b, err := encodeEvent(&se)
		if err != nil {
			return nil, err
		}
		if err := events.Put(key, b); err != nil {
			return nil, err
		}
		if acct == "" {
			continue
		}
		c.reclassified = append(c.reclassified, se.Class)
		if _, err := c.feed(acct, storedFeedEntry{
			Kind: feedKindRecls, Message: e.Message, Recipient: e.Recipient, Event: g.Seq, At: e.At,
			Class: se.Class, Prev: prev, Reasons: se.Reasons,
		}); err != nil {
			return nil, err
		}
	}
	return left, nil
}

// sequenceEvidence adds to e what the copy's other events show
// (classify.InSequence, classify.InGatewayPair) and returns whether e
// changed and which clicks of history join a burst with it, not being part
// of one yet. A counted open marks the copy as opened, for the clicks
// after it; a gateway's pixel fetch is kept for the clicks after it.
func sequenceEvidence(rs *storedRcpt, e *store.Event, history []windowClick) (bool, []windowClick) {
	if e.Type == store.EventOpen {
		if classify.Counted(e.Class) {
			rs.Opened = true
		}
		if e.IP != "" && classify.FromGateway(e.Reasons) && (rs.Gateway == nil || !e.At.Before(rs.Gateway.At)) {
			rs.Gateway = &gatewayOpen{IP: e.IP, At: e.At}
		}
		return false, nil
	}
	if e.Type != store.EventClick || e.Class == classify.Self {
		return false, nil
	}
	clicks := make([]classify.Click, len(history))
	for i, w := range history {
		clicks[i] = w.Click
	}
	v, in := classify.InSequence(classify.Verdict{Class: e.Class, Client: e.Client, Reasons: e.Reasons},
		classify.Click{Link: e.Link, At: e.At}, rs.Opened, clicks)
	if g := rs.Gateway; g != nil {
		v = classify.InGatewayPair(v, e.IP, e.At, classify.GatewayOpen{IP: g.IP, At: g.At})
	}
	e.Class, e.Reasons = v.Class, v.Reasons
	var joined []windowClick
	for _, i := range in {
		if !history[i].burst {
			joined = append(joined, history[i])
		}
	}
	return true, joined
}

// putFeed appends an entry to the account's feed, and to the webhook outbox
// when the account has a webhook. It returns the entry's sequence.
func (s *Store) putFeed(tx *bbolt.Tx, acct string, fe storedFeedEntry) (uint64, error) {
	feed := appendBucket(tx, bucketFeed)
	seq, err := feed.NextSequence()
	if err != nil {
		return 0, err
	}
	v, err := encodeFeedEntry(&fe)
	if err != nil {
		return 0, err
	}
	if err := feed.Put(feedKey(acct, seq), v); err != nil {
		return 0, err
	}
	if s.webhooks[acct] {
		if err := putOutbox(tx, time.Now(), seq, storedOutbox{Account: acct, First: time.Now().Unix()}); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

func (c *commitTx) feed(acct string, fe storedFeedEntry) (uint64, error) {
	seq, err := c.s.putFeed(c.tx, acct, fe)
	if err == nil && c.s.webhooks[acct] {
		c.outboxAdded++
	}
	return seq, err
}
