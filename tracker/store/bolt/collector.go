package bolt

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

type eventReq struct {
	ev    store.Event
	value []byte                // JSON storedEvent as classified by the handler
	fn    func(*bbolt.Tx) error // instead of an event: any other write, run in order
	after func(err error)       // run by the collector once fn's commit is over
	lazy  bool                  // may wait up to ReportDelay for company
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

// AddEvent implements store.Store: it hands e to the collector and waits until the
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
func (s *Store) AddEvent(ctx context.Context, e store.Event) error {
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
func (s *Store) write(ctx context.Context, fn func(*bbolt.Tx) error, after func(error)) error {
	return s.submit(ctx, &eventReq{fn: fn, after: after, lazy: true, done: make(chan error, 1)})
}

func (s *Store) submit(ctx context.Context, r *eventReq) error {
	select {
	case <-s.closing:
		return store.ErrClosed
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
			return store.ErrClosed
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
			return store.ErrClosed
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
func (s *Store) collect() {
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
func (s *Store) gather(batch []*eventReq) []*eventReq {
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
func (s *Store) drain(batch []*eventReq) {
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
func (s *Store) logAndForward(batch []*eventReq) {
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
func (s *Store) logBatch(reqs []*eventReq, seq *uint64) {
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
	s.opts.Metrics.LogSynced(time.Since(start))
	s.logged.Store(*seq) // before the answers: a read after a response waits for it
	for _, r := range reqs {
		if r.fn == nil {
			r.logged = true
			r.done <- nil
		}
	}
}
