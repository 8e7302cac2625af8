package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/tracker/store"
)

// ExportMessage is a message with everything stored about it, as read for
// copying the store into another backend.
type ExportMessage struct {
	Message    store.Message
	Links      []string
	Deliveries map[int]store.Delivery
	// Events are the events kept in detail, in sequence order, each with
	// its sequence in the store.
	Events []ExportEvent
	// Tallies are the counts of the events not kept in detail (past the
	// cap, or expired), by recipient.
	Tallies map[int]store.Tally
}

// ExportEvent is an event with its sequence, which names it (Event.ID).
type ExportEvent struct {
	Seq   uint64
	Event store.Event
}

// ExportFeedEntry is an entry of an account's feed, with its sequence.
// Open and click entries name their event by sequence; reclassified
// entries carry the class change, delivery entries the state.
type ExportFeedEntry struct {
	Seq       uint64
	Account   string
	Kind      string
	Message   string
	Recipient int
	Event     uint64
	At        time.Time
	Class     string
	Prev      string
	Reasons   []string
	Delivery  *store.Delivery
}

// ExportOutbox is a webhook delivery waiting in the outbox: the feed entry
// it sends, when it is due and how often it was tried.
type ExportOutbox struct {
	Entry    uint64
	Account  string
	Due      time.Time
	Attempts int
	First    time.Time
}

// ID returns the store's random id (hex), part of every event and feed
// entry id.
func (s *Store) ID() string { return s.storeID }

// ExportMessages calls fn with each message, in queue id order, in one
// read transaction. Erased messages have nothing left to export (see
// ExportErased).
func (s *Store) ExportMessages(ctx context.Context, fn func(*ExportMessage) error) error {
	s.caughtUp(ctx)
	return s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketMessages).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var rec storedMessage
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("tracker: export message %q: %w", k, err)
			}
			m, err := s.exportMessage(tx, &rec)
			if err != nil {
				return fmt.Errorf("tracker: export message %q: %w", k, err)
			}
			if err := fn(m); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Store) exportMessage(tx *bbolt.Tx, rec *storedMessage) (*ExportMessage, error) {
	m := &ExportMessage{Message: *rec.message(), Deliveries: map[int]store.Delivery{}, Tallies: map[int]store.Tally{}}
	if v := tx.Bucket(bucketLinks).Get([]byte(rec.ID)); v != nil {
		if err := json.Unmarshal(v, &m.Links); err != nil {
			return nil, err
		}
	}
	prefix := prefixKey(rec.ID)
	c := tx.Bucket(bucketDeliveries).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != len(prefix)+4 {
			continue
		}
		var d storedDelivery
		if err := json.Unmarshal(v, &d); err != nil {
			return nil, err
		}
		m.Deliveries[int(binary.BigEndian.Uint32(k[len(prefix):]))] = store.Delivery(d)
	}
	c = tx.Bucket(bucketRecipients).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != len(prefix)+4 {
			continue
		}
		var r storedRcpt
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, err
		}
		if r.Tally != nil {
			m.Tallies[int(binary.BigEndian.Uint32(k[len(prefix):]))] = store.Tally(*r.Tally)
		}
	}
	c = tx.Bucket(bucketEvents).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != len(prefix)+8 {
			continue
		}
		var e storedEvent
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, err
		}
		seq := keySeq(k)
		m.Events = append(m.Events, ExportEvent{Seq: seq, Event: store.Event{
			ID:   s.eventID(seq),
			Type: e.Type, At: e.At, Message: rec.ID, Recipient: e.Recipient, Link: e.Link,
			IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Country: e.Country, City: e.City,
			Class: e.Class, Reasons: e.Reasons, URL: e.URL,
		}})
	}
	return m, nil
}

// ExportFeed calls fn with each feed entry, by account and in sequence
// order within an account, in one read transaction.
func (s *Store) ExportFeed(ctx context.Context, fn func(*ExportFeedEntry) error) error {
	s.caughtUp(ctx)
	return s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketFeed).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			i := bytes.IndexByte(k, 0)
			if i < 0 || len(k) != i+1+8 {
				continue
			}
			var fe storedFeedEntry
			if err := json.Unmarshal(v, &fe); err != nil {
				return fmt.Errorf("tracker: export feed entry %x: %w", k, err)
			}
			e := &ExportFeedEntry{Seq: keySeq(k), Account: string(k[:i]), Kind: fe.Kind, Message: fe.Message,
				Recipient: fe.Recipient, Event: fe.Event, At: fe.At, Class: fe.Class, Prev: fe.Prev, Reasons: fe.Reasons}
			if fe.Delivery != nil {
				d := store.Delivery(*fe.Delivery)
				e.Delivery = &d
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// ExportOutbox calls fn with each webhook delivery waiting in the outbox,
// in due order.
func (s *Store) ExportOutbox(ctx context.Context, fn func(*ExportOutbox) error) error {
	s.caughtUp(ctx)
	return s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(k) != 16 {
				continue
			}
			var o storedOutbox
			if err := json.Unmarshal(v, &o); err != nil {
				return fmt.Errorf("tracker: export outbox entry %x: %w", k, err)
			}
			e := &ExportOutbox{Entry: keySeq(k), Account: o.Account, Attempts: o.Attempts,
				Due: time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC(), First: time.Unix(o.First, 0).UTC()}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// ExportErased calls fn with each erased message's queue id and erasure
// time.
func (s *Store) ExportErased(ctx context.Context, fn func(id string, at time.Time) error) error {
	s.caughtUp(ctx)
	return s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketErased).ForEach(func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			at, err := time.Parse(time.RFC3339, string(v))
			if err != nil {
				return fmt.Errorf("tracker: export erased %q: %w", k, err)
			}
			return fn(string(k), at)
		})
	})
}
