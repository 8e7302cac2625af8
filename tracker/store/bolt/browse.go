package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/tracker/store"
)

// The browse bucket indexes each account's messages by time of acceptance
// for store.Browser:
//
//	browse  account NUL uint64 accepted (unix ns, sign bit flipped) queue id -> store.SearchText
//
// Walked backwards it lists an account newest first; a search reads only
// these small values, never the message records, and loads the records of
// the one page it returns. Stores written before the bucket existed get it
// built once at Open (metaBrowseKey marks it done).
var (
	bucketBrowse  = []byte("browse")
	metaBrowseKey = []byte("browse-index")
)

var _ store.Browser = (*Store)(nil)

// browseKey returns the key of the message accepted at at with queue id id
// in account's part of the browse bucket.
func browseKey(account string, at time.Time, id string) []byte {
	k := make([]byte, 0, len(account)+1+8+len(id))
	k = append(k, account...)
	k = append(k, 0)
	// Flipping the sign bit orders times before 1970 first, as big-endian
	// unsigned integers.
	k = binary.BigEndian.AppendUint64(k, uint64(at.UnixNano())^(1<<63))
	return append(k, id...)
}

// browseID returns the queue id of a key of the browse bucket of account.
func browseID(account string, k []byte) string { return string(k[len(account)+1+8:]) }

// putBrowse indexes rec; a record it replaces (old, when not nil) leaves
// the index first.
func putBrowse(tx *bbolt.Tx, old, rec *storedMessage) error {
	b := tx.Bucket(bucketBrowse)
	if old != nil {
		if err := b.Delete(browseKey(old.Account, old.AcceptedAt, old.ID)); err != nil {
			return err
		}
	}
	return b.Put(browseKey(rec.Account, rec.AcceptedAt, rec.ID), []byte(store.SearchText(rec.message())))
}

// buildBrowse indexes every message of a store written before the browse
// bucket existed, once.
func buildBrowse(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta.Get(metaBrowseKey) != nil {
		return nil
	}
	c := tx.Bucket(bucketMessages).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var rec storedMessage
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("index message %q: %w", k, err)
		}
		if err := putBrowse(tx, nil, &rec); err != nil {
			return err
		}
	}
	return meta.Put(metaBrowseKey, []byte{1})
}

// Messages implements store.Browser.
func (s *Store) Messages(ctx context.Context, account string, q store.MessageQuery) (*store.MessagePage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = store.DefaultMessagesLimit
	case limit > store.MaxMessagesLimit:
		limit = store.MaxMessagesLimit
	}
	if strings.IndexByte(account, 0) >= 0 {
		return &store.MessagePage{Messages: []store.MessageSummary{}}, nil
	}
	prefix := prefixKey(account)
	// The page starts before start, walking backwards: after the last of
	// the account's keys (account, then 1, sorts after them all), or at the
	// cursor's message.
	start := append([]byte(account), 1)
	if q.After != "" {
		at, id, err := store.DecodeMessageCursor(q.After)
		if err != nil {
			return nil, err
		}
		start = browseKey(account, at, id)
	}
	folded, ok := store.SearchNeedle(q.Search)
	if !ok {
		return &store.MessagePage{Messages: []store.MessageSummary{}}, nil
	}
	needle := []byte(folded)
	s.caughtUp(ctx)
	page := &store.MessagePage{Messages: make([]store.MessageSummary, 0, min(limit, 64))}
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketBrowse).Cursor()
		k, v := c.Seek(start)
		if k == nil {
			k, v = c.Last()
		}
		// Seek lands on start or the first key after it: step back to the
		// first key before start.
		for k != nil && bytes.Compare(k, start) >= 0 {
			k, v = c.Prev()
		}
		for n := 0; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Prev() {
			if n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			n++
			if len(needle) > 0 && !bytes.Contains(v, needle) {
				continue
			}
			if len(page.Messages) == limit {
				// One more matches: the page is not the last.
				page.Next = store.EncodeMessageCursor(page.Messages[limit-1].AcceptedAt, page.Messages[limit-1].ID)
				return nil
			}
			em, err := s.browsed(tx, browseID(account, k))
			if err != nil {
				return err
			}
			if em != nil {
				page.Messages = append(page.Messages, store.Summarize(em.parts()))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tracker: list messages of %s: %w", account, err)
	}
	return page, nil
}

// browsed reads the message of an index entry with what the console counts
// of it; nil when the entry has no message (erased since it was listed).
func (s *Store) browsed(tx *bbolt.Tx, id string) (*ExportMessage, error) {
	mv := tx.Bucket(bucketMessages).Get([]byte(id))
	if mv == nil {
		return nil, nil
	}
	var rec storedMessage
	if err := json.Unmarshal(mv, &rec); err != nil {
		return nil, fmt.Errorf("message %q: %w", id, err)
	}
	em, err := s.exportMessage(tx, &rec)
	if err != nil {
		return nil, fmt.Errorf("message %q: %w", id, err)
	}
	return em, nil
}

// parts returns m as store.Summarize and store.Overview.Add take it.
func (m *ExportMessage) parts() (*store.Message, map[int]store.Delivery, []store.Event, map[int]*store.Tally) {
	events := make([]store.Event, len(m.Events))
	for i, e := range m.Events {
		events[i] = e.Event
	}
	tallies := make(map[int]*store.Tally, len(m.Tallies))
	for i, t := range m.Tallies {
		tallies[i] = &t
	}
	return &m.Message, m.Deliveries, events, tallies
}

// Overview implements store.Browser.
func (s *Store) Overview(ctx context.Context, account string, from, to time.Time) (*store.Overview, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o, err := store.NewOverview(from, to)
	if err != nil {
		return nil, err
	}
	if strings.IndexByte(account, 0) >= 0 {
		return o, nil
	}
	prefix := prefixKey(account)
	first, end := browseKey(account, o.From, ""), browseKey(account, o.To, "")
	s.caughtUp(ctx)
	err = s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketBrowse).Cursor()
		for k, _ := c.Seek(first); k != nil && bytes.HasPrefix(k, prefix) && bytes.Compare(k, end) < 0; k, _ = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			em, err := s.browsed(tx, browseID(account, k))
			if err != nil {
				return err
			}
			if em != nil {
				o.Add(em.parts())
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tracker: overview of %s: %w", account, err)
	}
	return o, nil
}
