package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

// Erase implements store.Store.
func (s *Store) Erase(ctx context.Context, account, ref string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ref == "" || len(ref) > maxIDLen+2 {
		return store.ErrNotFound
	}
	var id string
	err := s.db.Update(func(tx *bbolt.Tx) error {
		rec, err := resolve(tx, account, ref)
		if err != nil {
			return err
		}
		id = rec.ID
		prefix := prefixKey(id)
		for _, name := range [][]byte{bucketEvents, bucketDeliveries, bucketRecipients, bucketClicks} {
			if err := deletePrefix(tx.Bucket(name), prefix); err != nil {
				return err
			}
		}
		// Delivery entries of the feed hold upstream responses: remove
		// them. Event entries only point at events, which are gone.
		mf := tx.Bucket(bucketMsgFeed)
		feed := tx.Bucket(bucketFeed)
		c := mf.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if err := feed.Delete(feedKey(string(v), keySeq(k))); err != nil {
				return err
			}
		}
		if err := deletePrefix(mf, prefix); err != nil {
			return err
		}
		if err := tx.Bucket(bucketLinks).Delete([]byte(id)); err != nil {
			return err
		}
		if rec.MessageID != "" {
			if err := tx.Bucket(bucketMsgIDs).Delete(msgIDKey(rec.Account, rec.MessageID)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketBrowse).Delete(browseKey(rec.Account, rec.AcceptedAt, id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMessages).Delete([]byte(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketErased).Put([]byte(id), []byte(time.Now().UTC().Format(time.RFC3339)))
	})
	if id != "" {
		s.cache.invalidate(id)
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("tracker: erase %q: %w", ref, err)
	}
	return nil
}

// deletePrefix deletes every key of b that starts with prefix.
func deletePrefix(b *bbolt.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
