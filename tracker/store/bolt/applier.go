package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

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
func (s *Store) apply() {
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
func (s *Store) hurry() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// setApplied records that the log is in bbolt up to seq.
func (s *Store) setApplied(seq uint64) {
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
func (s *Store) waitApplied(ctx context.Context, seq uint64, limit time.Duration) {
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
func (s *Store) caughtUp(ctx context.Context) {
	s.waitApplied(ctx, s.logged.Load(), 2*time.Second)
}

// openLog opens the hit log and commits to bbolt what it holds past
// applied, which a crash left there.
func (s *Store) openLog(path string, applied uint64) error {
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
func (s *Store) commitAndAnswer(component string, batch []*eventReq, seq uint64) (retry []*eventReq, err error) {
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
func (s *Store) answer(r *eventReq, err error) {
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
	s.opts.Metrics.Lost()
	if s.opts.Logger != nil {
		s.opts.Logger.Error("tracker: logged event not stored", "msg", r.ev.Message, "err", err)
	}
}

// commit writes batch in one transaction, with the log sequence it reaches
// (0: none). When a request's own write fails, failed is its index in
// batch; otherwise -1.
func (s *Store) commit(batch []*eventReq, logSeq uint64) (failed int, err error) {
	return s.commitAs(guard.Applier, batch, logSeq)
}

// commitAs is commit, recovering panics as component. A request whose
// write panics fails alone, with the *guard.Panic as its error (the
// transaction is rolled back); a panic outside any one request fails the
// commit, as a disk error would.
func (s *Store) commitAs(component string, batch []*eventReq, logSeq uint64) (failed int, err error) {
	start := time.Now()
	failed = -1
	var ct *commitTx
	err = s.update(component, func(tx *bbolt.Tx) error {
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
	s.opts.Metrics.Committed(time.Since(start), len(batch))
	if err != nil {
		return failed, fmt.Errorf("tracker: commit %d writes: %w", len(batch), err)
	}
	s.opts.Metrics.Unlisted(store.UnlistedOverCap, ct.overCap)
	s.opts.Metrics.Unlisted(store.UnlistedErased, ct.erased)
	for _, rc := range ct.reclassified {
		s.opts.Metrics.Reclassified(rc)
	}
	if ct.outboxAdded > 0 {
		s.outboxN.Add(int64(ct.outboxAdded))
		s.wakeOutbox()
	}
	return -1, nil
}
