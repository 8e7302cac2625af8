package tracker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/classify"
	bolt "go.etcd.io/bbolt"
)

type eventReq struct {
	ev    Event
	value []byte               // JSON storedEvent as classified by the handler
	fn    func(*bolt.Tx) error // instead of an event: any other write, run in order
	after func(err error)      // run by the collector once fn's commit is over
	lazy  bool                 // may wait up to ReportDelay for company
	done  chan error
	// logged: the event is in the hit log and was answered; the applier
	// commits it to bbolt without answering again.
	logged bool
	seq    uint64 // the event's hit log sequence once logged, for the quarantine file
}

// applyBatch is a batch of the collector's, handed to the applier.
type applyBatch struct {
	reqs   []*eventReq
	logSeq uint64 // the log sequence of its last logged event; 0 if none
}

const (
	applyQueueLen = 256  // batches the applier may lag behind
	applyMax      = 8192 // most writes in one applier transaction
	applyInterval = 20 * time.Millisecond
)

// commitFault and syncFault, set by tests only, make a commit or a hit log
// sync fail as a failing disk would.
var commitFault, syncFault atomic.Pointer[func() error]

// metaLogKey holds, in the meta bucket, the last log sequence in bbolt.
var metaLogKey = []byte("log")

// AddEvent implements Store: it hands e to the collector and waits until the
// batch holding it is durable: appended to the hit log and synced (or, if
// the log fails, committed to bbolt). The store keeps e's slices (Reasons)
// until it is committed to bbolt: the caller must not change them. If ctx
// ends first, AddEvent returns ctx's error, though the event may still be
// committed later.
//
// The collector may add evidence that only the sequence of a copy's events
// shows (a burst of clicks on several links; whether an open came before a
// click), and reclassify earlier events, which the feed reports as
// "reclassified" entries. Past MaxEventsPerRecipient events of one copy, an
// event only adds to the copy's counters. An event for an erased message is
// dropped.
func (s *BoltStore) AddEvent(ctx context.Context, e Event) error {
	if err := validID(e.Message); err != nil {
		return err
	}
	// Checked here too, not only when applied: an event is answered once
	// logged, and one the applier would refuse must not be.
	if e.Recipient < 0 || int64(e.Recipient) > int64(^uint32(0)) {
		return fmt.Errorf("tracker: invalid recipient %d", e.Recipient)
	}
	e.At = e.At.UTC()
	val, err := encodeEvent(&storedEvent{
		Type: e.Type, At: e.At, Recipient: e.Recipient, Link: e.Link, URL: e.URL,
		IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Country: e.Country, City: e.City,
		Class: e.Class, Reasons: e.Reasons,
	})
	if err != nil {
		return fmt.Errorf("tracker: encode event: %w", err)
	}
	return s.submit(ctx, &eventReq{ev: e, value: val, done: make(chan error, 1)})
}

// write runs fn in the collector's group commit, in order with the events,
// and waits until it is durable. The relay's reports (a message, its links,
// each delivery) come from many delivery workers at once and share the
// events' commits: a write alone waits up to ReportDelay for other writes
// (the next hit, the other workers' reports) before its commit starts, so
// that a busy relay pays two fdatasyncs for many reports; a hit never waits.
// fn may run again after its transaction was rolled back (another write of
// its batch failed), so it must not change anything outside the
// transaction: what should follow the commit goes in after, which the
// collector calls with the commit's outcome, even if the caller stopped
// waiting.
func (s *BoltStore) write(ctx context.Context, fn func(*bolt.Tx) error, after func(error)) error {
	return s.submit(ctx, &eventReq{fn: fn, after: after, lazy: true, done: make(chan error, 1)})
}

func (s *BoltStore) submit(ctx context.Context, r *eventReq) error {
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	// The queue mostly has room: a send that cannot wait costs no locks
	// on the shared closing and deadline channels.
	select {
	case s.reqs <- r:
	default:
		select {
		case s.reqs <- r:
		case <-s.closing:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case err := <-r.done:
		return err
	case <-s.applierDone:
		// Everything the collector took is answered before the applier stops.
		select {
		case err := <-r.done:
			return err
		default:
			return ErrClosed
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// collect is the single writer of events. It waits for a first request,
// takes every other request already queued (up to MaxBatch), appends the
// events to the hit log, answers them, and hands the batch to the applier.
// Requests that arrive during an append form the next batch, so the batch
// size follows the load and an idle store logs a lone hit at once. Under
// load (the last batch had company), it first waits twice as long as the
// last append took, at most MaxCommitDelay, for the hits being served to
// join: each append costs an fdatasync of CPU whatever its size, and a busy
// server spends less per hit on bigger batches. Only a batch of lazy
// writes alone waits, up to ReportDelay, for a hit or a full batch.
func (s *BoltStore) collect() {
	defer close(s.stopped)
	defer close(s.applyCh)
	batch := make([]*eventReq, 0, s.opts.MaxBatch)
	var delay *time.Timer
	var lastBatch int
	var lastCommit time.Duration
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		case <-s.closing:
			s.drain(batch[:0])
			return
		}
		if lastBatch >= commitSiblings && s.opts.MaxCommitDelay > 0 {
			time.Sleep(min(2*lastCommit, s.opts.MaxCommitDelay))
		}
		batch = s.gather(batch)
		lastBatch = len(batch)
		if s.opts.ReportDelay > 0 && allLazy(batch) && len(batch) < s.opts.MaxBatch {
			if delay == nil {
				delay = time.NewTimer(s.opts.ReportDelay)
			} else {
				delay.Reset(s.opts.ReportDelay)
			}
		wait:
			for len(batch) < s.opts.MaxBatch {
				select {
				case r := <-s.reqs:
					batch = append(batch, r)
					if !r.lazy {
						batch = s.gather(batch)
						break wait
					}
				case <-delay.C:
					break wait
				case <-s.closing:
					break wait
				}
			}
			delay.Stop()
		}
		start := time.Now()
		s.logAndForward(batch)
		lastCommit = time.Since(start)
	}
}

// gather adds the requests already queued to batch, up to MaxBatch.
func (s *BoltStore) gather(batch []*eventReq) []*eventReq {
	for len(batch) < s.opts.MaxBatch {
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

func allLazy(batch []*eventReq) bool {
	for _, r := range batch {
		if !r.lazy {
			return false
		}
	}
	return true
}

// drain commits what is still queued when the store closes.
func (s *BoltStore) drain(batch []*eventReq) {
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
			if len(batch) < s.opts.MaxBatch {
				continue
			}
		default:
		}
		if len(batch) == 0 {
			return
		}
		s.logAndForward(batch)
		batch = batch[:0]
	}
}

// logAndForward appends the events of batch to the hit log, answers them,
// and hands the whole batch, in order, to the applier. The relay's reports
// (fn writes) are answered by the applier once in bbolt. If the log fails,
// the applier commits the events too, and answers them then. If logging
// the batch panics, its hits not yet answered are answered with the panic
// and lost, counted by their handlers as a store failure (retrying a batch
// that one hit makes panic would panic again); the reports and the hits
// already logged still go to the applier.
func (s *BoltStore) logAndForward(batch []*eventReq) {
	reqs := slices.Clone(batch)
	clear(batch)
	var seq uint64
	if p := guard.Run(guard.Collector, s.panicLog, func() { s.logBatch(reqs, &seq) }); p != nil {
		err := fmt.Errorf("tracker: hit not logged: %w", p)
		reqs = slices.DeleteFunc(reqs, func(r *eventReq) bool {
			if r.fn != nil || r.logged {
				return false
			}
			r.done <- err
			return true
		})
	}
	s.applyCh <- applyBatch{reqs: reqs, logSeq: seq}
}

// logBatch appends the events of reqs to the hit log and answers them,
// setting *seq as soon as their sequences are given.
func (s *BoltStore) logBatch(reqs []*eventReq, seq *uint64) {
	if !slices.ContainsFunc(reqs, func(r *eventReq) bool { return r.fn == nil }) {
		return
	}
	for _, r := range reqs {
		if r.fn == nil {
			guard.Check(guard.Collector, r.ev.Message)
		}
	}
	start := time.Now()
	wasBroken := s.log.broken
	var err error
	if *seq, err = s.log.append(reqs); err != nil {
		// The applier commits these events and answers them. seq, if
		// not 0, is what they were given in the log: the commit records
		// it, so that a restart does not replay them too. A broken log
		// is reported once, not for every batch after it.
		if s.opts.Logger != nil && !wasBroken {
			msg := "tracker: append to the hit log; committing to the store instead"
			if s.log.broken {
				msg = "tracker: hit log failed; hits are committed to the store directly until trackrelay restarts"
			}
			s.opts.Logger.Error(msg, "err", err)
		}
		return
	}
	if m := s.opts.Metrics; m != nil {
		m.logSync.Observe(time.Since(start).Seconds())
	}
	s.logged.Store(*seq) // before the answers: a read after a response waits for it
	for _, r := range reqs {
		if r.fn == nil {
			r.logged = true
			r.done <- nil
		}
	}
}

// apply is the applier: it commits the collector's batches to bbolt, with
// the log sequence they reach. Logged events, already durable and
// answered, wait up to applyInterval for company, so that bbolt's two
// fdatasyncs per commit are paid some fifty times a second, not for every
// batch of hits: on a virtual disk, flushes are what a busy server waits
// for. Not much longer: a commit of 100 ms of hits kept a core busy for
// milliseconds, and the hits served meanwhile showed it in their p99.
// The relay's reports, events the log could not take, a read waiting for
// the hits answered before it, and a log segment waiting to be reused are
// committed at once. Logged events whose commit fails (the disk) are tried
// again with the next batch, after a pause; they are in the log meanwhile,
// and a restart replays them.
func (s *BoltStore) apply() {
	defer close(s.applierDone)
	var retry []*eventReq
	var retrySeq uint64
	pause := 50 * time.Millisecond
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	closed := false
	for {
		// A retry goes at once, with whatever else is waiting; otherwise
		// the first batch to arrive starts the round.
		reqs, seq, urgent := retry, retrySeq, true
		if len(reqs) == 0 {
			ab, ok := <-s.applyCh
			if !ok {
				return
			}
			reqs, seq, urgent = ab.reqs, ab.logSeq, !allLogged(ab.reqs)
		}
		if !urgent {
			timer.Reset(applyInterval)
		}
	more:
		for len(reqs) < applyMax {
			var ab applyBatch
			var ok bool
			if urgent {
				// Only what is already waiting.
				select {
				case ab, ok = <-s.applyCh:
				default:
					break more
				}
			} else {
				select {
				case ab, ok = <-s.applyCh:
				case <-s.kick:
					urgent = true
					continue
				case <-timer.C:
					urgent = true
					continue
				}
			}
			if !ok {
				closed = true
				break
			}
			reqs, seq = append(reqs, ab.reqs...), max(seq, ab.logSeq)
			urgent = urgent || !allLogged(ab.reqs)
		}
		timer.Stop()
		retry, _ = s.commitAndAnswer(guard.Applier, reqs, seq)
		retrySeq = 0
		if closed {
			// Whatever failed stays in the log; a restart replays it.
			return
		}
		if len(retry) == 0 {
			pause = 50 * time.Millisecond
			continue
		}
		retrySeq = seq
		select {
		case <-time.After(pause):
		case <-s.closing:
		}
		pause = min(2*pause, 5*time.Second)
	}
}

func allLogged(reqs []*eventReq) bool {
	for _, r := range reqs {
		if !r.logged {
			return false
		}
	}
	return true
}

// hurry asks the applier to commit what it holds now.
func (s *BoltStore) hurry() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// setApplied records that the log is in bbolt up to seq.
func (s *BoltStore) setApplied(seq uint64) {
	s.appliedMu.Lock()
	defer s.appliedMu.Unlock()
	if seq <= s.applied.Load() {
		return
	}
	s.applied.Store(seq)
	close(s.appliedCh)
	s.appliedCh = make(chan struct{})
}

// waitApplied hurries the applier and waits until the log is in bbolt up
// to seq, ctx ends, the applier stops, or limit passes.
func (s *BoltStore) waitApplied(ctx context.Context, seq uint64, limit time.Duration) {
	if s.applied.Load() >= seq {
		return
	}
	s.hurry()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		s.appliedMu.Lock()
		ch := s.appliedCh
		s.appliedMu.Unlock()
		if s.applied.Load() >= seq {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		case <-s.applierDone:
			return
		}
	}
}

// caughtUp waits, briefly, until every hit answered so far is in bbolt, so
// that a read shows each hit whose response has been sent.
func (s *BoltStore) caughtUp(ctx context.Context) {
	s.waitApplied(ctx, s.logged.Load(), 2*time.Second)
}

// openLog opens the hit log and commits to bbolt what it holds past
// applied, which a crash left there.
func (s *BoltStore) openLog(path string, applied uint64) error {
	l, recs, err := openHitLog(path, applied)
	if err != nil {
		return err
	}
	s.log = l
	l.free = func(seq uint64) bool {
		s.waitApplied(context.Background(), seq, time.Second)
		return s.applied.Load() >= seq
	}
	for len(recs) > 0 {
		n := min(len(recs), s.opts.MaxBatch)
		batch := make([]*eventReq, n)
		for i := range n {
			batch[i] = recs[i].req
			batch[i].logged = true // answered before the crash
			batch[i].seq = recs[i].seq
		}
		// An event whose own write fails is dropped, as it would have been
		// live, and one whose write panics is set aside; only a failing
		// disk stops the store from opening.
		if retry, err := s.commitAndAnswer(guard.Replay, batch, recs[n-1].seq); len(retry) > 0 {
			l.close()
			return fmt.Errorf("replay: %w", err)
		}
		recs = recs[n:]
	}
	if n := l.seq - applied; n > 0 && s.opts.Logger != nil {
		s.opts.Logger.Info("tracker: hits left in the hit log by a crash are now in the store", "hits", n)
	}
	s.applied.Store(l.seq)
	s.logged.Store(l.seq)
	return nil
}

// commitAndAnswer commits batch, up to log sequence seq, and answers its
// waiters. If one request's own write fails, it fails alone and the others
// are committed again without it; an event whose write panics is also set
// aside in the quarantine file first, so that the commit recording the
// log past it never comes before it is safe there. A failure of the
// commit itself (the disk) fails them all, and the logged events among
// them, already answered, are returned to be tried again, with the
// commit's error. component is guard.Applier or guard.Replay.
func (s *BoltStore) commitAndAnswer(component string, batch []*eventReq, seq uint64) (retry []*eventReq, err error) {
	rest := batch
	for len(rest) > 0 {
		failed, err := s.commitAs(component, rest, seq)
		if err != nil && failed >= 0 {
			r := rest[failed]
			rest = append(rest[:failed], rest[failed+1:]...)
			var p *guard.Panic
			if r.fn == nil && errors.As(err, &p) {
				s.quarantine(component, r, p)
				if r.logged {
					continue // answered when logged, and not lost
				}
			}
			s.answer(r, err)
			continue
		}
		if err != nil {
			for _, r := range rest {
				if r.logged {
					retry = append(retry, r)
				} else {
					s.answer(r, err)
				}
			}
			return retry, err
		}
		for _, r := range rest {
			if !r.logged {
				s.answer(r, nil)
			}
		}
		s.setApplied(seq)
		return nil, nil
	}
	// Every write failed alone. The log's sequence is recorded all the
	// same: reads must not wait for those events, nor a restart replay them.
	if seq > 0 {
		if _, err := s.commitAs(component, nil, seq); err == nil {
			s.setApplied(seq)
		}
	}
	return nil, nil
}

// answer reports the outcome of r's commit. A logged event was answered
// when it was logged; if its own write fails, it is lost: counted and
// logged.
func (s *BoltStore) answer(r *eventReq, err error) {
	if r.after != nil {
		r.after(err)
	}
	if !r.logged {
		r.done <- err
		return
	}
	if err == nil {
		return
	}
	if m := s.opts.Metrics; m != nil {
		m.eventsLost.Inc()
	}
	if s.opts.Logger != nil {
		s.opts.Logger.Error("tracker: logged event not stored", "msg", r.ev.Message, "err", err)
	}
}

// commit writes batch in one transaction, with the log sequence it reaches
// (0: none). When a request's own write fails, failed is its index in
// batch; otherwise -1.
func (s *BoltStore) commit(batch []*eventReq, logSeq uint64) (failed int, err error) {
	return s.commitAs(guard.Applier, batch, logSeq)
}

// commitAs is commit, recovering panics as component. A request whose
// write panics fails alone, with the *guard.Panic as its error (the
// transaction is rolled back); a panic outside any one request fails the
// commit, as a disk error would.
func (s *BoltStore) commitAs(component string, batch []*eventReq, logSeq uint64) (failed int, err error) {
	start := time.Now()
	failed = -1
	var ct *commitTx
	err = s.update(component, func(tx *bolt.Tx) error {
		if f := commitFault.Load(); f != nil {
			if err := (*f)(); err != nil {
				return err
			}
		}
		ct = &commitTx{s: s, tx: tx, rcpts: map[string]*storedRcpt{}, accts: map[string]string{}, erasedIDs: map[string]bool{}}
		for i, r := range batch {
			if err := ct.write(component, r); err != nil {
				failed = i
				return err
			}
		}
		if err := ct.flush(); err != nil {
			return err
		}
		if logSeq > 0 {
			v := binary.BigEndian.AppendUint64(nil, logSeq)
			if err := tx.Bucket(bucketMeta).Put(metaLogKey, v); err != nil {
				return err
			}
		}
		ct.size = tx.Size()
		return nil
	})
	s.commits.Add(1)
	if err == nil {
		s.preallocate(ct.size)
	}
	if m := s.opts.Metrics; m != nil {
		m.commitDuration.Observe(time.Since(start).Seconds())
		m.commitBatch.Observe(float64(len(batch)))
	}
	if err != nil {
		return failed, fmt.Errorf("tracker: commit %d writes: %w", len(batch), err)
	}
	if m := s.opts.Metrics; m != nil {
		if ct.overCap > 0 {
			m.eventsDropped.WithLabelValues("over_cap").Add(float64(ct.overCap))
		}
		if ct.erased > 0 {
			m.eventsDropped.WithLabelValues("erased").Add(float64(ct.erased))
		}
		for _, rc := range ct.reclassified {
			m.reclassified.WithLabelValues(rc).Inc()
		}
	}
	if ct.outboxAdded > 0 {
		s.outboxN.Add(int64(ct.outboxAdded))
		s.wakeOutbox()
	}
	return -1, nil
}

// appendFill is how full bbolt fills a page before it splits one, in the
// buckets whose keys mostly arrive in order: an account's feed (its keys
// only grow), and the messages, their links and their copies' deliveries
// (keyed by queue id, which sorts by time of acceptance). bbolt's default,
// half full, is right for random inserts; on appends it leaves every page
// half empty: twice the pages in the file and in each commit. Events are
// not appended this way (a commit adds to many messages' key ranges), and
// keep the default: at 90% they measured 55% full instead of 66%.
const appendFill = 0.9

// appendBucket returns the bucket name of a write transaction, set to fill
// its pages to appendFill (bbolt keeps the setting on the bucket for the
// transaction only). For the buckets written in key order.
func appendBucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = appendFill
	return b
}

// commitTx is the state of one group commit: the recipients' running state
// and the messages' accounts, read once per batch.
type commitTx struct {
	s            *BoltStore
	tx           *bolt.Tx
	rcpts        map[string]*storedRcpt // by string(recipient key)
	accts        map[string]string      // queue id -> account; "" unknown
	erasedIDs    map[string]bool        // queue id -> erased (Erase never runs in a batch)
	overCap      int
	erased       int
	outboxAdded  int
	reclassified []string // new classes, for metrics
	size         int64    // of the database after the commit
}

// update runs fn in a write transaction, turning a panic in it (the
// transaction is rolled back) into its error, a *guard.Panic.
func (s *BoltStore) update(component string, fn func(*bolt.Tx) error) (err error) {
	if p := guard.Run(component, s.panicLog, func() { err = s.db.Update(fn) }); p != nil {
		return p
	}
	return err
}

// write adds one request to the transaction: an event, or the relay's
// write. A panic is its error, a *guard.Panic, and the caller rolls the
// transaction back. guard.Check lets a test make an event's write panic.
func (c *commitTx) write(component string, r *eventReq) (err error) {
	if p := guard.Run(component, c.s.panicLog, func() {
		if r.fn != nil {
			err = r.fn(c.tx)
			clear(c.accts) // the write may have put a message
			return
		}
		guard.Check(component, r.ev.Message)
		err = c.add(r)
	}); p != nil {
		return p
	}
	return err
}

func (c *commitTx) account(id string) (string, error) {
	if a, ok := c.accts[id]; ok {
		return a, nil
	}
	if e, ok := c.s.cache.get(id); ok && e.msg != nil {
		c.accts[id] = e.msg.Account
		return e.msg.Account, nil
	}
	a, _, err := accountOf(c.tx, id)
	if err != nil {
		return "", err
	}
	c.accts[id] = a
	return a, nil
}

func (c *commitTx) rcpt(key []byte) (*storedRcpt, error) {
	if r, ok := c.rcpts[string(key)]; ok {
		return r, nil
	}
	r := &storedRcpt{}
	if v := c.tx.Bucket(bucketRecipients).Get(key); v != nil {
		if err := json.Unmarshal(v, r); err != nil {
			return nil, err
		}
	}
	c.rcpts[string(key)] = r
	return r, nil
}

func (c *commitTx) flush() error {
	b := c.tx.Bucket(bucketRecipients)
	for k, r := range c.rcpts {
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

func (c *commitTx) add(r *eventReq) error {
	// A copy: the evidence added below must not stay on the request if this
	// transaction is rolled back and the event added again.
	ev := r.ev
	e := &ev
	erased, ok := c.erasedIDs[e.Message]
	if !ok {
		erased = isErased(c.tx, e.Message)
		c.erasedIDs[e.Message] = erased
	}
	if erased {
		c.erased++
		return nil
	}
	acct, err := c.account(e.Message)
	if err != nil {
		return err
	}
	if e.Recipient < 0 || int64(e.Recipient) > int64(^uint32(0)) {
		return fmt.Errorf("invalid recipient %d", e.Recipient)
	}
	rkey := deliveryKey(e.Message, e.Recipient)
	rs, err := c.rcpt(rkey)
	if err != nil {
		return err
	}
	burstable := e.Type == EventClick && e.Class != classify.Self
	var history []windowClick
	if burstable {
		if history, err = c.clickWindow(rkey, rs, e.At); err != nil {
			return err
		}
	}
	changed, joined := sequenceEvidence(rs, e, history)
	kept := rs.Kept < c.s.opts.MaxEventsPerRecipient
	var seq uint64
	if kept {
		value := r.value
		if changed {
			if value, err = encodeEvent(&storedEvent{
				Type: e.Type, At: e.At, Recipient: e.Recipient, Link: e.Link, URL: e.URL,
				IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Country: e.Country, City: e.City,
				Class: e.Class, Reasons: e.Reasons,
			}); err != nil {
				return err
			}
		}
		events := c.tx.Bucket(bucketEvents)
		if seq, err = events.NextSequence(); err != nil {
			return err
		}
		if err := events.Put(eventKey(e.Message, seq), value); err != nil {
			return err
		}
		rs.Kept++
		if acct != "" {
			if _, err := c.feed(acct, storedFeedEntry{Kind: e.Type, Message: e.Message, Recipient: e.Recipient, Event: seq, At: e.At}); err != nil {
				return err
			}
		}
	} else {
		c.overCap++
		if rs.Tally == nil {
			rs.Tally = &tally{}
		}
		rs.Tally.add(e.Type, e.Class, e.Link, e.At)
	}
	// Before keepClick, which may reorder rs.OverCap.
	for _, w := range joined {
		if err := c.reclassify(acct, e, rs, w); err != nil {
			return err
		}
	}
	if burstable {
		return c.keepClick(rkey, rs, e, seq, kept)
	}
	return nil
}

// reclassify makes w, a click of e's copy, part of the burst e completes:
// its class becomes scanner, with the reason click-burst. A click kept in
// detail gets a reclassified entry in the feed when its class changes; one
// past the cap leaves the copy's counts.
func (c *commitTx) reclassify(acct string, e *Event, rs *storedRcpt, w windowClick) error {
	if w.key == nil {
		oc := &rs.OverCap[w.over]
		if t := rs.Tally; t != nil && classify.Counted(oc.Class) {
			t.Clicks = max(t.Clicks-1, 0)
			if t.Links[oc.Link] > 0 {
				t.Links[oc.Link]--
			}
		}
		oc.Class, oc.Burst = classify.Scanner, true
		return nil
	}
	if err := c.tx.Bucket(bucketClicks).Put(w.key, clickValue(w.Link, true)); err != nil {
		return err
	}
	events := c.tx.Bucket(bucketEvents)
	key := eventKey(e.Message, w.seq)
	v := events.Get(key)
	if v == nil {
		return nil // expired
	}
	var se storedEvent
	if err := json.Unmarshal(v, &se); err != nil {
		return err
	}
	prev := se.Class
	se.Class, se.Reasons = classify.InBurst(se.Reasons)
	nv, err := encodeEvent(&se)
	if err != nil {
		return err
	}
	if err := events.Put(key, nv); err != nil {
		return err
	}
	if prev == se.Class || acct == "" {
		return nil
	}
	c.reclassified = append(c.reclassified, se.Class)
	_, err = c.feed(acct, storedFeedEntry{
		Kind: feedKindRecls, Message: e.Message, Recipient: e.Recipient, Event: w.seq, At: e.At,
		Class: se.Class, Prev: prev, Reasons: se.Reasons,
	})
	return err
}

// sequenceEvidence adds to e what the copy's other events show
// (classify.InSequence) and returns whether e changed and which clicks of
// history join a burst with it, not being part of one yet. A counted open
// marks the copy as opened, for the clicks after it.
func sequenceEvidence(rs *storedRcpt, e *Event, history []windowClick) (bool, []windowClick) {
	if e.Type == EventOpen {
		if classify.Counted(e.Class) {
			rs.Opened = true
		}
		return false, nil
	}
	if e.Type != EventClick || e.Class == classify.Self {
		return false, nil
	}
	clicks := make([]classify.Click, len(history))
	for i, w := range history {
		clicks[i] = w.Click
	}
	v, in := classify.InSequence(classify.Verdict{Class: e.Class, Client: e.Client, Reasons: e.Reasons},
		classify.Click{Link: e.Link, At: e.At}, rs.Opened, clicks)
	e.Class, e.Reasons = v.Class, v.Reasons
	var joined []windowClick
	for _, i := range in {
		if !history[i].burst {
			joined = append(joined, history[i])
		}
	}
	return true, joined
}

// putFeed appends an entry to the account's feed, and to the webhook outbox
// when the account has a webhook. It returns the entry's sequence.
func (s *BoltStore) putFeed(tx *bolt.Tx, acct string, fe storedFeedEntry) (uint64, error) {
	feed := appendBucket(tx, bucketFeed)
	seq, err := feed.NextSequence()
	if err != nil {
		return 0, err
	}
	v, err := encodeFeedEntry(&fe)
	if err != nil {
		return 0, err
	}
	if err := feed.Put(feedKey(acct, seq), v); err != nil {
		return 0, err
	}
	if s.webhooks[acct] {
		if err := putOutbox(tx, time.Now(), seq, storedOutbox{Account: acct, First: time.Now().Unix()}); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

func (c *commitTx) feed(acct string, fe storedFeedEntry) (uint64, error) {
	seq, err := c.s.putFeed(c.tx, acct, fe)
	if err == nil && c.s.webhooks[acct] {
		c.outboxAdded++
	}
	return seq, err
}

func outboxKey(due time.Time, seq uint64) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(due.UnixNano()))
	return binary.BigEndian.AppendUint64(k, seq)
}

func putOutbox(tx *bolt.Tx, due time.Time, seq uint64, o storedOutbox) error {
	v, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketOutbox).Put(outboxKey(due, seq), v)
}

func (s *BoltStore) wakeOutbox() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
