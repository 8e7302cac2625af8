package postgres

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// copyKey names one recipient's copy of a message.
type copyKey struct {
	message   string
	recipient int
}

// copyState is what a batch knows of a copy: how many of its events are
// kept in detail, whether a counted open was seen, and its clicks near the
// batch's (from the database, then the batch's own).
type copyState struct {
	kept   int
	opened bool
	from   int64 // the window of clicks read, unix ns
	to     int64
	clicks []*windowClick
}

// windowClick is a click of a copy's history.
type windowClick struct {
	seq     int64
	link    int
	at      int64 // unix ns
	kept    bool
	burst   bool // already part of a burst
	class   string
	reasons []string
	row     *eventRow // in this batch; nil: in the database
}

// eventRow is an event the batch inserts.
type eventRow struct {
	seq     int64
	hit     string
	e       store.Event
	kept    bool
	burst   bool
	reasons []string
}

// feedRow is a feed entry the batch inserts.
type feedRow struct {
	account, kind, message string
	recipient              int
	event                  int64
	at                     time.Time
	class, prev            string
	reasons                []string
}

// eventUpdate is a click of the database that joined a burst.
type eventUpdate struct {
	seq     int64
	class   string
	reasons []string
}

// clean makes s storable as PostgreSQL text (valid UTF-8, no NUL).
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "")
}

// commitEvents writes a batch of events in one transaction: it takes the
// advisory locks of their messages (so that a copy's history cannot change
// under the classification, on any node), reads what classification
// needs, classifies the batch's clicks against their copies' clicks within
// the burst window as package bolt does, and writes the events, their
// feed entries (with the outbox rows of webhook accounts) and the earlier
// clicks that joined a burst.
func (s *Store) commitEvents(ctx context.Context, batch []*eventReq) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())

	var ids []string
	seenID := map[string]bool{}
	hits := make([]string, len(batch))
	copies := map[copyKey]*copyState{}
	var copyOrder []copyKey
	for i, r := range batch {
		hits[i] = r.hit
		if !seenID[r.ev.Message] {
			seenID[r.ev.Message] = true
			ids = append(ids, r.ev.Message)
		}
		k := copyKey{r.ev.Message, r.ev.Recipient}
		at := r.ev.At.UnixNano()
		st := copies[k]
		if st == nil {
			st = &copyState{from: at, to: at}
			copies[k] = st
			copyOrder = append(copyOrder, k)
		}
		st.from, st.to = min(st.from, at), max(st.to, at)
	}
	if err := lockMessages(ctx, tx, ids...); err != nil {
		return err
	}

	// What the batch needs, in one round trip.
	cm := make([]string, len(copyOrder))
	cr := make([]int32, len(copyOrder))
	cf := make([]int64, len(copyOrder))
	ct := make([]int64, len(copyOrder))
	for i, k := range copyOrder {
		st := copies[k]
		cm[i], cr[i] = k.message, int32(k.recipient)
		cf[i], ct[i] = st.from-int64(classify.BurstWindow), st.to+int64(classify.BurstWindow)
	}
	b := &pgx.Batch{}
	b.Queue("SELECT hit::text FROM events WHERE hit = ANY($1::text[]::uuid[])", hits)
	b.Queue("SELECT id, account FROM messages WHERE id = ANY($1)", ids)
	b.Queue("SELECT message FROM erased WHERE message = ANY($1)", ids)
	b.Queue(`SELECT q.o,
		(SELECT count(*) FROM (SELECT 1 FROM events e WHERE e.message = q.m AND e.recipient = q.r AND e.kept LIMIT $3) k),
		EXISTS (SELECT 1 FROM events e WHERE e.message = q.m AND e.recipient = q.r AND e.type = 'open' AND e.class IN ('human', 'proxy'))
		FROM unnest($1::text[], $2::int[]) WITH ORDINALITY q(m, r, o)`, cm, cr, s.opts.MaxEventsPerRecipient)
	b.Queue(`SELECT q.o, e.seq, e.link, e.at_ns, e.kept, e.burst, e.class, e.reasons
		FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) WITH ORDINALITY q(m, r, f, t, o)
		JOIN events e ON e.message = q.m AND e.recipient = q.r AND e.at_ns BETWEEN q.f AND q.t
		WHERE e.type = 'click' AND e.class <> 'self'
		ORDER BY e.seq`, cm, cr, cf, ct)
	b.Queue("SELECT nextval('events_seq') FROM generate_series(1, $1)", len(batch))
	b.Queue("SELECT pg_current_xact_id()::text")
	br := tx.SendBatch(ctx, b)
	replayed := map[string]bool{}
	accounts := map[string]string{}
	erased := map[string]bool{}
	var seqs []int64
	var xid string
	err = func() error {
		defer br.Close()
		rows, _ := br.Query()
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				return err
			}
			replayed[h] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var id, acct string
			if err := rows.Scan(&id, &acct); err != nil {
				return err
			}
			accounts[id] = acct
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			erased[id] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var o, kept int64
			var opened bool
			if err := rows.Scan(&o, &kept, &opened); err != nil {
				return err
			}
			st := copies[copyOrder[o-1]]
			st.kept, st.opened = int(kept), opened
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var o int64
			var reasons []byte
			w := &windowClick{}
			if err := rows.Scan(&o, &w.seq, &w.link, &w.at, &w.kept, &w.burst, &w.class, &reasons); err != nil {
				return err
			}
			if err := json.Unmarshal(reasons, &w.reasons); err != nil {
				return err
			}
			st := copies[copyOrder[o-1]]
			st.clicks = append(st.clicks, w)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return br.QueryRow().Scan(&xid)
	}()
	if err != nil {
		return err
	}

	c := classifier{s: s, copies: copies, accounts: accounts}
	for i, r := range batch {
		if replayed[r.hit] {
			continue
		}
		if erased[r.ev.Message] {
			c.erased++
			continue
		}
		replayed[r.hit] = true // the same hit twice in one batch
		c.add(r, seqs[i])
	}
	if err := s.writeEvents(ctx, tx, &c); err != nil {
		return err
	}
	if f := s.beforeCommit.Load(); f != nil {
		(*f)()
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	if len(c.feed) > 0 {
		s.noteXid(xid)
	}
	s.opts.Metrics.Unlisted(store.UnlistedOverCap, c.overCap)
	s.opts.Metrics.Unlisted(store.UnlistedErased, c.erased)
	for _, class := range c.reclassified {
		s.opts.Metrics.Reclassified(class)
	}
	if c.outboxed {
		s.wakeOutbox()
	}
	return nil
}

// classifier builds a batch's writes, event by event, in arrival order.
type classifier struct {
	s            *Store
	copies       map[copyKey]*copyState
	accounts     map[string]string
	events       []*eventRow
	feed         []feedRow
	updates      map[int64]*eventUpdate
	overCap      int
	erased       int
	reclassified []string
	outboxed     bool
}

// add classifies r's event in its copy's sequence (classify.InSequence, with
// the copy's clicks within classify.BurstWindow of it) and adds its rows.
func (c *classifier) add(r *eventReq, seq int64) {
	e := r.ev
	acct := c.accounts[e.Message]
	st := c.copies[copyKey{e.Message, e.Recipient}]
	at := e.At.UnixNano()
	burstable := e.Type == store.EventClick && e.Class != classify.Self
	var history []*windowClick
	var joined []*windowClick
	switch {
	case e.Type == store.EventOpen:
		if classify.Counted(e.Class) {
			st.opened = true
		}
	case burstable:
		w := int64(classify.BurstWindow)
		clicks := []classify.Click{}
		for _, h := range st.clicks {
			if h.at >= at-w && h.at <= at+w {
				history = append(history, h)
				clicks = append(clicks, classify.Click{Link: h.link, At: time.Unix(0, h.at)})
			}
		}
		v, in := classify.InSequence(classify.Verdict{Class: e.Class, Client: e.Client, Reasons: e.Reasons},
			classify.Click{Link: e.Link, At: e.At}, st.opened, clicks)
		e.Class, e.Reasons = v.Class, v.Reasons
		for _, i := range in {
			if !history[i].burst {
				joined = append(joined, history[i])
			}
		}
	}
	kept := st.kept < c.s.opts.MaxEventsPerRecipient
	row := &eventRow{seq: seq, hit: r.hit, e: e, kept: kept, reasons: e.Reasons,
		burst: e.Class == classify.Scanner && slices.Contains(e.Reasons, classify.ReasonClickBurst)}
	if row.reasons == nil {
		row.reasons = []string{}
	}
	c.events = append(c.events, row)
	if kept {
		st.kept++
		if acct != "" {
			c.feedRow(feedRow{account: acct, kind: e.Type, message: e.Message, recipient: e.Recipient, event: seq, at: e.At})
		}
	} else {
		c.overCap++
	}
	for _, w := range joined {
		c.reclassify(acct, &e, w)
	}
	if burstable {
		st.clicks = append(st.clicks, &windowClick{seq: seq, link: e.Link, at: at, kept: kept, burst: row.burst,
			class: e.Class, reasons: row.reasons, row: row})
	}
}

// reclassify makes w, a click of e's copy, part of the burst e completes:
// scanner, with the reason click-burst. A click kept in detail whose class
// changes gets a reclassified entry in the feed; one past the cap leaves
// the copy's counts, which are derived from the classes.
func (c *classifier) reclassify(acct string, e *store.Event, w *windowClick) {
	prev := w.class
	w.class, w.reasons = classify.InBurst(slices.Clone(w.reasons))
	w.burst = true
	if w.row != nil {
		w.row.e.Class, w.row.reasons, w.row.burst = w.class, w.reasons, true
	} else {
		if c.updates == nil {
			c.updates = map[int64]*eventUpdate{}
		}
		c.updates[w.seq] = &eventUpdate{seq: w.seq, class: w.class, reasons: w.reasons}
	}
	if !w.kept || prev == w.class || acct == "" {
		return
	}
	c.reclassified = append(c.reclassified, w.class)
	c.feedRow(feedRow{account: acct, kind: store.EventReclassified, message: e.Message, recipient: e.Recipient,
		event: w.seq, at: e.At, class: w.class, prev: prev, reasons: w.reasons})
}

func (c *classifier) feedRow(f feedRow) {
	c.feed = append(c.feed, f)
	if c.s.webhooks[f.account] {
		c.outboxed = true
	}
}

// writeEvents sends the batch's writes in one round trip: one multi-row
// statement each for the events, the feed entries with their outbox rows,
// and the clicks that joined a burst.
func (s *Store) writeEvents(ctx context.Context, tx pgx.Tx, c *classifier) error {
	b := &pgx.Batch{}
	if n := len(c.events); n > 0 {
		var (
			seq                                                    = make([]int64, n)
			hit, msg, typ, class, reasons, url, ip, ua, cl, co, ci = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			rcpt, link                                             = make([]int32, n), make([]int32, n)
			at                                                     = make([]int64, n)
			kept, burst                                            = make([]bool, n), make([]bool, n)
		)
		for i, r := range c.events {
			e := &r.e
			seq[i], hit[i], msg[i], rcpt[i], typ[i], at[i] = r.seq, r.hit, e.Message, int32(e.Recipient), e.Type, e.At.UnixNano()
			link[i], kept[i], burst[i], class[i] = int32(e.Link), r.kept, r.burst, e.Class
			rs, _ := json.Marshal(r.reasons)
			reasons[i] = string(rs)
			if r.kept {
				url[i], ip[i], ua[i] = clean(e.URL), clean(e.IP), clean(e.UserAgent)
				cl[i], co[i], ci[i] = clean(e.Client), clean(e.Country), clean(e.City)
			} else {
				reasons[i] = "[]" // past the cap only the counts are kept
			}
		}
		b.Queue(`INSERT INTO events (seq, hit, message, recipient, type, at_ns, link, kept, burst, class, reasons,
			url, ip, user_agent, client, country, city)
			SELECT seq, hit::uuid, message, recipient, type, at_ns, link, kept, burst, class, reasons::jsonb,
			url, ip, user_agent, client, country, city
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bigint[], $7::int[],
				$8::bool[], $9::bool[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
				$15::text[], $16::text[], $17::text[])
				AS u(seq, hit, message, recipient, type, at_ns, link, kept, burst, class, reasons,
				url, ip, user_agent, client, country, city)
			ON CONFLICT (hit) DO NOTHING`,
			seq, hit, msg, rcpt, typ, at, link, kept, burst, class, reasons, url, ip, ua, cl, co, ci)
	}
	if n := len(c.feed); n > 0 {
		acct, kind, msg, class, prev, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]*string, n)
		rcpt := make([]int32, n)
		ev := make([]int64, n)
		at := make([]time.Time, n)
		for i, f := range c.feed {
			acct[i], kind[i], msg[i], rcpt[i], ev[i], at[i], class[i], prev[i] = f.account, f.kind, f.message, int32(f.recipient), f.event, f.at, f.class, f.prev
			if f.reasons != nil {
				rs, _ := json.Marshal(f.reasons)
				r := string(rs)
				reasons[i] = &r
			}
		}
		b.Queue(`WITH f AS (
			INSERT INTO feed (account, kind, message, recipient, event, at, class, prev, reasons)
			SELECT account, kind, message, recipient, event, at, class, prev, reasons::jsonb
			FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::timestamptz[],
				$7::text[], $8::text[], $9::text[]) WITH ORDINALITY
				AS u(account, kind, message, recipient, event, at, class, prev, reasons, o)
			ORDER BY o
			RETURNING seq, account)
			INSERT INTO outbox (entry, account, due, first_at)
			SELECT seq, account, $10, $10 FROM f WHERE account = ANY($11)`,
			acct, kind, msg, rcpt, ev, at, class, prev, reasons, time.Now(), s.webhookL)
	}
	if n := len(c.updates); n > 0 {
		seq, class, reasons := make([]int64, 0, n), make([]string, 0, n), make([]string, 0, n)
		for _, u := range c.updates {
			rs, _ := json.Marshal(u.reasons)
			seq, class, reasons = append(seq, u.seq), append(class, u.class), append(reasons, string(rs))
		}
		b.Queue(`UPDATE events SET class = u.class, reasons = u.reasons::jsonb, burst = true
			FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(seq, class, reasons)
			WHERE events.seq = u.seq`, seq, class, reasons)
	}
	if b.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, b).Close()
}
