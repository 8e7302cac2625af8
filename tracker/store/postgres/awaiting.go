package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Events ahead of their message. While PostgreSQL is down a node accepts
// mail (the relay owes the store the message's record) and answers hits
// (they go to the hit log); when it is back, the shipper and the relay's
// retry race, and a hit may also commit a moment before its record on a
// node that is up. Such a hit was classified by a tracker that could not
// read its message (store.Event.WithoutMessage), and its message has no
// account yet to list it under. So:
//   - a hit WithoutMessage whose message is in the database when its batch
//     commits is classified again first (classify.WithMessage: submitter,
//     untracked copy, a click soon after its copy's delivery), before the
//     sequence rules, exactly as if the tracker had read the message;
//   - an event committed without its message's record, or a click
//     WithoutMessage whose copy is not delivered yet, gets a row in
//     awaiting, in the same transaction as the event;
//   - when the message's record commits (records.go) or a copy's delivery
//     (SetDelivery), the same transaction settles the message's awaiting
//     rows under its lock: it classifies each event again with the
//     message's data and writes its feed entry (with its outbox row for a
//     webhook account) once, or a reclassified entry when the class of an
//     event already listed changes.
//
// An erased message's events are deleted with their awaiting rows, and
// its record never returns: nothing comes back. An event whose record
// never comes stays unlisted until retention deletes it, and its row
// with it. The submitter rule needs the client's full address, which
// tracking.ip_mode may not let the events table keep: awaiting keeps a
// salted SHA-256 of it instead, until the message is known.

// clientDigest is the salted digest of addr (a full address) that
// awaiting keeps, "" for none.
func clientDigest(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return ""
	}
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		return ""
	}
	return hex.EncodeToString(salt) + ":" + hex.EncodeToString(digestOf(salt, ip))
}

func digestOf(salt []byte, ip netip.Addr) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(ip.Unmap().String()))
	return h.Sum(nil)
}

// submitterDigest reports whether digest (of clientDigest) is of the
// address submitIP, compared as classify.SameAddress compares.
func submitterDigest(digest, submitIP string) bool {
	salt, sum, ok := strings.Cut(digest, ":")
	if !ok || submitIP == "" {
		return false
	}
	sip, err := netip.ParseAddr(submitIP)
	if err != nil {
		return false
	}
	s, err1 := hex.DecodeString(salt)
	want, err2 := hex.DecodeString(sum)
	if err1 != nil || err2 != nil {
		return false
	}
	return subtle.ConstantTimeCompare(digestOf(s, sip), want) == 1
}

// messageFacts is what classify.WithMessage needs of a message.
type messageFacts struct {
	submitIP   string
	recipients []storedRecipient
}

func (m *messageFacts) untracked(recipient int) bool {
	return recipient >= 0 && recipient < len(m.recipients) && !m.recipients[recipient].Tracked
}

// withMessages classifies again, with their messages' data, the hits of
// batch classified without it whose message is in the database (accounts,
// as commitEvents read them), before the sequence rules see them.
func (s *Store) withMessages(ctx context.Context, tx pgx.Tx, batch []*eventReq, accounts map[string]string, copies map[copyKey]*copyState) error {
	var ids []string
	for _, r := range batch {
		if _, known := accounts[r.ev.Message]; r.ev.WithoutMessage && known && !slices.Contains(ids, r.ev.Message) {
			ids = append(ids, r.ev.Message)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	facts := map[string]*messageFacts{}
	rows, _ := tx.Query(ctx, "SELECT id, submit_ip, recipients FROM messages WHERE id = ANY($1)", ids)
	for rows.Next() {
		var id string
		var rcpts []byte
		m := &messageFacts{}
		if err := rows.Scan(&id, &m.submitIP, &rcpts); err != nil {
			return err
		}
		if err := json.Unmarshal(rcpts, &m.recipients); err != nil {
			return err
		}
		facts[id] = m
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range batch {
		m := facts[r.ev.Message]
		if !r.ev.WithoutMessage || m == nil {
			continue
		}
		e := &r.ev
		ip, _ := netip.ParseAddr(e.ClientIP)
		v := classify.WithMessage(classify.Verdict{Class: e.Class, Client: e.Client, Reasons: e.Reasons}, classify.MessageFacts{
			Submitter: classify.SameAddress(ip, m.submitIP), Untracked: m.untracked(e.Recipient),
			Click: e.Type == store.EventClick, At: e.At, DeliveredAt: copies[copyKey{e.Message, e.Recipient}].delivered,
			ScannerWindow: s.opts.ScannerWindow})
		e.Class, e.Reasons = v.Class, v.Reasons
	}
	return nil
}

// writeAwaiting adds the awaiting rows of the batch's events: those of a
// message without its record, and the clicks classified without their
// copy's delivery.
func (s *Store) writeAwaiting(ctx context.Context, tx pgx.Tx, c *classifier) error {
	var seq []int64
	var msg []string
	var listed []bool
	var client []*string
	for _, row := range c.events {
		e := &row.e
		_, known := c.accounts[e.Message]
		pending := e.WithoutMessage && (!known || e.Type == store.EventClick && c.copies[copyKey{e.Message, e.Recipient}].delivered.IsZero())
		if known && !pending {
			continue
		}
		seq, msg, listed = append(seq, row.seq), append(msg, e.Message), append(listed, known || !row.kept)
		var d *string
		if pending {
			ip := e.ClientIP
			if ip == "" {
				ip = e.IP
			}
			digest := clientDigest(ip)
			d = &digest
		}
		client = append(client, d)
	}
	if len(seq) == 0 {
		return nil
	}
	// Only events the batch inserted (not a hit another transaction stored).
	_, err := tx.Exec(ctx, `INSERT INTO awaiting (seq, message, listed, client)
		SELECT u.* FROM unnest($1::bigint[], $2::text[], $3::bool[], $4::text[]) AS u(seq, message, listed, client)
		WHERE EXISTS (SELECT 1 FROM events e WHERE e.seq = u.seq)
		ON CONFLICT (seq) DO NOTHING`,
		seq, msg, listed, client)
	return err
}

// settled is what settle wrote: its transaction's id when it wrote feed
// entries, and whether any has an outbox row.
type settled struct {
	xid          string
	outboxed     bool
	reclassified []string
}

// settle settles the awaiting rows of messages (whose locks tx holds) that
// have their record: each event is classified again with the message's
// data, listed once, and its row goes once nothing is awaited.
func (s *Store) settle(ctx context.Context, tx pgx.Tx, messages []string) (settled, error) {
	var out settled
	type row struct {
		seq               int64
		listed            bool
		client            *string
		typ               string
		recipient         int
		at                int64
		kept              bool
		class             string
		reasons           []string
		account, submitIP string
		recipients        []storedRecipient
		delivered         *time.Time
		message           string
	}
	var rs []*row
	rows, _ := tx.Query(ctx, `SELECT a.seq, a.message, a.listed, a.client, e.type, e.recipient, e.at_ns, e.kept, e.class, e.reasons,
			m.account, m.submit_ip, m.recipients, d.updated_at
		FROM awaiting a JOIN events e ON e.seq = a.seq JOIN messages m ON m.id = a.message
		LEFT JOIN deliveries d ON d.message = a.message AND d.recipient = e.recipient AND d.status = 'delivered'
		WHERE a.message = ANY($1) ORDER BY a.seq`, messages)
	for rows.Next() {
		r := &row{}
		var reasons, rcpts []byte
		if err := rows.Scan(&r.seq, &r.message, &r.listed, &r.client, &r.typ, &r.recipient, &r.at, &r.kept, &r.class, &reasons,
			&r.account, &r.submitIP, &rcpts, &r.delivered); err != nil {
			return out, err
		}
		if err := json.Unmarshal(reasons, &r.reasons); err != nil {
			return out, err
		}
		if err := json.Unmarshal(rcpts, &r.recipients); err != nil {
			return out, err
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil || len(rs) == 0 {
		return out, err
	}
	var feed []feedRow
	var upSeq []int64
	var upClass, upReasons []string
	var upBurst []bool
	var done, listed []int64
	now := time.Now().UTC()
	for _, r := range rs {
		pending := r.client != nil
		if pending {
			m := messageFacts{submitIP: r.submitIP, recipients: r.recipients}
			f := classify.MessageFacts{Submitter: submitterDigest(*r.client, r.submitIP), Untracked: m.untracked(r.recipient),
				Click: r.typ == store.EventClick, At: time.Unix(0, r.at), ScannerWindow: s.opts.ScannerWindow}
			if r.delivered != nil {
				f.DeliveredAt = *r.delivered
			}
			v := classify.WithMessage(classify.Verdict{Class: r.class, Reasons: r.reasons}, f)
			if v.Class != r.class || !slices.Equal(v.Reasons, r.reasons) {
				js, _ := json.Marshal(v.Reasons)
				upSeq, upClass, upReasons, upBurst = append(upSeq, r.seq), append(upClass, v.Class), append(upReasons, string(js)), append(upBurst, inBurst(v.Class, v.Reasons))
				if r.listed && r.kept && v.Class != r.class {
					feed = append(feed, feedRow{account: r.account, kind: store.EventReclassified, message: r.message,
						recipient: r.recipient, event: r.seq, at: now, class: v.Class, prev: r.class, reasons: v.Reasons})
					out.reclassified = append(out.reclassified, v.Class)
				}
			}
			// A click's class may still change with its copy's delivery.
			pending = r.typ == store.EventClick && r.delivered == nil
		}
		if !r.listed && r.kept && r.account != "" {
			feed = append(feed, feedRow{account: r.account, kind: r.typ, message: r.message, recipient: r.recipient,
				event: r.seq, at: time.Unix(0, r.at).UTC()})
		}
		if pending {
			listed = append(listed, r.seq)
		} else {
			done = append(done, r.seq)
		}
	}
	b := &pgx.Batch{}
	if len(upSeq) > 0 {
		b.Queue(`UPDATE events SET class = u.class, reasons = u.reasons::jsonb, burst = u.burst
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bool[]) AS u(seq, class, reasons, burst)
			WHERE events.seq = u.seq`, upSeq, upClass, upReasons, upBurst)
	}
	if len(feed) > 0 {
		n := len(feed)
		acct, kind, msg, class, prev, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]*string, n)
		rcpt := make([]int32, n)
		ev := make([]int64, n)
		at := make([]time.Time, n)
		for i, f := range feed {
			acct[i], kind[i], msg[i], rcpt[i], ev[i], at[i], class[i], prev[i] = f.account, f.kind, f.message, int32(f.recipient), f.event, f.at, f.class, f.prev
			if f.reasons != nil {
				rs, _ := json.Marshal(f.reasons)
				r := string(rs)
				reasons[i] = &r
			}
			if s.webhooks[f.account] {
				out.outboxed = true
			}
		}
		b.Queue(feedInsert,
			acct, kind, msg, rcpt, ev, at, class, prev, reasons, time.Now(), s.webhookL)
	}
	b.Queue("DELETE FROM awaiting WHERE seq = ANY($1)", done)
	b.Queue("UPDATE awaiting SET listed = true WHERE seq = ANY($1)", listed)
	if len(feed) > 0 {
		b.Queue("SELECT pg_current_xact_id()::text")
	}
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	for range b.Len() - 1 {
		if _, err := br.Exec(); err != nil {
			return out, err
		}
	}
	if len(feed) > 0 {
		if err := br.QueryRow().Scan(&out.xid); err != nil {
			return out, err
		}
	} else if _, err := br.Exec(); err != nil {
		return out, err
	}
	return out, br.Close()
}

// afterSettle does, once settle's transaction has committed, what a
// commit of feed entries does.
func (s *Store) afterSettle(st settled) {
	if st.xid != "" {
		s.noteXid(st.xid)
	}
	for _, class := range st.reclassified {
		s.opts.Metrics.Reclassified(class)
	}
	if st.outboxed {
		s.wakeOutbox()
	}
}
