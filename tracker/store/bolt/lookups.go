package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/internal/msgid"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

// accountOf returns the account of a stored message.
func accountOf(tx *bbolt.Tx, id string) (string, bool, error) {
	v := tx.Bucket(bucketMessages).Get([]byte(id))
	if v == nil {
		return "", false, nil
	}
	var rec struct {
		Account string `json:"acct"`
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return "", false, err
	}
	return rec.Account, true, nil
}

// meta returns what classification needs about a message, from the cache
// or, on a miss, from one read transaction.
func (s *Store) meta(id string) (*metaEntry, error) {
	if e, ok := s.cache.get(id); ok {
		return e, nil
	}
	gen := s.cache.begin()
	e := &metaEntry{id: id}
	err := s.db.View(func(tx *bbolt.Tx) error {
		if isErased(tx, id) {
			e.erased = true
			return nil
		}
		v := tx.Bucket(bucketMessages).Get([]byte(id))
		if v == nil {
			return nil
		}
		var rec storedMessage
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		e.msg = rec.message()
		e.delivered = make([]time.Time, len(rec.Recipients))
		prefix := prefixKey(id)
		c := tx.Bucket(bucketDeliveries).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+4 {
				continue
			}
			i := int(binary.BigEndian.Uint32(k[len(prefix):]))
			var d storedDelivery
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			if i < len(e.delivered) && d.Status == delivery.Delivered {
				e.delivered[i] = d.UpdatedAt
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.cache.add(gen, e)
	return e, nil
}

// Message implements store.Store. It is served from memory for recently seen
// messages.
func (s *Store) Message(ctx context.Context, id string) (*store.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if validID(id) != nil {
		return nil, store.ErrNotFound
	}
	e, err := s.meta(id)
	switch {
	case err != nil:
		return nil, err
	case e.erased:
		return nil, store.ErrErased
	case e.msg == nil:
		return nil, store.ErrNotFound
	}
	return e.msg, nil
}

// Delivery implements store.DeliveryReader. It only knows delivered copies (the
// time of delivery); other states are ErrNotFound.
func (s *Store) Delivery(ctx context.Context, message string, recipient int) (store.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return store.Delivery{}, err
	}
	if validID(message) != nil || recipient < 0 {
		return store.Delivery{}, store.ErrNotFound
	}
	e, err := s.meta(message)
	if err != nil {
		return store.Delivery{}, err
	}
	if recipient >= len(e.delivered) || e.delivered[recipient].IsZero() {
		return store.Delivery{}, store.ErrNotFound
	}
	return store.Delivery{Status: delivery.Delivered, UpdatedAt: e.delivered[recipient]}, nil
}

func (rec *storedMessage) message() *store.Message {
	m := &store.Message{
		ID: rec.ID, MessageID: rec.MessageID, Account: rec.Account, From: rec.From,
		Subject: rec.Subject, SubmitIP: rec.SubmitIP, AcceptedAt: rec.AcceptedAt, Mode: rec.Mode,
		Recipients: make([]store.Recipient, len(rec.Recipients)),
	}
	for i, r := range rec.Recipients {
		m.Recipients[i] = store.Recipient{Address: r.Address, Tracked: r.Tracked}
	}
	return m
}

// resolve finds the message of account named by ref (queue id or
// Message-ID, with or without <>).
func resolve(tx *bbolt.Tx, account, ref string) (storedMessage, error) {
	var rec storedMessage
	mb := tx.Bucket(bucketMessages)
	if v := mb.Get([]byte(ref)); v != nil {
		if err := json.Unmarshal(v, &rec); err != nil {
			return rec, err
		}
		if rec.Account == account {
			return rec, nil
		}
	}
	id := tx.Bucket(bucketMsgIDs).Get(msgIDKey(account, msgid.Normalize(ref)))
	if id == nil {
		return rec, store.ErrNotFound
	}
	v := mb.Get(id)
	if v == nil {
		return rec, store.ErrNotFound
	}
	rec = storedMessage{}
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, err
	}
	if rec.Account != account {
		return rec, store.ErrNotFound
	}
	return rec, nil
}

// Lookup implements store.Store.
func (s *Store) Lookup(ctx context.Context, account, ref string) (*store.MessageView, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ref == "" || len(ref) > maxIDLen+2 {
		return nil, store.ErrNotFound
	}
	var (
		rec        storedMessage
		links      []string
		deliveries = map[int]store.Delivery{}
		tallies    = map[int]*tally{}
		events     []store.Event
	)
	s.caughtUp(ctx)
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		if rec, err = resolve(tx, account, ref); err != nil {
			return err
		}
		if v := tx.Bucket(bucketLinks).Get([]byte(rec.ID)); v != nil {
			if err := json.Unmarshal(v, &links); err != nil {
				return err
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
				return err
			}
			deliveries[int(binary.BigEndian.Uint32(k[len(prefix):]))] = store.Delivery(d)
		}
		c = tx.Bucket(bucketRecipients).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+4 {
				continue
			}
			var r storedRcpt
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if r.Tally != nil {
				tallies[int(binary.BigEndian.Uint32(k[len(prefix):]))] = r.Tally
			}
		}
		c = tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+8 {
				continue
			}
			var e storedEvent
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			events = append(events, store.Event{
				ID:   s.eventID(keySeq(k)),
				Type: e.Type, At: e.At, Message: rec.ID, Recipient: e.Recipient, Link: e.Link,
				IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Country: e.Country, City: e.City,
				Class: e.Class, Reasons: e.Reasons, URL: e.URL,
			})
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, store.ErrNotFound
		}
		return nil, fmt.Errorf("tracker: lookup %q: %w", ref, err)
	}
	counts := make(map[int]*store.Tally, len(tallies))
	for i, t := range tallies {
		counts[i] = (*store.Tally)(t)
	}
	return store.BuildView(rec.message(), links, deliveries, events, counts), nil
}
