package postgres

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/internal/msgid"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// storedMessage is a row of messages.
type storedMessage struct {
	id, account, messageID, sender, submitIP, mode string
	subject                                        string
	acceptedAt                                     time.Time
	recipients                                     []storedRecipient
}

func (m *storedMessage) message() *store.Message {
	out := &store.Message{
		ID: m.id, MessageID: m.messageID, Account: m.account, From: m.sender,
		Subject: m.subject, SubmitIP: m.submitIP, AcceptedAt: m.acceptedAt.UTC(), Mode: m.mode,
		Recipients: make([]store.Recipient, len(m.recipients)),
	}
	for i, r := range m.recipients {
		out.Recipients[i] = store.Recipient{Address: r.Address, Tracked: r.Tracked}
	}
	return out
}

const messageColumns = "id, account, message_id, sender, submit_ip, accepted_at, mode, recipients, subject"

func scanMessage(row pgx.Row) (*storedMessage, error) {
	var m storedMessage
	var rs []byte
	if err := row.Scan(&m.id, &m.account, &m.messageID, &m.sender, &m.submitIP, &m.acceptedAt, &m.mode, &rs, &m.subject); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(rs, &m.recipients); err != nil {
		return nil, err
	}
	return &m, nil
}

// storable reports whether s can be compared with PostgreSQL text.
func storable(s string) bool { return strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) }

// resolve finds the message of account named by ref (queue id or
// Message-ID, with or without <>).
func resolve(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, account, ref string) (*storedMessage, error) {
	if !storable(ref) || !storable(account) {
		return nil, store.ErrNotFound
	}
	m, err := scanMessage(q.QueryRow(ctx, `SELECT `+messageColumns+` FROM (
			(SELECT `+messageColumns+`, 0 AS pref FROM messages WHERE id = $1 AND account = $2)
			UNION ALL
			(SELECT `+messageColumns+`, 1 FROM messages WHERE account = $2 AND message_id = $3
				ORDER BY accepted_at DESC, id DESC LIMIT 1)) r
		ORDER BY pref LIMIT 1`, ref, account, msgid.Normalize(ref)))
	if errorsIsNoRows(err) {
		return nil, store.ErrNotFound
	}
	return m, err
}

// Message implements store.Store.
func (s *Store) Message(ctx context.Context, id string) (*store.Message, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	if validID(id) != nil {
		return nil, store.ErrNotFound
	}
	ctx, cancel := s.hitReadContext(ctx)
	defer cancel()
	// Every hit reads its message: grouped with the others (hitreads.go).
	res := s.read(ctx, &readReq{message: id, recipient: -1})
	return res.m, res.err
}

// Delivery implements store.DeliveryReader. It only knows delivered copies
// (the time of delivery); other states are ErrNotFound.
func (s *Store) Delivery(ctx context.Context, message string, recipient int) (store.Delivery, error) {
	if s.isClosed() {
		return store.Delivery{}, store.ErrClosed
	}
	if validID(message) != nil || recipient < 0 || int64(recipient) > int64(^uint32(0)>>1) {
		return store.Delivery{}, store.ErrNotFound
	}
	ctx, cancel := s.hitReadContext(ctx)
	defer cancel()
	res := s.read(ctx, &readReq{message: message, recipient: recipient})
	switch {
	case res.err != nil:
		return store.Delivery{}, res.err
	case res.at.IsZero():
		return store.Delivery{}, store.ErrNotFound
	}
	return store.Delivery{Status: delivery.Delivered, UpdatedAt: res.at}, nil
}

// Lookup implements store.Store. It reads in one snapshot: the events kept
// in detail, and the counts of those past the cap, derived from their rows,
// and of those retention deleted, from their tallies.
func (s *Store) Lookup(ctx context.Context, account, ref string) (*store.MessageView, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	if ref == "" || len(ref) > 514 {
		return nil, store.ErrNotFound
	}
	var (
		m          *storedMessage
		links      []string
		deliveries = map[int]store.Delivery{}
		tallies    = map[int]*store.Tally{}
		events     []store.Event
	)
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if m, err = resolve(ctx, tx, account, ref); err != nil {
			return err
		}
		b := &pgx.Batch{}
		b.Queue("SELECT urls FROM links WHERE message = $1", m.id)
		b.Queue("SELECT recipient, status, attempts, last_response, updated_at FROM deliveries WHERE message = $1", m.id)
		b.Queue(`SELECT seq, type, at_ns, recipient, link, url, ip, user_agent, client, country, city, class, reasons
			FROM events WHERE message = $1 AND kept ORDER BY seq`, m.id)
		// Past the cap, and expired by retention (tallies).
		b.Queue(`SELECT recipient, type, class, link, count(*), min(at_ns), max(at_ns)
			FROM events WHERE message = $1 AND NOT kept GROUP BY 1, 2, 3, 4
			UNION ALL
			SELECT recipient, type, class, link, events, first_ns, last_ns FROM tallies WHERE message = $1`, m.id)
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		var urls []byte
		if err := br.QueryRow().Scan(&urls); err != nil && !errorsIsNoRows(err) {
			return err
		}
		if urls != nil {
			if err := json.Unmarshal(urls, &links); err != nil {
				return err
			}
		}
		rows, _ := br.Query()
		for rows.Next() {
			var r int
			var d store.Delivery
			if err := rows.Scan(&r, &d.Status, &d.Attempts, &d.LastResponse, &d.UpdatedAt); err != nil {
				return err
			}
			d.UpdatedAt = d.UpdatedAt.UTC()
			deliveries[r] = d
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var seq, at int64
			var reasons []byte
			e := store.Event{Message: m.id}
			if err := rows.Scan(&seq, &e.Type, &at, &e.Recipient, &e.Link, &e.URL, &e.IP, &e.UserAgent, &e.Client,
				&e.Country, &e.City, &e.Class, &reasons); err != nil {
				return err
			}
			if err := json.Unmarshal(reasons, &e.Reasons); err != nil {
				return err
			}
			e.ID, e.At = s.eventID(seq), time.Unix(0, at).UTC()
			events = append(events, e)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var r, link int
			var typ, class string
			var n, first, last int64
			if err := rows.Scan(&r, &typ, &class, &link, &n, &first, &last); err != nil {
				return err
			}
			addTally(tallies, r, typ, class, link, n, first, last)
		}
		return rows.Err()
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres store: lookup %q: %w", ref, err)
	}
	return store.BuildView(m.message(), links, deliveries, events, tallies), nil
}

// A feed cursor is the (transaction id, sequence) of the last entry read,
// base64url: entries are read in that order, and only those written by
// transactions older than every transaction still running
// (pg_snapshot_xmin), so that an entry committed late, by any node, is
// never behind a cursor already given out.
func encodeCursor(xid uint64, seq int64) string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), xid)
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(b, uint64(seq)))
}

func decodeCursor(c string) (uint64, int64, error) {
	if c == "" {
		return 0, 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 16 || binary.BigEndian.Uint64(b[8:]) > 1<<63-1 || binary.BigEndian.Uint64(b) > 1<<63-1 {
		return 0, 0, store.ErrBadCursor
	}
	return binary.BigEndian.Uint64(b), int64(binary.BigEndian.Uint64(b[8:])), nil
}

// feedColumns are what renders a feed entry: the entry (f), its message
// (m) and its event (e), which may be gone.
const feedColumns = `f.seq, f.xid::text, f.kind, f.message, f.recipient, f.at, f.class, f.prev, f.reasons, f.delivery,
	m.message_id, m.recipients, e.seq, e.type, e.at_ns, e.link, e.url, e.ip, e.user_agent, e.client, e.country, e.city,
	e.class, e.reasons`

const feedJoins = `LEFT JOIN messages m ON m.id = f.message LEFT JOIN events e ON e.seq = f.event`

// feedRowRead is a scanned row of feedColumns.
type feedRowRead struct {
	seq                                                     int64
	xid                                                     string
	kind, message                                           string
	recipient                                               int
	at                                                      time.Time
	class, prev                                             string
	reasons, delivery                                       []byte
	messageID                                               *string
	recipients                                              []byte
	eseq, eat                                               *int64
	elink                                                   *int
	etype, eurl, eip, eua, eclient, ecountry, ecity, eclass *string
	ereasons                                                []byte
}

func (r *feedRowRead) dest() []any {
	return []any{&r.seq, &r.xid, &r.kind, &r.message, &r.recipient, &r.at, &r.class, &r.prev, &r.reasons, &r.delivery,
		&r.messageID, &r.recipients, &r.eseq, &r.etype, &r.eat, &r.elink, &r.eurl, &r.eip, &r.eua, &r.eclient,
		&r.ecountry, &r.ecity, &r.eclass, &r.ereasons}
}

// entry returns the API form of r, or nil when what it is about was erased
// or has expired.
func (s *Store) entry(r *feedRowRead) (*store.FeedEntry, error) {
	if r.messageID == nil {
		return nil, nil
	}
	var rs []storedRecipient
	if err := json.Unmarshal(r.recipients, &rs); err != nil {
		return nil, err
	}
	out := &store.FeedEntry{Type: r.kind, At: r.at.UTC(), Message: r.message, MessageID: *r.messageID}
	if r.recipient >= 0 && r.recipient < len(rs) {
		out.Recipient = rs[r.recipient].Address
	}
	switch r.kind {
	case store.EventDelivery:
		var d storedDelivery
		if r.delivery == nil || json.Unmarshal(r.delivery, &d) != nil {
			return nil, nil
		}
		out.ID = s.entryID("dl_", r.seq)
		out.Delivery = &store.DeliveryView{Status: d.Status, Attempts: d.Attempts, LastResponse: d.LastResponse, UpdatedAt: d.UpdatedAt.UTC()}
		return out, nil
	case store.EventOpen, store.EventClick, store.EventReclassified:
	default:
		return nil, nil
	}
	if r.eseq == nil {
		return nil, nil
	}
	out.IP, out.UserAgent, out.Client, out.Country, out.City = *r.eip, *r.eua, *r.eclient, *r.ecountry, *r.ecity
	if *r.etype == store.EventClick {
		out.Link = *r.eurl
		link := *r.elink
		out.LinkIndex = &link
	}
	if r.kind == store.EventReclassified {
		out.ID = s.entryID("rc_", r.seq)
		out.EventID = s.eventID(*r.eseq)
		out.EventType = *r.etype
		out.Class, out.PreviousClass = r.class, r.prev
		if r.reasons != nil {
			if err := json.Unmarshal(r.reasons, &out.Reasons); err != nil {
				return nil, err
			}
		}
	} else {
		// The event's current class, as bbolt's feed gives it.
		out.ID = s.eventID(*r.eseq)
		out.At = time.Unix(0, *r.eat).UTC()
		out.Class = *r.eclass
		if err := json.Unmarshal(r.ereasons, &out.Reasons); err != nil {
			return nil, err
		}
	}
	if out.Reasons == nil {
		out.Reasons = []string{}
	}
	return out, nil
}

// Feed implements store.Store. It first waits, up to Options.FeedWait, for
// the transactions that were running when this node's last feed write
// committed to end, so that a read shows what this node wrote before it.
func (s *Store) Feed(ctx context.Context, account, after string, limit int) (*store.FeedPage, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	xid, seq, err := decodeCursor(after)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = store.DefaultFeedLimit
	}
	limit = min(limit, store.MaxFeedLimit)
	page := &store.FeedPage{Events: []store.FeedEntry{}, Next: encodeCursor(xid, seq)}
	if !storable(account) {
		return page, nil
	}
	if err := s.waitXmin(ctx); err != nil {
		return nil, fmt.Errorf("postgres store: feed of %s: %w", account, err)
	}
	rows, _ := s.pool.Query(ctx, `SELECT `+feedColumns+` FROM feed f `+feedJoins+`
		WHERE f.account = $1 AND (f.xid, f.seq) > ($2::text::xid8, $3)
			AND f.xid < pg_snapshot_xmin(pg_current_snapshot())
		ORDER BY f.xid, f.seq LIMIT $4`, account, strconv.FormatUint(xid, 10), seq, limit)
	defer rows.Close()
	for rows.Next() {
		var r feedRowRead
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, fmt.Errorf("postgres store: feed of %s: %w", account, err)
		}
		x, err := strconv.ParseUint(r.xid, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("postgres store: feed of %s: xid %q: %w", account, r.xid, err)
		}
		page.Next = encodeCursor(x, r.seq)
		e, err := s.entry(&r)
		if err != nil {
			return nil, fmt.Errorf("postgres store: feed of %s: %w", account, err)
		}
		if e != nil {
			page.Events = append(page.Events, *e)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres store: feed of %s: %w", account, err)
	}
	return page, nil
}

// waitXmin waits until every transaction older than this store's last
// feed write has ended, or Options.FeedWait passes.
func (s *Store) waitXmin(ctx context.Context) error {
	want := s.lastXid.Load()
	if want == 0 {
		return nil
	}
	deadline := time.Now().Add(s.opts.FeedWait)
	pause := time.Millisecond
	for {
		var xmin string
		if err := s.pool.QueryRow(ctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text").Scan(&xmin); err != nil {
			return err
		}
		if x, err := strconv.ParseUint(xmin, 10, 64); err != nil || x > want || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return ctx.Err()
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// OutboxDue implements store.Outbox. The items returned are leased to this
// node for Options.OutboxLease (on the database's clock): another node's
// sender does not get them meanwhile, unless their lease runs out (their
// sender died) first. OutboxDone and OutboxRetry end the lease.
func (s *Store) OutboxDue(now time.Time, limit int) ([]store.OutboxItem, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	ctx := context.Background()
	rows, _ := s.pool.Query(ctx, `WITH c AS (
			SELECT entry FROM outbox
			WHERE due <= $1 AND (leased_until IS NULL OR leased_until <= clock_timestamp())
			ORDER BY due, entry LIMIT $2 FOR UPDATE SKIP LOCKED),
		l AS (
			UPDATE outbox o SET leased_until = clock_timestamp() + make_interval(secs => $3)
			FROM c WHERE o.entry = c.entry
			RETURNING o.entry, o.account, o.attempts, o.first_at, o.due)
		SELECT l.entry, l.account, l.attempts, l.first_at, `+feedColumns+`
		FROM l JOIN feed f ON f.seq = l.entry `+feedJoins+`
		ORDER BY l.due, l.entry`, now, limit, s.opts.OutboxLease.Seconds())
	defer rows.Close()
	var items []store.OutboxItem
	var gone []int64
	for rows.Next() {
		var entry int64
		var it store.OutboxItem
		var r feedRowRead
		if err := rows.Scan(append([]any{&entry, &it.Account, &it.Attempts, &it.First}, r.dest()...)...); err != nil {
			return nil, fmt.Errorf("postgres store: read outbox: %w", err)
		}
		e, err := s.entry(&r)
		if err != nil {
			return nil, fmt.Errorf("postgres store: read outbox: %w", err)
		}
		if e == nil {
			gone = append(gone, entry)
			continue
		}
		if it.Body, err = json.Marshal(e); err != nil {
			return nil, err
		}
		it.Key, it.ID = binary.BigEndian.AppendUint64(nil, uint64(entry)), e.ID
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres store: read outbox: %w", err)
	}
	if len(gone) > 0 {
		if _, err := s.pool.Exec(ctx, "DELETE FROM outbox WHERE entry = ANY($1)", gone); err != nil {
			return items, fmt.Errorf("postgres store: outbox: %w", err)
		}
	}
	return items, nil
}

func outboxKeys(items []store.OutboxItem) []int64 {
	keys := make([]int64, 0, len(items))
	for _, it := range items {
		if len(it.Key) == 8 {
			keys = append(keys, int64(binary.BigEndian.Uint64(it.Key)))
		}
	}
	return keys
}

// OutboxDone implements store.Outbox.
func (s *Store) OutboxDone(items []store.OutboxItem) error {
	if len(items) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(context.Background(), "DELETE FROM outbox WHERE entry = ANY($1)", outboxKeys(items)); err != nil {
		return fmt.Errorf("postgres store: outbox: %w", err)
	}
	return nil
}

// OutboxRetry implements store.Outbox: it makes items due at next, counting
// the attempt.
func (s *Store) OutboxRetry(items []store.OutboxItem, next []time.Time) error {
	if len(items) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(context.Background(), `UPDATE outbox SET due = u.due, attempts = outbox.attempts + 1, leased_until = NULL
		FROM unnest($1::bigint[], $2::timestamptz[]) AS u(entry, due) WHERE outbox.entry = u.entry`,
		outboxKeys(items), next[:len(items)]); err != nil {
		return fmt.Errorf("postgres store: outbox: %w", err)
	}
	return nil
}
