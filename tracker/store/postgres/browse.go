package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

var _ store.Browser = (*Store)(nil)

// browseOrder is the list's order, newest first; the messages_browse index
// holds it.
const browseOrder = `ORDER BY accepted_at DESC, id COLLATE "C" DESC`

// likeEscaper makes a search a LIKE pattern's plain text.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// Messages implements store.Browser: one query on the messages_browse
// index, filtered by search LIKE (the trigram index, when there is one,
// answers a rare search without walking the account), then the counts of
// the page's messages in one round trip.
func (s *Store) Messages(ctx context.Context, account string, q store.MessageQuery) (*store.MessagePage, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = store.DefaultMessagesLimit
	case limit > store.MaxMessagesLimit:
		limit = store.MaxMessagesLimit
	}
	page := &store.MessagePage{Messages: []store.MessageSummary{}}
	sql, args, err := browseQuery(account, q.After, q.Search, limit+1)
	if err != nil || sql == "" {
		return page, err
	}
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		ms, err := queryMessages(ctx, tx, sql, args...)
		if err != nil {
			return err
		}
		if len(ms) > limit {
			ms = ms[:limit]
			last := ms[limit-1]
			page.Next = store.EncodeMessageCursor(last.acceptedAt, last.id)
		}
		parts, err := loadParts(ctx, tx, ms)
		if err != nil {
			return err
		}
		for _, p := range parts {
			page.Messages = append(page.Messages, store.Summarize(p.m, p.deliveries, p.events, p.tallies))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: list messages of %s: %w", account, err)
	}
	return page, nil
}

// browseQuery returns the query of at most limit messages of account
// after the cursor after, matching search, and its arguments; "" when none
// can match. A cursor it cannot read is store.ErrBadCursor.
func browseQuery(account, after, search string, limit int) (string, []any, error) {
	where, args := "account = $1", []any{account}
	if after != "" {
		at, id, err := store.DecodeMessageCursor(after)
		if err != nil {
			return "", nil, err
		}
		if !storable(id) {
			return "", nil, store.ErrBadCursor
		}
		args = append(args, at, id)
		where += ` AND (accepted_at, id COLLATE "C") < ($2::timestamptz, $3::text COLLATE "C")`
	}
	needle, ok := store.SearchNeedle(search)
	if !ok || !storable(account) || !storable(needle) {
		return "", nil, nil
	}
	if needle != "" {
		args = append(args, "%"+likeEscaper.Replace(needle)+"%")
		where += " AND search LIKE $" + strconv.Itoa(len(args))
	}
	args = append(args, limit)
	return "SELECT " + messageColumns + " FROM messages WHERE " + where + " " + browseOrder + " LIMIT $" + strconv.Itoa(len(args)), args, nil
}

// overviewChunk is how many messages Overview reads at a time.
const overviewChunk = 1000

// Overview implements store.Browser, reading the period's messages in
// chunks, in one snapshot.
func (s *Store) Overview(ctx context.Context, account string, from, to time.Time) (*store.Overview, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	o, err := store.NewOverview(from, to)
	if err != nil {
		return nil, err
	}
	if !storable(account) {
		return o, nil
	}
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		// Walked oldest first from the end of the period's index range.
		afterAt, afterID := o.To, ""
		for {
			ms, err := queryMessages(ctx, tx, "SELECT "+messageColumns+` FROM messages
				WHERE account = $1 AND accepted_at >= $2
					AND (accepted_at, id COLLATE "C") < ($3::timestamptz, $4::text COLLATE "C")
				`+browseOrder+` LIMIT $5`, account, o.From, afterAt, afterID, overviewChunk)
			if err != nil {
				return err
			}
			if afterID == "" {
				// The first chunk's bound excludes accepted_at = To with
				// any id: ids sort after "".
				ms = trimAt(ms, o.To)
			}
			parts, err := loadParts(ctx, tx, ms)
			if err != nil {
				return err
			}
			for _, p := range parts {
				o.Add(p.m, p.deliveries, p.events, p.tallies)
			}
			if len(ms) < overviewChunk {
				return nil
			}
			afterAt, afterID = ms[len(ms)-1].acceptedAt, ms[len(ms)-1].id
		}
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: overview of %s: %w", account, err)
	}
	return o, nil
}

// trimAt drops the messages accepted at or after to.
func trimAt(ms []*storedMessage, to time.Time) []*storedMessage {
	out := ms[:0]
	for _, m := range ms {
		if m.acceptedAt.Before(to) {
			out = append(out, m)
		}
	}
	return out
}

func queryMessages(ctx context.Context, tx pgx.Tx, sql string, args ...any) ([]*storedMessage, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ms []*storedMessage
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, rows.Err()
}

// messageParts is a message with what store.Summarize counts.
type messageParts struct {
	m          *store.Message
	deliveries map[int]store.Delivery
	events     []store.Event
	tallies    map[int]*store.Tally
}

// loadParts reads the deliveries, the events kept in detail and the counts
// of the others of ms, in one round trip; the result is in ms's order.
func loadParts(ctx context.Context, tx pgx.Tx, ms []*storedMessage) ([]*messageParts, error) {
	out := make([]*messageParts, len(ms))
	byID := make(map[string]*messageParts, len(ms))
	ids := make([]string, len(ms))
	for i, m := range ms {
		p := &messageParts{m: m.message(), deliveries: map[int]store.Delivery{}, tallies: map[int]*store.Tally{}}
		out[i], byID[m.id], ids[i] = p, p, m.id
	}
	if len(ms) == 0 {
		return out, nil
	}
	b := &pgx.Batch{}
	b.Queue("SELECT message, recipient, status, attempts, last_response, updated_at FROM deliveries WHERE message = ANY($1)", ids)
	b.Queue("SELECT message, type, at_ns, recipient, link, class FROM events WHERE message = ANY($1) AND kept ORDER BY seq", ids)
	b.Queue(`SELECT message, recipient, type, class, link, count(*), min(at_ns), max(at_ns)
		FROM events WHERE message = ANY($1) AND NOT kept GROUP BY 1, 2, 3, 4, 5`, ids)
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	rows, _ := br.Query()
	for rows.Next() {
		var id string
		var r int
		var d store.Delivery
		if err := rows.Scan(&id, &r, &d.Status, &d.Attempts, &d.LastResponse, &d.UpdatedAt); err != nil {
			return nil, err
		}
		d.UpdatedAt = d.UpdatedAt.UTC()
		byID[id].deliveries[r] = d
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, _ = br.Query()
	for rows.Next() {
		var e store.Event
		var at int64
		if err := rows.Scan(&e.Message, &e.Type, &at, &e.Recipient, &e.Link, &e.Class); err != nil {
			return nil, err
		}
		e.At = time.Unix(0, at).UTC()
		p := byID[e.Message]
		p.events = append(p.events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, _ = br.Query()
	for rows.Next() {
		var id, typ, class string
		var r, link int
		var n, first, last int64
		if err := rows.Scan(&id, &r, &typ, &class, &link, &n, &first, &last); err != nil {
			return nil, err
		}
		addTally(byID[id].tallies, r, typ, class, link, n, first, last)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, br.Close()
}

// addTally adds to tallies n events of copy r past the cap, of one type,
// class and link, the first and last at those unix nanoseconds.
func addTally(tallies map[int]*store.Tally, r int, typ, class string, link int, n, first, last int64) {
	t := tallies[r]
	if t == nil {
		t = &store.Tally{}
		tallies[r] = t
	}
	t.Events += int(n)
	if !classify.Counted(class) {
		return
	}
	switch typ {
	case store.EventOpen:
		t.Opens += int(n)
	case store.EventClick:
		t.Clicks += int(n)
		if t.Links == nil {
			t.Links = map[int]int{}
		}
		t.Links[link] += int(n)
	}
	f, l := time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
	if t.First == nil || f.Before(*t.First) {
		t.First = &f
	}
	if t.Last == nil || l.After(*t.Last) {
		t.Last = &l
	}
}
