package tracker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Feed limits.
const (
	DefaultFeedLimit = 100
	MaxFeedLimit     = 1000
)

// ErrBadCursor is returned by Feed for a cursor it did not issue.
var ErrBadCursor = errors.New("tracker: invalid cursor")

// storedFeedEntry is one entry of an account's feed. Event entries point at
// the event (so erasing or expiring the event removes its entry's
// content); delivery and reclassified entries carry their own data.
type storedFeedEntry struct {
	Kind      string          `json:"k"`
	Message   string          `json:"m"`
	Recipient int             `json:"r"`
	Event     uint64          `json:"e,omitempty"`
	At        time.Time       `json:"at"`
	Class     string          `json:"c,omitempty"`
	Prev      string          `json:"p,omitempty"`
	Reasons   []string        `json:"why,omitempty"`
	Delivery  *storedDelivery `json:"d,omitempty"`
}

// storedOutbox is a webhook delivery waiting in the outbox.
type storedOutbox struct {
	Account  string `json:"a"`
	Attempts int    `json:"n,omitempty"`
	First    int64  `json:"f"` // unix seconds of the entry
}

// FeedEntry is one entry of GET /api/v1/events and one webhook body.
// Type is open, click, delivery or reclassified.
type FeedEntry struct {
	// ID is unique and stable: webhook receivers dedupe on it. For open and
	// click entries it is the event's id in the message view.
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	At        time.Time `json:"at"`
	Message   string    `json:"message"`    // queue id
	MessageID string    `json:"message_id"` // Message-ID without <>
	Recipient string    `json:"recipient"`
	// Open, click and reclassified entries.
	Link      string   `json:"link,omitempty"`
	LinkIndex *int     `json:"link_index,omitempty"`
	IP        string   `json:"ip,omitempty"`
	UserAgent string   `json:"user_agent,omitempty"`
	Client    string   `json:"client,omitempty"`
	Country   string   `json:"country,omitempty"`
	City      string   `json:"city,omitempty"`
	Class     string   `json:"class,omitempty"`
	Reasons   []string `json:"reasons,omitempty"`
	// Reclassified entries: the event whose class changed, its type and
	// its class before.
	EventID       string `json:"event_id,omitempty"`
	EventType     string `json:"event_type,omitempty"`
	PreviousClass string `json:"previous_class,omitempty"`
	// Delivery entries.
	Delivery *DeliveryView `json:"delivery,omitempty"`
}

// FeedPage is the answer of GET /api/v1/events. Next is the cursor to ask
// with next time; it is returned even when Events is empty.
type FeedPage struct {
	Events []FeedEntry `json:"events"`
	Next   string      `json:"next"`
}

func encodeCursor(seq uint64) string {
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, seq))
}

func decodeCursor(c string) (uint64, error) {
	if c == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 8 {
		return 0, ErrBadCursor
	}
	return binary.BigEndian.Uint64(b), nil
}

// feedReader resolves feed entries within one read transaction, caching
// the messages it reads.
type feedReader struct {
	s    *BoltStore
	tx   *bolt.Tx
	msgs map[string]*storedMessage // nil value: gone
}

func (fr *feedReader) message(id string) (*storedMessage, error) {
	if m, ok := fr.msgs[id]; ok {
		return m, nil
	}
	var m *storedMessage
	if v := fr.tx.Bucket(bucketMessages).Get([]byte(id)); v != nil {
		m = new(storedMessage)
		if err := json.Unmarshal(v, m); err != nil {
			return nil, err
		}
	}
	fr.msgs[id] = m
	return m, nil
}

// entry returns the API form of a stored entry, or nil when what it is
// about was erased or has expired.
func (fr *feedReader) entry(seq uint64, v []byte) (*FeedEntry, error) {
	var fe storedFeedEntry
	if err := json.Unmarshal(v, &fe); err != nil {
		return nil, err
	}
	m, err := fr.message(fe.Message)
	if err != nil || m == nil {
		return nil, err
	}
	out := &FeedEntry{
		Type: fe.Kind, At: fe.At.UTC(), Message: m.ID, MessageID: m.MessageID,
	}
	if fe.Recipient >= 0 && fe.Recipient < len(m.Recipients) {
		out.Recipient = m.Recipients[fe.Recipient].Address
	}
	switch fe.Kind {
	case feedKindDelivery:
		if fe.Delivery == nil {
			return nil, nil
		}
		out.ID = fr.s.entryID("dl_", seq)
		out.Delivery = &DeliveryView{Status: fe.Delivery.Status, Attempts: fe.Delivery.Attempts,
			LastResponse: fe.Delivery.LastResponse, UpdatedAt: fe.Delivery.UpdatedAt.UTC()}
		return out, nil
	case feedKindOpen, feedKindClick, feedKindRecls:
	default:
		return nil, nil
	}
	ev := fr.tx.Bucket(bucketEvents).Get(eventKey(fe.Message, fe.Event))
	if ev == nil {
		return nil, nil
	}
	var se storedEvent
	if err := json.Unmarshal(ev, &se); err != nil {
		return nil, err
	}
	out.IP, out.UserAgent, out.Client = se.IP, se.UserAgent, se.Client
	out.Country, out.City = se.Country, se.City
	if se.Type == EventClick {
		out.Link = se.URL
		link := se.Link
		out.LinkIndex = &link
	}
	if fe.Kind == feedKindRecls {
		out.ID = fr.s.entryID("rc_", seq)
		out.EventID = fr.s.eventID(fe.Event)
		out.EventType = se.Type
		out.Class, out.PreviousClass, out.Reasons = fe.Class, fe.Prev, fe.Reasons
	} else {
		// The event's current class: an entry read after a change shows
		// it, and the change also has its own reclassified entry, so a
		// client that saw the earlier class learns of the change.
		out.ID = fr.s.eventID(fe.Event)
		out.At = se.At.UTC()
		out.Class, out.Reasons = se.Class, se.Reasons
	}
	if out.Reasons == nil {
		out.Reasons = []string{}
	}
	return out, nil
}

// Feed implements Store.
func (s *BoltStore) Feed(ctx context.Context, account, after string, limit int) (*FeedPage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	from, err := decodeCursor(after)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultFeedLimit
	}
	limit = min(limit, MaxFeedLimit)
	page := &FeedPage{Events: []FeedEntry{}, Next: encodeCursor(from)}
	if strings.IndexByte(account, 0) >= 0 {
		return page, nil
	}
	s.caughtUp(ctx)
	err = s.db.View(func(tx *bolt.Tx) error {
		fr := &feedReader{s: s, tx: tx, msgs: map[string]*storedMessage{}}
		prefix := prefixKey(account)
		c := tx.Bucket(bucketFeed).Cursor()
		for k, v := c.Seek(feedKey(account, from+1)); k != nil && bytes.HasPrefix(k, prefix) && len(page.Events) < limit; k, v = c.Next() {
			if len(k) != len(prefix)+8 {
				continue
			}
			seq := keySeq(k)
			page.Next = encodeCursor(seq)
			e, err := fr.entry(seq, v)
			if err != nil {
				return err
			}
			if e != nil {
				page.Events = append(page.Events, *e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tracker: feed of %s: %w", account, err)
	}
	return page, nil
}

// OutboxItem is a webhook delivery due now.
type OutboxItem struct {
	key      []byte
	Account  string
	Attempts int       // failed attempts so far
	First    time.Time // when the entry was queued
	ID       string    // the entry's id
	Body     []byte    // JSON FeedEntry
}

// outboxDue returns up to limit outbox items due at now, oldest due first.
// Items whose entry was erased or has expired are removed.
func (s *BoltStore) outboxDue(now time.Time, limit int) ([]OutboxItem, error) {
	var items []OutboxItem
	var gone [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		fr := &feedReader{s: s, tx: tx, msgs: map[string]*storedMessage{}}
		c := tx.Bucket(bucketOutbox).Cursor()
		nowKey := uint64(now.UnixNano())
		for k, v := c.First(); k != nil && len(items) < limit; k, v = c.Next() {
			if len(k) != 16 || binary.BigEndian.Uint64(k) > nowKey {
				break
			}
			var o storedOutbox
			if err := json.Unmarshal(v, &o); err != nil {
				gone = append(gone, bytes.Clone(k))
				continue
			}
			seq := keySeq(k)
			fv := tx.Bucket(bucketFeed).Get(feedKey(o.Account, seq))
			var e *FeedEntry
			if fv != nil {
				var err error
				if e, err = fr.entry(seq, fv); err != nil {
					return err
				}
			}
			if e == nil {
				gone = append(gone, bytes.Clone(k))
				continue
			}
			body, err := json.Marshal(e)
			if err != nil {
				return err
			}
			items = append(items, OutboxItem{key: bytes.Clone(k), Account: o.Account, Attempts: o.Attempts,
				First: time.Unix(o.First, 0), ID: e.ID, Body: body})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tracker: read outbox: %w", err)
	}
	if len(gone) > 0 {
		err = s.outboxRemove(gone)
	}
	return items, err
}

// outboxDone removes delivered (or abandoned) items.
func (s *BoltStore) outboxDone(items []OutboxItem) error {
	if len(items) == 0 {
		return nil
	}
	keys := make([][]byte, len(items))
	for i, it := range items {
		keys[i] = it.key
	}
	return s.outboxRemove(keys)
}

// outboxFault, set by tests only, makes an outbox transaction fail after
// its changes, as a failing commit would.
var outboxFault atomic.Pointer[func() error]

// outboxRemove deletes the outbox entries of keys that are still there,
// and takes them off the outbox gauge once the deletion has committed: a
// transaction that fails leaves the entries, and the gauge, as they were.
func (s *BoltStore) outboxRemove(keys [][]byte) error {
	removed := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		removed = 0
		b := tx.Bucket(bucketOutbox)
		for _, k := range keys {
			if b.Get(k) == nil {
				continue
			}
			if err := b.Delete(k); err != nil {
				return err
			}
			removed++
		}
		if f := outboxFault.Load(); f != nil {
			return (*f)()
		}
		return nil
	})
	if err == nil {
		s.outboxN.Add(-int64(removed))
	}
	return err
}

// outboxRetry moves items to their next due time, counting the attempt.
func (s *BoltStore) outboxRetry(items []OutboxItem, next []time.Time) error {
	if len(items) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		for i, it := range items {
			if b.Get(it.key) == nil {
				continue
			}
			if err := b.Delete(it.key); err != nil {
				return err
			}
			o := storedOutbox{Account: it.Account, Attempts: it.Attempts + 1, First: it.First.Unix()}
			if err := putOutbox(tx, next[i], keySeq(it.key), o); err != nil {
				return err
			}
		}
		return nil
	})
}
