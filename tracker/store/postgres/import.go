package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/internal/msgid"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// ImportMessage is a message of another store, with everything stored
// about it, for Import.
type ImportMessage struct {
	Message    store.Message
	Links      []string
	Deliveries map[int]store.Delivery
	// Events are the events kept in detail, with their classes and
	// reasons as the other store decided them (Import does not classify).
	Events []ImportEvent
	// Tallies count the events the other store did not keep in detail, by
	// recipient.
	Tallies map[int]store.Tally
}

// ImportEvent is an event with the sequence that names it.
type ImportEvent struct {
	Seq   int64
	Event store.Event
}

// ImportFeedEntry is a feed entry with its sequence: open, click and
// reclassified entries name their event by sequence.
type ImportFeedEntry struct {
	Seq       int64
	Account   string
	Kind      string
	Message   string
	Recipient int
	Event     int64
	At        time.Time
	Class     string
	Prev      string
	Reasons   []string
	Delivery  *store.Delivery
}

// ImportOutbox is a webhook delivery waiting for the feed entry Entry.
type ImportOutbox struct {
	Entry    int64
	Account  string
	Due      time.Time
	Attempts int
	First    time.Time
}

// ImportErased is an erasure tombstone.
type ImportErased struct {
	Message string
	At      time.Time
}

// ImportBatch is what one Import call writes, in one transaction.
type ImportBatch struct {
	Messages []*ImportMessage
	Feed     []*ImportFeedEntry
	Outbox   []*ImportOutbox
	Erased   []ImportErased
}

// ImportCounts are the rows an Import inserted; rows already there are not
// counted.
type ImportCounts struct {
	Messages, Events, Deliveries, Feed, Outbox, Erased int64
}

// ErrOtherStore is returned by AdoptID when the database already holds
// another store's data.
var ErrOtherStore = errors.New("postgres store: the database holds another store's data")

// AdoptID makes id (hex) the database's store id, part of every event and
// feed entry id, so that the events and feed entries of the store it
// imports keep their ids (webhook receivers dedupe on them). It succeeds
// when the id is already the database's, or when the database holds no
// messages, events, feed entries or tombstones yet; otherwise it returns
// ErrOtherStore. Nodes that opened the database before keep the id they
// read: adopt before any node runs.
func (s *Store) AdoptID(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "LOCK TABLE store_meta"); err != nil {
			return err
		}
		var cur string
		var used bool
		err := tx.QueryRow(ctx, `SELECT (SELECT id FROM store_meta), EXISTS (SELECT 1 FROM messages)
			OR EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM feed) OR EXISTS (SELECT 1 FROM erased)`).Scan(&cur, &used)
		if err != nil {
			return err
		}
		if cur == id {
			return nil
		}
		if used {
			return ErrOtherStore
		}
		_, err = tx.Exec(ctx, "UPDATE store_meta SET id = $1", id)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres store: adopt store id: %w", err)
	}
	s.storeID = id
	return nil
}

// importHit is the hit id (a UUID) of an imported event: derived from the
// store id and the event's name, so that importing it again inserts
// nothing.
func (s *Store) importHit(parts ...string) string {
	h := sha256.New()
	h.Write([]byte("trackrelay-import\x00" + s.storeID))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	b := h.Sum(nil)[:16]
	b[6] = b[6]&0x0f | 0x50 // name-based
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Import writes b in one transaction, for copying another store into this
// database: messages with their links, deliveries and events, feed
// entries, outbox rows and tombstones, keeping their sequences (so their
// ids, with AdoptID). Rows already present are left as they are (ON
// CONFLICT DO NOTHING), so importing the same data again inserts nothing.
// Events keep their stored classes: nothing is classified again, and no
// feed entry is written but those of b.Feed. Tallies become events past
// the cap (not kept in detail): counted opens and clicks at the tally's
// first and last times, the others as scanner opens, which give the same
// counts. Messages with a tombstone are skipped. Import takes no message
// locks: it is meant for a database no node writes to yet.
func (s *Store) Import(ctx context.Context, b *ImportBatch) (ImportCounts, error) {
	var n ImportCounts
	var xid string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		n, xid = ImportCounts{}, ""
		return s.importTx(ctx, tx, b, &n, &xid)
	})
	if err != nil {
		return ImportCounts{}, fmt.Errorf("postgres store: import: %w", err)
	}
	if xid != "" {
		s.noteXid(xid)
	}
	return n, nil
}

func (s *Store) importTx(ctx context.Context, tx pgx.Tx, b *ImportBatch, n *ImportCounts, xid *string) error {
	exec := func(counter *int64, sql string, args ...any) error {
		tag, err := tx.Exec(ctx, sql, args...)
		if err != nil {
			return err
		}
		if counter != nil {
			*counter += tag.RowsAffected()
		}
		return nil
	}
	if len(b.Erased) > 0 {
		ids, ats := make([]string, len(b.Erased)), make([]time.Time, len(b.Erased))
		for i, e := range b.Erased {
			ids[i], ats[i] = e.Message, e.At.UTC()
		}
		if err := exec(&n.Erased, `INSERT INTO erased (message, erased_at)
			SELECT * FROM unnest($1::text[], $2::timestamptz[]) ON CONFLICT DO NOTHING`, ids, ats); err != nil {
			return err
		}
	}
	var (
		mid, macct, mmid, mfrom, mip, mmode, mrcpt []string
		msubj, msearch                             []string
		mat                                        []time.Time
		lmsg, lurls                                []string
		dmsg, dstatus, dresp                       []string
		drcpt, dattempts                           []int32
		dat                                        []time.Time
		ev                                         eventCols
		tally                                      eventCols
		maxSeq                                     int64
	)
	for _, im := range b.Messages {
		m := &im.Message
		if err := validID(m.ID); err != nil {
			return err
		}
		rs := make([]storedRecipient, len(m.Recipients))
		for i, r := range m.Recipients {
			rs[i] = storedRecipient{Address: clean(r.Address), Tracked: r.Tracked}
		}
		rj, err := json.Marshal(rs)
		if err != nil {
			return err
		}
		mid, macct, mmid, mfrom = append(mid, m.ID), append(macct, clean(m.Account)), append(mmid, clean(msgid.Normalize(m.MessageID))), append(mfrom, clean(m.From))
		mip, mmode, mrcpt, mat = append(mip, clean(m.SubmitIP)), append(mmode, clean(m.Mode)), append(mrcpt, string(rj)), append(mat, m.AcceptedAt.UTC())
		subject, search := subjectAndSearch(m)
		msubj, msearch = append(msubj, subject), append(msearch, search)
		if im.Links != nil {
			cleaned := make([]string, len(im.Links))
			for i, l := range im.Links {
				cleaned[i] = clean(l)
			}
			uj, err := json.Marshal(cleaned)
			if err != nil {
				return err
			}
			lmsg, lurls = append(lmsg, m.ID), append(lurls, string(uj))
		}
		for r, d := range im.Deliveries {
			dmsg, drcpt, dstatus, dattempts = append(dmsg, m.ID), append(drcpt, int32(r)), append(dstatus, clean(string(d.Status))), append(dattempts, int32(d.Attempts))
			dresp, dat = append(dresp, clean(d.LastResponse)), append(dat, d.UpdatedAt.UTC())
		}
		for _, e := range im.Events {
			ev.add(s.importHit("ev", strconv.FormatInt(e.Seq, 10)), e.Seq, &e.Event, true)
			maxSeq = max(maxSeq, e.Seq)
		}
		for r, t := range im.Tallies {
			s.tallyRows(&tally, m, r, t)
		}
	}
	if len(mid) > 0 {
		if err := exec(&n.Messages, `INSERT INTO messages (id, account, message_id, sender, submit_ip, accepted_at, mode, recipients, subject, search)
			SELECT u.id, u.account, u.message_id, u.sender, u.submit_ip, u.accepted_at, u.mode, u.recipients::jsonb, u.subject, u.search
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[])
				AS u(id, account, message_id, sender, submit_ip, accepted_at, mode, recipients, subject, search)
			WHERE NOT EXISTS (SELECT 1 FROM erased WHERE message = u.id)
			ON CONFLICT DO NOTHING`, mid, macct, mmid, mfrom, mip, mat, mmode, mrcpt, msubj, msearch); err != nil {
			return err
		}
	}
	if len(lmsg) > 0 {
		if err := exec(nil, `INSERT INTO links (message, urls) SELECT u.message, u.urls::jsonb
			FROM unnest($1::text[], $2::text[]) AS u(message, urls)
			WHERE NOT EXISTS (SELECT 1 FROM erased WHERE message = u.message)
			ON CONFLICT DO NOTHING`, lmsg, lurls); err != nil {
			return err
		}
	}
	if len(dmsg) > 0 {
		if err := exec(&n.Deliveries, `INSERT INTO deliveries (message, recipient, status, attempts, last_response, updated_at)
			SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::text[], $6::timestamptz[])
				AS u(message, recipient, status, attempts, last_response, updated_at)
			WHERE NOT EXISTS (SELECT 1 FROM erased WHERE message = u.message)
			ON CONFLICT DO NOTHING`, dmsg, drcpt, dstatus, dattempts, dresp, dat); err != nil {
			return err
		}
	}
	if err := ev.insert(ctx, tx, &n.Events); err != nil {
		return err
	}
	// New hits, on any node, take sequences after the imported ones.
	if maxSeq > 0 {
		if err := exec(nil, "SELECT setval('events_seq', greatest($1, (SELECT last_value FROM events_seq)))", maxSeq); err != nil {
			return err
		}
	}
	if err := tally.insert(ctx, tx, &n.Events); err != nil {
		return err
	}
	if len(b.Feed) > 0 {
		if err := s.importFeed(ctx, tx, b.Feed, n, xid); err != nil {
			return err
		}
	}
	if k := len(b.Outbox); k > 0 {
		entry, attempts := make([]int64, k), make([]int32, k)
		acct := make([]string, k)
		due, first := make([]time.Time, k), make([]time.Time, k)
		for i, o := range b.Outbox {
			entry[i], acct[i], due[i], attempts[i], first[i] = o.Entry, o.Account, o.Due.UTC(), int32(o.Attempts), o.First.UTC()
		}
		if err := exec(&n.Outbox, `INSERT INTO outbox (entry, account, due, attempts, first_at)
			SELECT u.* FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::int[], $5::timestamptz[])
				AS u(entry, account, due, attempts, first_at)
			WHERE EXISTS (SELECT 1 FROM feed WHERE seq = u.entry)
			ON CONFLICT DO NOTHING`, entry, acct, due, attempts, first); err != nil {
			return err
		}
	}
	return nil
}

// importFeed inserts feed entries with their sequences, in the order
// given: within one transaction, so that readers see them in sequence
// order, after the entries of earlier imports.
func (s *Store) importFeed(ctx context.Context, tx pgx.Tx, feed []*ImportFeedEntry, n *ImportCounts, xid *string) error {
	k := len(feed)
	seq, ev := make([]int64, k), make([]*int64, k)
	acct, kind, msg, class, prev := make([]string, k), make([]string, k), make([]string, k), make([]string, k), make([]string, k)
	reasons, deliv := make([]*string, k), make([]*string, k)
	rcpt := make([]int32, k)
	at := make([]time.Time, k)
	var maxSeq int64
	for i, f := range feed {
		seq[i], acct[i], kind[i], msg[i], rcpt[i], at[i] = f.Seq, clean(f.Account), f.Kind, f.Message, int32(f.Recipient), f.At.UTC()
		class[i], prev[i] = f.Class, f.Prev
		maxSeq = max(maxSeq, f.Seq)
		if f.Event != 0 {
			e := f.Event
			ev[i] = &e
		}
		if f.Reasons != nil {
			rs, err := json.Marshal(f.Reasons)
			if err != nil {
				return err
			}
			r := string(rs)
			reasons[i] = &r
		}
		if d := f.Delivery; d != nil {
			dj, err := json.Marshal(storedDelivery{Status: d.Status, Attempts: d.Attempts, LastResponse: clean(d.LastResponse), UpdatedAt: d.UpdatedAt.UTC()})
			if err != nil {
				return err
			}
			v := string(dj)
			deliv[i] = &v
		}
	}
	tag, err := tx.Exec(ctx, `INSERT INTO feed (seq, account, kind, message, recipient, event, at, class, prev, reasons, delivery)
		SELECT u.seq, u.account, u.kind, u.message, u.recipient, u.event, u.at, u.class, u.prev, u.reasons::jsonb, u.delivery::jsonb
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::timestamptz[],
			$8::text[], $9::text[], $10::text[], $11::text[]) WITH ORDINALITY
			AS u(seq, account, kind, message, recipient, event, at, class, prev, reasons, delivery, o)
		WHERE NOT EXISTS (SELECT 1 FROM erased WHERE message = u.message)
		ORDER BY u.o
		ON CONFLICT DO NOTHING`, seq, acct, kind, msg, rcpt, ev, at, class, prev, reasons, deliv)
	if err != nil {
		return err
	}
	n.Feed += tag.RowsAffected()
	if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('feed', 'seq'),
		greatest($1, (SELECT last_value FROM feed_seq_seq)))`, maxSeq); err != nil {
		return err
	}
	return tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(xid)
}

// tallyRows adds to c the events past the cap that give t's counts: each
// counted open and click at t.First, but the last at t.Last, and the
// events not counted as scanner opens.
func (s *Store) tallyRows(c *eventCols, m *store.Message, recipient int, t store.Tally) {
	first, last := m.AcceptedAt, m.AcceptedAt
	if t.First != nil {
		first = *t.First
	}
	if t.Last != nil {
		last = *t.Last
	}
	type row struct {
		typ   string
		link  int
		class string
	}
	var rows []row
	for i := 0; i < t.Opens; i++ {
		rows = append(rows, row{store.EventOpen, -1, classify.Human})
	}
	for link, k := range t.Links {
		for i := 0; i < k; i++ {
			rows = append(rows, row{store.EventClick, link, classify.Human})
		}
	}
	counted := len(rows)
	for i := counted; i < t.Events; i++ {
		rows = append(rows, row{store.EventOpen, -1, classify.Scanner})
	}
	for i, r := range rows {
		at := first
		if i == counted-1 {
			at = last
		}
		e := store.Event{Type: r.typ, At: at, Message: m.ID, Recipient: recipient, Link: r.link, Class: r.class}
		c.add(s.importHit("tally", m.ID, strconv.Itoa(recipient), strconv.Itoa(i)), 0, &e, false)
	}
}

// eventCols are events to insert, by column. A zero seq takes the next of
// events_seq.
type eventCols struct {
	seq                                                    []int64
	hit, msg, typ, class, reasons, url, ip, ua, cl, co, ci []string
	rcpt, link                                             []int32
	at                                                     []int64
	kept, burst                                            []bool
}

func (c *eventCols) add(hit string, seq int64, e *store.Event, kept bool) {
	reasons := e.Reasons
	if reasons == nil {
		reasons = []string{}
	}
	rs, _ := json.Marshal(reasons)
	c.seq, c.hit, c.msg, c.rcpt, c.typ = append(c.seq, seq), append(c.hit, hit), append(c.msg, e.Message), append(c.rcpt, int32(e.Recipient)), append(c.typ, e.Type)
	c.at, c.link, c.kept, c.class = append(c.at, e.At.UnixNano()), append(c.link, int32(e.Link)), append(c.kept, kept), append(c.class, clean(e.Class))
	c.burst = append(c.burst, e.Class == classify.Scanner && containsString(reasons, classify.ReasonClickBurst))
	c.reasons, c.url, c.ip, c.ua = append(c.reasons, string(rs)), append(c.url, clean(e.URL)), append(c.ip, clean(e.IP)), append(c.ua, clean(e.UserAgent))
	c.cl, c.co, c.ci = append(c.cl, clean(e.Client)), append(c.co, clean(e.Country)), append(c.ci, clean(e.City))
}

func (c *eventCols) insert(ctx context.Context, tx pgx.Tx, count *int64) error {
	if len(c.hit) == 0 {
		return nil
	}
	tag, err := tx.Exec(ctx, `INSERT INTO events (seq, hit, message, recipient, type, at_ns, link, kept, burst, class, reasons,
		url, ip, user_agent, client, country, city)
		SELECT CASE WHEN u.seq = 0 THEN nextval('events_seq') ELSE u.seq END, u.hit::uuid, u.message, u.recipient, u.type,
		u.at_ns, u.link, u.kept, u.burst, u.class, u.reasons::jsonb, u.url, u.ip, u.user_agent, u.client, u.country, u.city
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bigint[], $7::int[],
			$8::bool[], $9::bool[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
			$15::text[], $16::text[], $17::text[])
			AS u(seq, hit, message, recipient, type, at_ns, link, kept, burst, class, reasons,
			url, ip, user_agent, client, country, city)
		WHERE NOT EXISTS (SELECT 1 FROM erased WHERE message = u.message)
			AND NOT EXISTS (SELECT 1 FROM events e WHERE e.hit = u.hit::uuid)
		ON CONFLICT DO NOTHING`,
		c.seq, c.hit, c.msg, c.rcpt, c.typ, c.at, c.link, c.kept, c.burst, c.class, c.reasons, c.url, c.ip, c.ua, c.cl, c.co, c.ci)
	if err != nil {
		return err
	}
	*count += tag.RowsAffected()
	return nil
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
