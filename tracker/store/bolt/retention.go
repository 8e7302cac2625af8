package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"time"

	"github.com/trackrelay/trackrelay/internal/guard"
	bbolt "go.etcd.io/bbolt"
)

// Retention works with marks: each sweep (and each open) records the
// current event and feed sequences with the time. Everything with a
// sequence at or below the newest mark older than the retention period was
// committed before that mark, so it is older than the period. Keys need no
// time index and values are only read for what is deleted. A mark is taken
// at least every RetentionInterval, which is the precision of retention.

func putMark(tx *bbolt.Tx, now time.Time) error {
	v := binary.BigEndian.AppendUint64(nil, tx.Bucket(bucketEvents).Sequence())
	v = binary.BigEndian.AppendUint64(v, tx.Bucket(bucketFeed).Sequence())
	return tx.Bucket(bucketMarks).Put(binary.BigEndian.AppendUint64(nil, uint64(now.Unix())), v)
}

// retentionLoop sweeps at once and then every RetentionInterval. A sweep
// that panics is logged and counted, and the next one runs on time: a
// sweep is short transactions, each rolled back by the panic or committed
// whole, and the next one starts over from its own mark.
func (s *Store) retentionLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.opts.RetentionInterval)
	defer t.Stop()
	for n := 1; ; n++ {
		guard.Run(guard.Retention, s.panicLog, func() {
			guard.Check(guard.Retention, strconv.Itoa(n)) // the sweep's number, from 1
			if _, err := s.Sweep(context.Background(), time.Now(), s.opts.Retention); err != nil && s.opts.Logger != nil {
				s.opts.Logger.Error("tracker: retention sweep", "err", err)
			}
		})
		select {
		case <-t.C:
		case <-s.closing:
			return
		}
	}
}

// Sweep records a mark at now and deletes the events and feed entries
// committed before the newest mark older than retention. A deleted event
// is added to its copy's counters, so counts and first and last open times
// stay; its IP address, user agent and time are gone. It returns the
// number of events deleted. Sweeping runs in short transactions, so hits
// keep being committed meanwhile.
func (s *Store) Sweep(ctx context.Context, now time.Time, retention time.Duration) (int, error) {
	var evCut, feedCut uint64
	var markKey []byte
	s.caughtUp(ctx) // the mark covers every hit answered so far
	err := s.db.Update(func(tx *bbolt.Tx) error {
		if err := putMark(tx, now); err != nil {
			return err
		}
		c := tx.Bucket(bucketMarks).Cursor()
		cutoff := binary.BigEndian.AppendUint64(nil, uint64(now.Add(-retention).Unix())+1)
		k, v := c.Seek(cutoff)
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		if k == nil || bytes.Compare(k, cutoff) >= 0 || len(v) != 16 {
			return nil
		}
		markKey = bytes.Clone(k)
		evCut, feedCut = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
		// Older marks are no longer needed.
		var old [][]byte
		for k, _ := c.Prev(); k != nil; k, _ = c.Prev() {
			old = append(old, bytes.Clone(k))
		}
		for _, k := range old {
			if err := tx.Bucket(bucketMarks).Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || markKey == nil {
		return 0, err
	}
	deleted, err := s.sweepBucket(ctx, bucketEvents, evCut, true)
	if err != nil {
		return deleted, err
	}
	// The click index ends its keys with the event's sequence too.
	if _, err := s.sweepBucket(ctx, bucketClicks, evCut, false); err != nil {
		return deleted, err
	}
	if _, err := s.sweepBucket(ctx, bucketFeed, feedCut, false); err != nil {
		return deleted, err
	}
	if _, err := s.sweepBucket(ctx, bucketMsgFeed, feedCut, false); err != nil {
		return deleted, err
	}
	s.opts.Metrics.Expired(deleted)
	return deleted, nil
}

// sweepBucket deletes the keys of bucket whose trailing sequence is at most
// cut, in transactions of at most retentionChunk deletions and
// retentionScan keys. With tallyEvents, each deleted event is added to its
// copy's counters first.
func (s *Store) sweepBucket(ctx context.Context, bucket []byte, cut uint64, tallyEvents bool) (int, error) {
	var resume []byte
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		done := false
		err := s.db.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(bucket)
			c := b.Cursor()
			var k, v []byte
			if resume == nil {
				k, v = c.First()
			} else {
				k, v = c.Seek(resume)
			}
			type kv struct{ k, v []byte }
			var del []kv
			scanned := 0
			for ; k != nil && len(del) < retentionChunk && scanned < retentionScan; k, v = c.Next() {
				scanned++
				if len(k) >= 9 && keySeq(k) <= cut {
					del = append(del, kv{bytes.Clone(k), bytes.Clone(v)})
				}
			}
			if k == nil {
				done = true
			} else {
				resume = bytes.Clone(k)
			}
			rcpts := map[string]*storedRcpt{}
			for _, d := range del {
				if tallyEvents {
					var se storedEvent
					if json.Unmarshal(d.v, &se) == nil && se.Recipient >= 0 {
						rk := string(deliveryKey(string(d.k[:len(d.k)-9]), se.Recipient))
						rs, ok := rcpts[rk]
						if !ok {
							rs = &storedRcpt{}
							if rv := tx.Bucket(bucketRecipients).Get([]byte(rk)); rv != nil {
								if err := json.Unmarshal(rv, rs); err != nil {
									return err
								}
							}
							rcpts[rk] = rs
						}
						if rs.Tally == nil {
							rs.Tally = &tally{}
						}
						rs.Tally.add(se.Type, se.Class, se.Link, se.At)
					}
				}
				if err := b.Delete(d.k); err != nil {
					return err
				}
			}
			for rk, rs := range rcpts {
				rv, err := json.Marshal(rs)
				if err != nil {
					return err
				}
				if err := tx.Bucket(bucketRecipients).Put([]byte(rk), rv); err != nil {
					return err
				}
			}
			total += len(del)
			return nil
		})
		if err != nil || done {
			return total, err
		}
	}
}
