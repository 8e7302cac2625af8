package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/trackrelay/trackrelay/internal/msgid"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// The relay's records (PutMessage, SetLinks) are group-committed like
// hits: a node that must have a message's record in the database before
// its 250 waits for one commit, and the SMTP sessions that finish at the
// same moment share it, with one multi-row statement for the messages and
// one for the links.

// recordCommitters is how many batches of records may be committing at
// once: one commits while the next gathers.
const recordCommitters = 2

// recordTimeout bounds one commit of records, so that a database that
// stops answering fails the writers (they retry) instead of holding them.
const recordTimeout = 30 * time.Second

// messageRow is a PutMessage waiting for its batch.
type messageRow struct {
	id, account, messageID, sender, submitIP, mode, recipients string
	subject, search                                            string
	acceptedAt                                                 time.Time
}

// linksRow is a SetLinks waiting for its batch.
type linksRow struct {
	message, urls string
}

// recordReq is one PutMessage or SetLinks: one of msg and links is set.
type recordReq struct {
	msg   *messageRow
	links *linksRow
	done  chan error
}

func (r *recordReq) id() string {
	if r.msg != nil {
		return r.msg.id
	}
	return r.links.message
}

// PutMessage implements store.Store. Putting the same message again
// replaces it; a message whose data was erased stays erased. It returns
// once the batch holding the record has committed.
func (s *Store) PutMessage(ctx context.Context, m store.Message) error {
	if err := validID(m.ID); err != nil {
		return err
	}
	rs := make([]storedRecipient, len(m.Recipients))
	for i, r := range m.Recipients {
		rs[i] = storedRecipient{Address: clean(r.Address), Tracked: r.Tracked}
	}
	recipients, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	row := &messageRow{id: m.ID, account: clean(m.Account), messageID: clean(msgid.Normalize(m.MessageID)),
		sender: clean(m.From), submitIP: clean(m.SubmitIP), acceptedAt: m.AcceptedAt.UTC(), mode: clean(m.Mode),
		recipients: string(recipients)}
	row.subject, row.search = subjectAndSearch(&m)
	if err := s.submitRecord(ctx, &recordReq{msg: row}); err != nil {
		return fmt.Errorf("postgres store: put message %s: %w", m.ID, err)
	}
	return nil
}

// subjectAndSearch returns m's subject as stored (cut to
// store.MaxSubjectBytes) and its search text (store.SearchText), both
// storable as text.
func subjectAndSearch(m *store.Message) (string, string) {
	c := store.Message{Subject: clean(store.TruncateSubject(m.Subject)), Recipients: make([]store.Recipient, len(m.Recipients))}
	for i, r := range m.Recipients {
		c.Recipients[i].Address = clean(r.Address)
	}
	return c.Subject, store.SearchText(&c)
}

// SetLinks implements store.Store; it shares the commits of PutMessage.
func (s *Store) SetLinks(ctx context.Context, message string, links []string) error {
	if err := validID(message); err != nil {
		return err
	}
	cleaned := make([]string, len(links))
	for i, l := range links {
		cleaned[i] = clean(l)
	}
	urls, err := json.Marshal(cleaned)
	if err != nil {
		return err
	}
	if err := s.submitRecord(ctx, &recordReq{links: &linksRow{message: message, urls: string(urls)}}); err != nil {
		return fmt.Errorf("postgres store: set links of %s: %w", message, err)
	}
	return nil
}

// submitRecord hands r to the record committers and waits for its batch.
// When ctx ends first the record may still be committed.
func (s *Store) submitRecord(ctx context.Context, r *recordReq) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.done = make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return store.ErrClosed
	}
	select {
	case s.recs <- r:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recordLoop is a record committer: it takes the records waiting, up to
// MaxBatch, and commits them together.
func (s *Store) recordLoop() {
	defer s.workers.Done()
	for first := range s.recs {
		batch := gather(first, s.recs, s.opts.MaxBatch, nil)
		start := time.Now()
		err := s.commitRecords(batch)
		s.opts.Metrics.RecordsCommitted(time.Since(start), len(batch))
		var pe *pgconn.PgError
		if err != nil && len(batch) > 1 && errors.As(err, &pe) {
			// The server refused the statement, not the connection: one
			// record may be at fault, so each is tried alone and the
			// others are not held back by it.
			for _, r := range batch {
				r.done <- s.commitRecords([]*recordReq{r})
			}
			continue
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// commitRecords writes a batch of records in one transaction, under the
// advisory locks of their messages. Within the batch the last write of a
// message or of its links wins, as if the writes had committed one by one.
func (s *Store) commitRecords(batch []*recordReq) error {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	msgs := map[string]*messageRow{}
	links := map[string]*linksRow{}
	var ids []string
	for _, r := range batch {
		ids = append(ids, r.id())
		if r.msg != nil {
			msgs[r.msg.id] = r.msg
		} else {
			links[r.links.message] = r.links
		}
	}
	var m struct {
		id, account, messageID, sender, submitIP, mode, recipients []string
		subject, search                                            []string
		acceptedAt                                                 []time.Time
	}
	for _, r := range msgs {
		m.id, m.account, m.messageID = append(m.id, r.id), append(m.account, r.account), append(m.messageID, r.messageID)
		m.sender, m.submitIP, m.mode = append(m.sender, r.sender), append(m.submitIP, r.submitIP), append(m.mode, r.mode)
		m.recipients, m.acceptedAt = append(m.recipients, r.recipients), append(m.acceptedAt, r.acceptedAt)
		m.subject, m.search = append(m.subject, r.subject), append(m.search, r.search)
	}
	var lid, lurls []string
	for _, r := range links {
		lid, lurls = append(lid, r.message), append(lurls, r.urls)
	}
	// Not inTx: Close lets the committers finish what they were given.
	var st settled
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		st = settled{}
		if err := lockMessages(ctx, tx, ids...); err != nil {
			return err
		}
		if len(m.id) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO messages (id, account, message_id, sender, submit_ip, accepted_at, mode, recipients, subject, search)
				SELECT u.id, u.account, u.message_id, u.sender, u.submit_ip, u.accepted_at, u.mode, u.recipients::jsonb, u.subject, u.search
				FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[])
					AS u(id, account, message_id, sender, submit_ip, accepted_at, mode, recipients, subject, search)
				WHERE NOT EXISTS (SELECT 1 FROM erased e WHERE e.message = u.id)
				ON CONFLICT (id) DO UPDATE SET account = excluded.account, message_id = excluded.message_id,
					sender = excluded.sender, submit_ip = excluded.submit_ip, accepted_at = excluded.accepted_at,
					mode = excluded.mode, recipients = excluded.recipients, subject = excluded.subject,
					search = excluded.search`,
				m.id, m.account, m.messageID, m.sender, m.submitIP, m.acceptedAt, m.mode, m.recipients, m.subject, m.search); err != nil {
				return err
			}
		}
		if len(lid) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO links (message, urls)
				SELECT u.message, u.urls::jsonb FROM unnest($1::text[], $2::text[]) AS u(message, urls)
				WHERE NOT EXISTS (SELECT 1 FROM erased e WHERE e.message = u.message)
				ON CONFLICT (message) DO UPDATE SET urls = excluded.urls`, lid, lurls); err != nil {
				return err
			}
		}
		if len(m.id) > 0 {
			// The events that came before their record (awaiting.go).
			var err error
			if st, err = s.settle(ctx, tx, m.id); err != nil {
				return err
			}
		}
		if f := s.beforeRecordCommit.Load(); f != nil {
			(*f)()
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.afterSettle(st)
	return nil
}
