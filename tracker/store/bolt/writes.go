package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/internal/msgid"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

// PutMessage implements store.Store. Putting the same message again replaces it;
// a message whose data was erased stays erased.
func (s *Store) PutMessage(ctx context.Context, m store.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validID(m.ID); err != nil {
		return err
	}
	m.MessageID = msgid.Normalize(m.MessageID)
	if len(m.MessageID) > maxIDLen {
		return fmt.Errorf("tracker: message %s: Message-ID too long", m.ID)
	}
	rec := storedMessage{
		ID: m.ID, MessageID: m.MessageID, Account: m.Account, From: m.From,
		Subject: store.TruncateSubject(m.Subject), SubmitIP: m.SubmitIP, AcceptedAt: m.AcceptedAt.UTC(), Mode: m.Mode,
		Recipients: make([]storedRecipient, len(m.Recipients)),
	}
	for i, r := range m.Recipients {
		rec.Recipients[i] = storedRecipient{Address: r.Address, Tracked: r.Tracked}
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("tracker: encode message %s: %w", m.ID, err)
	}
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		return putMessage(tx, &rec, val)
	}, func(error) { s.cache.invalidate(m.ID) })
	if err != nil {
		return fmt.Errorf("tracker: put message %s: %w", m.ID, err)
	}
	return nil
}

// putMessage stores rec, encoded as val, unless it was erased: the record,
// its Message-ID and its place in the browse index.
func putMessage(tx *bbolt.Tx, rec *storedMessage, val []byte) error {
	if isErased(tx, rec.ID) {
		return nil
	}
	mb := appendBucket(tx, bucketMessages)
	ib := tx.Bucket(bucketMsgIDs)
	var old *storedMessage
	if v := mb.Get([]byte(rec.ID)); v != nil {
		var prev storedMessage
		if json.Unmarshal(v, &prev) == nil {
			old = &prev
		}
		if old != nil && prev.MessageID != "" &&
			(prev.MessageID != rec.MessageID || prev.Account != rec.Account) {
			k := msgIDKey(prev.Account, prev.MessageID)
			if bytes.Equal(ib.Get(k), []byte(rec.ID)) {
				if err := ib.Delete(k); err != nil {
					return err
				}
			}
		}
	}
	if err := mb.Put([]byte(rec.ID), val); err != nil {
		return err
	}
	if err := putBrowse(tx, old, rec); err != nil {
		return err
	}
	if rec.MessageID != "" {
		return ib.Put(msgIDKey(rec.Account, rec.MessageID), []byte(rec.ID))
	}
	return nil
}

// SetLinks implements store.Store.
func (s *Store) SetLinks(ctx context.Context, message string, links []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validID(message); err != nil {
		return err
	}
	if links == nil {
		links = []string{}
	}
	val, err := json.Marshal(links)
	if err != nil {
		return fmt.Errorf("tracker: encode links of %s: %w", message, err)
	}
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		if isErased(tx, message) {
			return nil
		}
		return appendBucket(tx, bucketLinks).Put([]byte(message), val)
	}, nil)
	if err != nil {
		return fmt.Errorf("tracker: set links of %s: %w", message, err)
	}
	return nil
}

// SetDelivery implements store.Store. Once a copy is delivered, reporting it
// delivered again keeps the first delivery time, which is what scanner
// detection measures clicks against. A change of status or of the number
// of attempts is also an entry of the account's feed.
func (s *Store) SetDelivery(ctx context.Context, message string, recipient int, d store.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validID(message); err != nil {
		return err
	}
	if recipient < 0 || int64(recipient) > int64(^uint32(0)) {
		return fmt.Errorf("tracker: message %s: invalid recipient %d", message, recipient)
	}
	in := storedDelivery{Status: d.Status, Attempts: d.Attempts, LastResponse: d.LastResponse, UpdatedAt: d.UpdatedAt.UTC()}
	key := deliveryKey(message, recipient)
	outboxed := false // set and read by the collector only
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		rec := in
		outboxed = false
		if isErased(tx, message) {
			return nil
		}
		b := appendBucket(tx, bucketDeliveries)
		var prev storedDelivery
		old := b.Get(key)
		if old != nil {
			if err := json.Unmarshal(old, &prev); err != nil {
				old = nil
			}
		}
		if old != nil && rec.Status == delivery.Delivered && prev.Status == delivery.Delivered && prev.UpdatedAt.Before(rec.UpdatedAt) {
			rec.UpdatedAt = prev.UpdatedAt
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := b.Put(key, val); err != nil {
			return err
		}
		if old != nil && prev.Status == rec.Status && prev.Attempts == rec.Attempts {
			return nil
		}
		acct, ok, err := accountOf(tx, message)
		if err != nil || !ok {
			return err
		}
		seq, err := s.putFeed(tx, acct, storedFeedEntry{
			Kind: feedKindDelivery, Message: message, Recipient: recipient, At: rec.UpdatedAt, Delivery: &rec,
		})
		if err != nil {
			return err
		}
		outboxed = s.webhooks[acct]
		return tx.Bucket(bucketMsgFeed).Put(binary.BigEndian.AppendUint64(prefixKey(message), seq), []byte(acct))
	}, func(err error) {
		s.cache.invalidate(message)
		if err == nil && outboxed {
			s.outboxN.Add(1)
			s.wakeOutbox()
		}
	})
	if err != nil {
		return fmt.Errorf("tracker: set delivery of %s/%d: %w", message, recipient, err)
	}
	return nil
}
