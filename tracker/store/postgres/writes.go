package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// storedRecipient is one recipient in messages.recipients.
type storedRecipient struct {
	Address string `json:"a"`
	Tracked bool   `json:"t,omitempty"`
}

// storedDelivery is a delivery state in feed.delivery.
type storedDelivery struct {
	Status       delivery.Status `json:"s"`
	Attempts     int             `json:"n,omitempty"`
	LastResponse string          `json:"r,omitempty"`
	UpdatedAt    time.Time       `json:"at"`
}

// SetDelivery implements store.Store. Once a copy is delivered, reporting it
// delivered again keeps the first delivery time. A change of status or of
// the number of attempts is also an entry of the account's feed.
func (s *Store) SetDelivery(ctx context.Context, message string, recipient int, d store.Delivery) error {
	if err := validID(message); err != nil {
		return err
	}
	if recipient < 0 || int64(recipient) > int64(^uint32(0)>>1) {
		return fmt.Errorf("postgres store: message %s: invalid recipient %d", message, recipient)
	}
	rec := storedDelivery{Status: delivery.Status(clean(string(d.Status))), Attempts: d.Attempts, LastResponse: clean(d.LastResponse), UpdatedAt: d.UpdatedAt.UTC()}
	var xid string
	outboxed := false
	var st settled
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		xid, outboxed, st = "", false, settled{}
		if err := lockMessages(ctx, tx, message); err != nil {
			return err
		}
		var erased bool
		var acct *string
		var prev *storedDelivery
		var status *string
		var attempts *int
		var updated *time.Time
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM erased WHERE message = $1),
			(SELECT account FROM messages WHERE id = $1), d.status, d.attempts, d.updated_at
			FROM (SELECT 1) one LEFT JOIN deliveries d ON d.message = $1 AND d.recipient = $2`,
			message, recipient).Scan(&erased, &acct, &status, &attempts, &updated)
		if err != nil {
			return err
		}
		if erased {
			return nil
		}
		if status != nil {
			prev = &storedDelivery{Status: delivery.Status(*status), Attempts: *attempts, UpdatedAt: *updated}
		}
		cur := rec
		if prev != nil && cur.Status == delivery.Delivered && prev.Status == delivery.Delivered && prev.UpdatedAt.Before(cur.UpdatedAt) {
			cur.UpdatedAt = prev.UpdatedAt
		}
		if _, err := tx.Exec(ctx, `INSERT INTO deliveries (message, recipient, status, attempts, last_response, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (message, recipient) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
				last_response = excluded.last_response, updated_at = excluded.updated_at`,
			message, recipient, cur.Status, cur.Attempts, cur.LastResponse, cur.UpdatedAt); err != nil {
			return err
		}
		if acct != nil {
			// Clicks classified without this delivery (awaiting.go).
			if st, err = s.settle(ctx, tx, []string{message}); err != nil {
				return err
			}
		}
		if prev != nil && prev.Status == cur.Status && prev.Attempts == cur.Attempts || acct == nil {
			return nil
		}
		v, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		outboxed = s.webhooks[*acct]
		return tx.QueryRow(ctx, `WITH f AS (
				INSERT INTO feed (account, kind, message, recipient, at, delivery)
				VALUES ($1, 'delivery', $2, $3, $4, $5::text::jsonb) RETURNING seq, account),
			o AS (INSERT INTO outbox (entry, account, due, first_at)
				SELECT seq, account, $6, $6 FROM f WHERE $7)
			SELECT pg_current_xact_id()::text`,
			*acct, message, recipient, cur.UpdatedAt, string(v), time.Now(), outboxed).Scan(&xid)
	})
	if err != nil {
		return fmt.Errorf("postgres store: set delivery of %s/%d: %w", message, recipient, err)
	}
	if xid != "" {
		s.noteXid(xid)
	}
	if outboxed {
		s.wakeOutbox()
	}
	s.afterSettle(st)
	return nil
}

// Erase implements store.Store: it deletes the message's data, its feed
// entries and their outbox rows, and leaves a tombstone so that later hits
// and reports for it are not stored.
func (s *Store) Erase(ctx context.Context, account, ref string) error {
	if ref == "" || len(ref) > 514 {
		return store.ErrNotFound
	}
	var id string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		m, err := resolve(ctx, tx, account, ref)
		if err != nil {
			return err
		}
		id = m.id
		if err := lockMessages(ctx, tx, m.id); err != nil {
			return err
		}
		b := &pgx.Batch{}
		for _, q := range []string{
			"DELETE FROM events WHERE message = $1",
			"DELETE FROM tallies WHERE message = $1",
			"DELETE FROM deliveries WHERE message = $1",
			"DELETE FROM links WHERE message = $1",
			"DELETE FROM feed WHERE message = $1",
			"DELETE FROM messages WHERE id = $1",
			"INSERT INTO erased (message, erased_at) VALUES ($1, now()) ON CONFLICT DO NOTHING",
		} {
			b.Queue(q, m.id)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if errors.Is(err, store.ErrNotFound) {
		return store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("postgres store: erase %q: %w", ref, err)
	}
	s.hitMessages.forget(id)
	return nil
}
