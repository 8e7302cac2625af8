package bolt

import (
	"context"
	"errors"

	bbolt "go.etcd.io/bbolt"
)

// Ping reports whether the store is open and its database answers a read,
// for readiness checks. It bypasses the in-memory caches.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-s.closing:
		return errors.New("tracker: store closed")
	default:
	}
	return s.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMessages) == nil {
			return errors.New("tracker: store has no messages bucket")
		}
		return nil
	})
}
