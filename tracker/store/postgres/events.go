package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// feedInsert writes feed entries, in the order of their arrays, and the
// webhook outbox rows of the accounts that have a webhook ($11): $1-$9 the
// entries' columns, $10 when the rows are due.
const feedInsert = `WITH f AS (
	INSERT INTO feed (account, kind, message, recipient, event, at, class, prev, reasons)
	SELECT account, kind, message, recipient, event, at, class, prev, reasons::jsonb
	FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::timestamptz[],
		$7::text[], $8::text[], $9::text[]) WITH ORDINALITY
		AS u(account, kind, message, recipient, event, at, class, prev, reasons, o)
	ORDER BY o
	RETURNING seq, account)
	INSERT INTO outbox (entry, account, due, first_at)
	SELECT seq, account, $10, $10 FROM f WHERE account = ANY($11)`

// eventsInsert writes events, $1-$17 their columns; a hit already stored
// (by its id) is not written again.
const eventsInsert = `INSERT INTO events (seq, hit, message, recipient, type, at_ns, link, kept, burst, class, reasons,
	url, ip, user_agent, client, country, city)
	SELECT seq, hit::uuid, message, recipient, type, at_ns, link, kept, burst, class, reasons::jsonb,
	url, ip, user_agent, client, country, city
	FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bigint[], $7::int[],
		$8::bool[], $9::bool[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
		$15::text[], $16::text[], $17::text[])
		AS u(seq, hit, message, recipient, type, at_ns, link, kept, burst, class, reasons,
		url, ip, user_agent, client, country, city)
	ON CONFLICT (hit) DO NOTHING`

// eventsAndFeedInsert is eventsInsert ($1-$17) and feedInsert ($18-$28)
// in one statement, where an entry of a new event ($29 is the kind of the
// others: reclassified) is written only with its event: two batches that
// hold the same hit (a replay) under shared locks list it once.
const eventsAndFeedInsert = `WITH ins AS (` + eventsInsert + ` RETURNING seq),
	f AS (
	INSERT INTO feed (account, kind, message, recipient, event, at, class, prev, reasons)
	SELECT account, kind, message, recipient, event, at, class, prev, reasons::jsonb
	FROM unnest($18::text[], $19::text[], $20::text[], $21::int[], $22::bigint[], $23::timestamptz[],
		$24::text[], $25::text[], $26::text[]) WITH ORDINALITY
		AS u(account, kind, message, recipient, event, at, class, prev, reasons, o)
	WHERE kind = $29 OR event IN (SELECT seq FROM ins)
	ORDER BY o
	RETURNING seq, account)
	INSERT INTO outbox (entry, account, due, first_at)
	SELECT seq, account, $27, $27 FROM f WHERE account = ANY($28)`

// clean makes s storable as PostgreSQL text (valid UTF-8, no NUL).
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "")
}

// historyMarks selects the events kept in detail whose reasons other
// events of their copy are classified against: honeypot hits and gateways'
// pixel fetches. It is the predicate of the index events_marks (migration
// history_indexes), word for word, so that the planner uses that index.
const historyMarks = `e.kept AND (e.reasons ? 'honeypot'
				OR e.type = 'open' AND e.reasons @? '$[*] ? (@ starts with "gateway-range:" || @ starts with "gateway-network:")')`

// commitEvents writes a batch of events in one transaction: it takes the
// advisory locks of their messages (so that a message's history cannot
// change under the classification, on any node), reads what
// classification needs, applies the sequence rules as package bolt does
// (sequence.go), and writes the events, their feed entries (with the
// outbox rows of webhook accounts) and the earlier events reclassified.
func (s *Store) commitEvents(ctx context.Context, batch []*eventReq) error {
	err := s.commitEventsLocked(ctx, batch, false)
	if errors.Is(err, errNeedsExclusive) {
		s.exclusiveRetries.Add(1)
		err = s.commitEventsLocked(ctx, batch, true)
	}
	return err
}

// commitEventsLocked is commitEvents, with every message's lock exclusive
// when exclusive is set, else in the mode lockModes predicts; it returns
// errNeedsExclusive, having written nothing, when the reads show that a
// shared lock was not enough (sharedSafe).
func (s *Store) commitEventsLocked(ctx context.Context, batch []*eventReq, exclusive bool) error {
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
		if classify.FromHoneypot(r.ev.Reasons) || r.ev.Type == store.EventOpen && classify.FromGateway(r.ev.Reasons) {
			st.marks = true
		}
		if r.ev.Type == store.EventClick && r.ev.Class != classify.Self {
			st.clicks = true
		}
	}

	// What the batch needs, in one round trip: first the advisory locks of
	// its messages, so that every read that follows sees their history as
	// no other batch can change it until this one commits.
	cm := make([]string, len(copyOrder))
	cr := make([]int32, len(copyOrder))
	cf := make([]int64, len(copyOrder))
	ct := make([]int64, len(copyOrder))
	cw := make([]bool, len(copyOrder))
	cc := make([]bool, len(copyOrder))
	ca := make([]bool, len(copyOrder))
	w := int64(s.historyWindow())
	for i, k := range copyOrder {
		st := copies[k]
		cm[i], cr[i] = k.message, int32(k.recipient)
		cf[i], ct[i], cw[i], cc[i] = st.from-w, st.to+w, st.marks, st.clicks
		st.atCap = s.knownAtCap(k)
		ca[i] = st.atCap
	}
	locks := s.lockModes(batch, copies, exclusive)
	burstWindow := int64(classify.BurstWindow)
	// The messages and (address, agent) pairs of the batch's clicks, for
	// the multi-recipient rule.
	var clickMsgs, clickIPs, clickUAs []string
	for _, r := range batch {
		if r.ev.Type == store.EventClick && r.ev.Class != classify.Self && r.ev.IP != "" && r.ev.UserAgent != "" {
			clickMsgs, clickIPs, clickUAs = append(clickMsgs, r.ev.Message), append(clickIPs, clean(r.ev.IP)), append(clickUAs, clean(r.ev.UserAgent))
		}
	}
	b := &pgx.Batch{}
	b.Queue(lockModesSQL, locks.keys, locks.modes)
	// The hits already stored (replays), probed one by one in the unique
	// index: written as hit = ANY(...), a batch of a thousand hits (the
	// shipper's) is planned as a sequential scan of the whole table. Only
	// hits from the hit log are probed: a hit fresh from AddEvent is
	// stored already only when it went to the log while its batch was in
	// flight, and whichever of the two commits second inserts nothing (its
	// event conflicts on the hit id, and its feed entry goes only with an
	// event inserted: writeEvents).
	probe := slices.ContainsFunc(batch, func(r *eventReq) bool { return r.fromLog })
	if probe {
		b.Queue(`SELECT x.hit::text FROM unnest($1::text[]::uuid[]) h(id)
		CROSS JOIN LATERAL (SELECT e.hit FROM events e WHERE e.hit = h.id LIMIT 1) x`, hits)
	}
	b.Queue("SELECT id, account FROM messages WHERE id = ANY($1)", ids)
	b.Queue("SELECT message FROM erased WHERE message = ANY($1)", ids)
	// The cap and the copy's first counted open count the events retention
	// deleted too (tallies). Every event kept in detail took its own value
	// of events_seq (imported ones keep theirs, and the sequence is set
	// past them), so no copy holds more than its last value (plus one, for
	// a 0): while that and the batch stay under the cap, no event of the
	// batch can reach it, and the copy's events are not counted (with a
	// high cap a busy copy has thousands). Whether the copy had a counted
	// open is read only for copies the batch clicks: only clicks use it,
	// and a copy opened by machines alone would be read through.
	// A copy this node saw at the cap is not counted again (the count
	// only grows: retention moves events into tallies); -1 says the count
	// was skipped under the cap.
	b.Queue(`SELECT q.o,
		CASE WHEN q.a THEN $3 WHEN (SELECT last_value FROM events_seq) + 1 + $4 <= $3 THEN -1 ELSE
		(SELECT count(*) FROM (SELECT 1 FROM events e WHERE e.message = q.m AND e.recipient = q.r AND e.kept LIMIT $3) k)
			+ (SELECT coalesce(sum(t.kept), 0)::bigint FROM tallies t WHERE t.message = q.m AND t.recipient = q.r) END,
		q.c AND (EXISTS (SELECT 1 FROM events e WHERE e.message = q.m AND e.recipient = q.r AND e.type = 'open' AND e.class IN ('human', 'proxy'))
			OR EXISTS (SELECT 1 FROM tallies t WHERE t.message = q.m AND t.recipient = q.r AND t.type = 'open' AND t.class IN ('human', 'proxy')))
		FROM unnest($1::text[], $2::int[], $5::bool[], $6::bool[]) WITH ORDINALITY q(m, r, c, a, o)`, cm, cr, s.opts.MaxEventsPerRecipient, len(batch), cc, ca)
	// A copy's events near the batch's that the sequence rules need
	// (sequence.go): its clicks in the burst window, past the cap too (a
	// flood past it keeps no address nor reasons: nothing else of it is
	// read back); the honeypot hits and gateway pixel fetches kept in
	// detail; and, when the batch holds a honeypot hit or a gateway's
	// pixel fetch of the copy, every event kept in detail, which it may
	// reclassify. A batch of plain opens reads nothing here.
	// Three reads by index, merged: a copy's busy minute holds thousands
	// of plain opens that none of them walks.
	b.Queue(`SELECT q.o, e.seq, e.type, e.link, e.at_ns, e.kept, e.burst, e.class, e.reasons, e.ip
		FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bool[]) WITH ORDINALITY q(m, r, f, t, w, o)
		JOIN LATERAL (
			SELECT e.seq FROM events e WHERE e.message = q.m AND e.recipient = q.r
				AND e.at_ns BETWEEN q.f + $6 AND q.t - $6 AND e.type = 'click' AND e.class <> 'self'
			UNION
			SELECT e.seq FROM events e WHERE e.message = q.m AND e.recipient = q.r
				AND e.at_ns BETWEEN q.f AND q.t AND `+historyMarks+`
			UNION
			SELECT e.seq FROM events e WHERE q.w AND e.message = q.m AND e.recipient = q.r
				AND e.at_ns BETWEEN q.f AND q.t AND e.kept) s ON true
		JOIN events e ON e.seq = s.seq
		ORDER BY e.seq`, cm, cr, cf, ct, cw, w-burstWindow)
	b.Queue(`SELECT q.o, d.updated_at FROM unnest($1::text[], $2::int[]) WITH ORDINALITY q(m, r, o)
		JOIN deliveries d ON d.message = q.m AND d.recipient = q.r AND d.status = 'delivered'`, cm, cr)
	b.Queue(`SELECT e.seq, e.message, e.recipient, e.link, e.at_ns, e.burst, e.class, e.reasons, e.ip, e.user_agent, d.updated_at
		FROM events e JOIN deliveries d ON d.message = e.message AND d.recipient = e.recipient AND d.status = 'delivered'
		WHERE e.message = ANY($1) AND e.type = 'click' AND e.kept AND e.class <> 'self'
			AND (e.ip, e.user_agent) IN (SELECT * FROM unnest($2::text[], $3::text[]))
			AND e.at_ns >= (extract(epoch FROM d.updated_at) * 1000000)::bigint * 1000
			AND e.at_ns <= (extract(epoch FROM d.updated_at) * 1000000)::bigint * 1000 + $4
		ORDER BY e.seq`, clickMsgs, clickIPs, clickUAs, int64(classify.MultiRecipientWindow))
	b.Queue("SELECT nextval('events_seq') FROM generate_series(1, $1)", len(batch))
	b.Queue("SELECT pg_current_xact_id()::text")
	br := tx.SendBatch(ctx, b)
	replayed := map[string]bool{}
	bySeq := map[int64]*hist{}
	clicks := map[string][]*hist{}
	accounts := map[string]string{}
	erased := map[string]bool{}
	var seqs []int64
	var xid string
	err = func() error {
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		if probe {
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
		}
		rows, _ := br.Query()
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
			st.kept, st.opened, st.uncounted = int(max(kept, 0)), opened, kept < 0
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var o int64
			var reasons []byte
			h := &hist{}
			if err := rows.Scan(&o, &h.seq, &h.typ, &h.link, &h.at, &h.kept, &h.burst, &h.class, &reasons, &h.ip); err != nil {
				return err
			}
			if err := json.Unmarshal(reasons, &h.reasons); err != nil {
				return err
			}
			k := copyOrder[o-1]
			h.recipient = k.recipient
			copies[k].hits = append(copies[k].hits, h)
			bySeq[h.seq] = h
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var o int64
			var at time.Time
			if err := rows.Scan(&o, &at); err != nil {
				return err
			}
			copies[copyOrder[o-1]].delivered = at
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, _ = br.Query()
		for rows.Next() {
			var reasons []byte
			h := &hist{typ: store.EventClick, kept: true}
			var msg string
			if err := rows.Scan(&h.seq, &msg, &h.recipient, &h.link, &h.at, &h.burst, &h.class, &reasons, &h.ip, &h.ua, &h.delivered); err != nil {
				return err
			}
			if err := json.Unmarshal(reasons, &h.reasons); err != nil {
				return err
			}
			if known := bySeq[h.seq]; known != nil {
				known.ua, known.delivered = h.ua, h.delivered
				h = known
			}
			clicks[msg] = append(clicks[msg], h)
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
	s.noteSeqs(seqs)
	if !s.sharedSafe(locks, copies, seqs) {
		return errNeedsExclusive
	}

	if err := s.withMessages(ctx, tx, batch, accounts, copies); err != nil {
		return err
	}
	c := classifier{s: s, copies: copies, clicks: clicks, accounts: accounts}
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
	if err := s.writeAwaiting(ctx, tx, &c); err != nil {
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

// writeEvents sends the batch's writes in one round trip: one multi-row
// statement each for the events, the feed entries with their outbox rows,
// and the earlier events reclassified.
func (s *Store) writeEvents(ctx context.Context, tx pgx.Tx, c *classifier) error {
	b := &pgx.Batch{}
	var eventArgs, feedArgs []any
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
		eventArgs = []any{seq, hit, msg, rcpt, typ, at, link, kept, burst, class, reasons, url, ip, ua, cl, co, ci}
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
		feedArgs = []any{acct, kind, msg, rcpt, ev, at, class, prev, reasons, time.Now(), s.webhookL}
	}
	switch {
	case eventArgs != nil && feedArgs != nil:
		b.Queue(eventsAndFeedInsert, append(append(eventArgs, feedArgs...), store.EventReclassified)...)
	case eventArgs != nil:
		b.Queue(eventsInsert, eventArgs...)
	case feedArgs != nil:
		b.Queue(feedInsert, feedArgs...)
	}
	if n := len(c.updates); n > 0 {
		seq, class, reasons, burst := make([]int64, 0, n), make([]string, 0, n), make([]string, 0, n), make([]bool, 0, n)
		for _, u := range c.updates {
			rs, _ := json.Marshal(u.reasons)
			seq, class, reasons, burst = append(seq, u.seq), append(class, u.class), append(reasons, string(rs)), append(burst, u.burst)
		}
		b.Queue(`UPDATE events SET class = u.class, reasons = u.reasons::jsonb, burst = u.burst
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bool[]) AS u(seq, class, reasons, burst)
			WHERE events.seq = u.seq`, seq, class, reasons, burst)
	}
	if b.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, b).Close()
}
