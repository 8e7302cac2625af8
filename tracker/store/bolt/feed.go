package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

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

func encodeCursor(seq uint64) string {
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, seq))
}

func decodeCursor(c string) (uint64, error) {
	if c == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 8 {
		return 0, store.ErrBadCursor
	}
	return binary.BigEndian.Uint64(b), nil
}

// feedReader resolves feed entries within one read transaction, caching
// the messages it reads.
type feedReader struct {
	s    *Store
	tx   *bbolt.Tx
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
func (fr *feedReader) entry(seq uint64, v []byte) (*store.FeedEntry, error) {
	var fe storedFeedEntry
	if err := json.Unmarshal(v, &fe); err != nil {
		return nil, err
	}
	m, err := fr.message(fe.Message)
	if err != nil || m == nil {
		return nil, err
	}
	out := &store.FeedEntry{
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
		out.Delivery = &store.DeliveryView{Status: fe.Delivery.Status, Attempts: fe.Delivery.Attempts,
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
	if se.Type == store.EventClick {
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

// Feed implements store.Store.
func (s *Store) Feed(ctx context.Context, account, after string, limit int) (*store.FeedPage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	from, err := decodeCursor(after)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = store.DefaultFeedLimit
	}
	limit = min(limit, store.MaxFeedLimit)
	page := &store.FeedPage{Events: []store.FeedEntry{}, Next: encodeCursor(from)}
	if strings.IndexByte(account, 0) >= 0 {
		return page, nil
	}
	s.caughtUp(ctx)
	err = s.db.View(func(tx *bbolt.Tx) error {
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
