package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

// OutboxDue implements store.Outbox.
func (s *Store) OutboxDue(now time.Time, limit int) ([]store.OutboxItem, error) {
	var items []store.OutboxItem
	var gone [][]byte
	err := s.db.View(func(tx *bbolt.Tx) error {
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
			var e *store.FeedEntry
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
			items = append(items, store.OutboxItem{Key: bytes.Clone(k), Account: o.Account, Attempts: o.Attempts,
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

// OutboxDone implements store.Outbox.
func (s *Store) OutboxDone(items []store.OutboxItem) error {
	if len(items) == 0 {
		return nil
	}
	keys := make([][]byte, len(items))
	for i, it := range items {
		keys[i] = it.Key
	}
	return s.outboxRemove(keys)
}

// outboxFault, set by tests only, makes an outbox transaction fail after
// its changes, as a failing commit would.
var outboxFault atomic.Pointer[func() error]

// outboxRemove deletes the outbox entries of keys that are still there,
// and takes them off the outbox gauge once the deletion has committed: a
// transaction that fails leaves the entries, and the gauge, as they were.
func (s *Store) outboxRemove(keys [][]byte) error {
	removed := 0
	err := s.db.Update(func(tx *bbolt.Tx) error {
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

// OutboxRetry implements store.Outbox: it moves items to their next due
// time, counting the attempt.
func (s *Store) OutboxRetry(items []store.OutboxItem, next []time.Time) error {
	if len(items) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		for i, it := range items {
			if b.Get(it.Key) == nil {
				continue
			}
			if err := b.Delete(it.Key); err != nil {
				return err
			}
			o := storedOutbox{Account: it.Account, Attempts: it.Attempts + 1, First: it.First.Unix()}
			if err := putOutbox(tx, next[i], keySeq(it.Key), o); err != nil {
				return err
			}
		}
		return nil
	})
}

// OutboxAdded implements store.Outbox.
func (s *Store) OutboxAdded() <-chan struct{} { return s.wake }

func outboxKey(due time.Time, seq uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(due.UnixNano()))
	return binary.BigEndian.AppendUint64(k, seq)
}

func putOutbox(tx *bbolt.Tx, due time.Time, seq uint64, o storedOutbox) error {
	v, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketOutbox).Put(outboxKey(due, seq), v)
}

func (s *Store) wakeOutbox() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
