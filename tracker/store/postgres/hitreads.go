package postgres

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Every hit reads its message before it is classified (Message), and a
// click its copy's delivery (Delivery). One query per hit made these reads
// most of a loaded node's work and of PostgreSQL's: a round trip, a pooled
// connection and a backend's turn for each (bench/tracking.sh,
// docs/performance.md). So they are grouped as commits are: a reader
// takes the reads waiting when it is free, up to maxReadGroup, and answers
// them from one round trip of at most three statements. An idle node reads
// at once; a loaded one reads many hits' messages for the cost of one.

// HitMessage implements store.HitReader: Message, answered from the
// messages this node's hits read within hitMessageTTL when it can. This
// node's Erase forgets the message at once; another node's erasure may go
// unseen here for hitMessageTTL, and the hit's batch drops it then.
func (s *Store) HitMessage(ctx context.Context, id string) (*store.Message, error) {
	if m := s.hitMessages.get(id, time.Now()); m != nil {
		return copyMessage(m), nil
	}
	m, err := s.Message(ctx, id)
	if err != nil {
		return nil, err
	}
	s.hitMessages.put(id, m, time.Now())
	return copyMessage(m), nil
}

// copyMessage copies a remembered message for a caller, who may change it.
func copyMessage(m *store.Message) *store.Message {
	cp := *m
	cp.Recipients = slices.Clone(m.Recipients)
	return &cp
}

// hitMessageTTL is how long HitMessage answers from memory, and
// hitMessagesMax about how many messages it remembers.
var hitMessageTTL = 5 * time.Second

const hitMessagesMax = 1 << 14

// messageMemory is the messages hits read lately: two generations, the
// older dropped when the newer is full, so that it stays bounded without
// an eviction list.
type messageMemory struct {
	mu       sync.Mutex
	cur, old map[string]remembered
}

type remembered struct {
	m  *store.Message // not changed once remembered
	at time.Time
}

func (mm *messageMemory) get(id string, now time.Time) *store.Message {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	r, ok := mm.cur[id]
	if !ok {
		r, ok = mm.old[id]
	}
	if !ok || now.Sub(r.at) >= hitMessageTTL || now.Before(r.at) {
		return nil
	}
	return r.m
}

func (mm *messageMemory) put(id string, m *store.Message, now time.Time) {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if mm.cur == nil || len(mm.cur) >= hitMessagesMax/2 {
		mm.old, mm.cur = mm.cur, make(map[string]remembered, hitMessagesMax/2)
	}
	mm.cur[id] = remembered{m: m, at: now}
}

func (mm *messageMemory) forget(id string) {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	delete(mm.cur, id)
	delete(mm.old, id)
}

// hitReaders is how many groups of reads may be in flight at once.
const hitReaders = 2

// maxReadGroup bounds the reads of one group.
const maxReadGroup = 256

// readTimeout bounds a group's round trip while the database is up (while
// it is down, FallbackAfter does, as for single reads).
const readTimeout = 5 * time.Second

// readReq is one read waiting for its group: a message (recipient < 0) or
// a copy's delivery.
type readReq struct {
	message   string
	recipient int
	done      chan readRes
}

type readRes struct {
	m   *store.Message
	at  time.Time // delivered at; zero: not delivered
	err error
}

// read hands r to a reader and waits for its answer or ctx.
func (s *Store) read(ctx context.Context, r *readReq) readRes {
	r.done = make(chan readRes, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return readRes{err: store.ErrClosed}
	}
	select {
	case s.hitReads <- r:
	case <-ctx.Done():
		s.mu.RUnlock()
		return readRes{err: ctx.Err()}
	}
	s.mu.RUnlock()
	select {
	case res := <-r.done:
		return res
	case <-ctx.Done():
		return readRes{err: ctx.Err()}
	}
}

// readLoop is a reader: it answers the reads waiting, up to maxReadGroup,
// from one round trip.
func (s *Store) readLoop() {
	defer s.workers.Done()
	for first := range s.hitReads {
		s.readGroup(gather(first, s.hitReads, maxReadGroup, nil))
	}
}

// readGroup answers group: every message asked for with its erasure, and
// every copy's delivery, in one round trip.
func (s *Store) readGroup(group []*readReq) {
	if f := s.beforeReadGroup.Load(); f != nil {
		(*f)(len(group))
	}
	bound := readTimeout
	if s.fb != nil && s.isDown() {
		bound = s.opts.FallbackAfter
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	var ids, dm []string
	var dr []int32
	seen := map[string]bool{}
	for _, r := range group {
		if r.recipient >= 0 {
			dm, dr = append(dm, r.message), append(dr, int32(r.recipient))
		} else if !seen[r.message] {
			seen[r.message] = true
			ids = append(ids, r.message)
		}
	}
	messages := map[string]*storedMessage{}
	erased := map[string]bool{}
	delivered := map[copyKey]time.Time{}
	err := func() error {
		b := &pgx.Batch{}
		if len(ids) > 0 {
			// Probed one by one in the primary key: as id = ANY(...) a
			// small table is planned as a sequential scan.
			b.Queue("SELECT "+prefixed("m.", messageColumns)+` FROM unnest($1::text[]) q(id)
				JOIN messages m ON m.id = q.id`, ids)
			b.Queue(`SELECT q.id FROM unnest($1::text[]) q(id)
				WHERE EXISTS (SELECT 1 FROM erased e WHERE e.message = q.id)`, ids)
		}
		if len(dm) > 0 {
			b.Queue(`SELECT q.m, q.r, d.updated_at FROM unnest($1::text[], $2::int[]) q(m, r)
				JOIN deliveries d ON d.message = q.m AND d.recipient = q.r AND d.status = $3`,
				dm, dr, delivery.Delivered)
		}
		br := s.pool.SendBatch(ctx, b)
		defer br.Close()
		if len(ids) > 0 {
			rows, _ := br.Query()
			for rows.Next() {
				m, err := scanMessage(rows)
				if err != nil {
					rows.Close()
					return err
				}
				messages[m.id] = m
			}
			if err := rows.Err(); err != nil {
				return err
			}
			rows, _ = br.Query()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return err
				}
				erased[id] = true
			}
			if err := rows.Err(); err != nil {
				return err
			}
		}
		if len(dm) > 0 {
			rows, _ := br.Query()
			for rows.Next() {
				var k copyKey
				var r int32
				var at time.Time
				if err := rows.Scan(&k.message, &r, &at); err != nil {
					rows.Close()
					return err
				}
				k.recipient = int(r)
				delivered[k] = at.UTC()
			}
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return br.Close()
	}()
	for _, r := range group {
		var res readRes
		switch {
		case err != nil && r.recipient >= 0:
			res.err = fmt.Errorf("postgres store: delivery of %s/%d: %w", r.message, r.recipient, err)
		case err != nil:
			res.err = fmt.Errorf("postgres store: message %s: %w", r.message, err)
		case r.recipient >= 0:
			res.at = delivered[copyKey{r.message, r.recipient}]
		case erased[r.message]:
			res.err = store.ErrErased
		case messages[r.message] != nil:
			res.m = messages[r.message].message()
		default:
			res.err = store.ErrNotFound
		}
		r.done <- res
	}
}

// prefixed qualifies each of the comma-separated columns with p.
func prefixed(p, columns string) string {
	out := make([]byte, 0, len(columns)+8*len(p))
	out = append(out, p...)
	for i := 0; i < len(columns); i++ {
		out = append(out, columns[i])
		if columns[i] == ',' {
			i++ // the space after it
			out = append(out, ' ')
			out = append(out, p...)
		}
	}
	return string(out)
}
