package postgres

import (
	"errors"
	"slices"
	"sync"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// A batch of events holds its messages' advisory locks until it commits,
// so that what it reads of a message (its history, a copy's count of kept
// events, its record, its erasure) cannot change under its classification,
// on any node. Taken exclusively, they made every batch of a busy message
// wait for the one before, on every node (docs/performance.md). Most hits
// are plain opens, which neither read nor change what another plain open
// reads: the sequence rules read clicks, honeypot hits and gateways' pixel
// fetches, and only those reclassify earlier events. So a message's lock
// is taken shared when the batch holds only plain opens of it and its
// copies' caps cannot be passed, and exclusive otherwise:
//   - a click, a honeypot hit, a gateway's pixel fetch or a hit classified
//     without its message takes it exclusive: it waits for the plain opens
//     in flight and sees them, and they wait for it;
//   - a copy's kept events (tracking.max_events_per_recipient) are counted
//     exactly only under an exclusive lock: two shared batches would each
//     count the other out and together pass the cap. Under a shared lock a
//     copy's events are kept only while the batch's own values of
//     events_seq are under the cap (every kept event has its own value, so
//     no copy can hold more), or when the copy is already at the cap (its
//     count only grows: retention moves events into tallies, which count).
//
// Records, deliveries and erasures take their message's lock exclusive, as
// before. The mode is predicted before the locks are taken; when the reads
// show a copy that a shared lock does not cover (sharedSafe), the batch is
// rolled back and committed again with every lock exclusive. Replays (a hit
// the shipper commits while its first commit is in flight) are stored once
// even in two shared batches: the events' unique hit id makes the second
// insert wait and do nothing, and a feed entry is written only with the
// event its batch inserted (writeEvents).

// errNeedsExclusive: the batch read a copy under a shared lock that the
// lock does not cover.
var errNeedsExclusive = errors.New("postgres store: batch needs exclusive locks")

// lockModesSQL takes the advisory lock of each key of $1, exclusive where
// $2 is true and shared elsewhere, in the order of $1 (sorted, so that no
// two transactions wait for each other's locks).
const lockModesSQL = `SELECT CASE WHEN x THEN pg_advisory_xact_lock(k)::text ELSE pg_advisory_xact_lock_shared(k)::text END
	FROM unnest($1::bigint[], $2::bool[]) WITH ORDINALITY u(k, x, o) ORDER BY o`

// atCapMax bounds the copies a node remembers at the cap; past it the
// memory starts again (a forgotten copy is counted once more).
const atCapMax = 1 << 16

// locking is a batch's locks: the keys in order, whether each is
// exclusive, and whether each message's is.
type locking struct {
	keys      []int64
	modes     []bool
	exclusive map[string]bool
}

// lockModes predicts the lock each message of batch needs: exclusive for
// all when exclusive is set.
func (s *Store) lockModes(batch []*eventReq, copies map[copyKey]*copyState, exclusive bool) locking {
	l := locking{exclusive: map[string]bool{}}
	for _, r := range batch {
		e := &r.ev
		ex := exclusive || e.Type != store.EventOpen || e.WithoutMessage ||
			classify.FromHoneypot(e.Reasons) || classify.FromGateway(e.Reasons)
		l.exclusive[e.Message] = l.exclusive[e.Message] || ex
	}
	seq := s.seqHint.Load()
	for k, st := range copies {
		if !l.exclusive[k.message] && !st.atCap && seq+1+int64(len(batch)) > int64(s.opts.MaxEventsPerRecipient) {
			l.exclusive[k.message] = true
		}
	}
	byKey := map[int64]bool{}
	for m, ex := range l.exclusive {
		k := lockKey(m)
		byKey[k] = byKey[k] || ex
	}
	for k := range byKey {
		l.keys = append(l.keys, k)
	}
	slices.Sort(l.keys)
	for _, k := range l.keys {
		l.modes = append(l.modes, byKey[k])
	}
	return l
}

// sharedSafe reports whether the shared locks of l cover what the batch
// read: each copy of a message locked shared is at the cap, or its kept
// events were not counted and every value of events_seq the batch took
// (seqs) is under the cap. It remembers the copies found at the cap.
func (s *Store) sharedSafe(l locking, copies map[copyKey]*copyState, seqs []int64) bool {
	limit := s.opts.MaxEventsPerRecipient
	top := int64(-1)
	for _, q := range seqs {
		top = max(top, q)
	}
	ok := true
	for k, st := range copies {
		if !st.atCap && !st.uncounted && st.kept >= limit {
			s.noteAtCap(k)
		}
		if l.exclusive[k.message] {
			continue
		}
		if st.uncounted && top+1 > int64(limit) || !st.uncounted && st.kept < limit {
			ok = false
		}
	}
	return ok
}

// capMemory is the copies a node saw at the cap.
type capMemory struct {
	mu     sync.Mutex
	copies map[copyKey]struct{}
}

func (s *Store) knownAtCap(k copyKey) bool {
	s.atCap.mu.Lock()
	defer s.atCap.mu.Unlock()
	_, ok := s.atCap.copies[k]
	return ok
}

func (s *Store) noteAtCap(k copyKey) {
	s.atCap.mu.Lock()
	defer s.atCap.mu.Unlock()
	if s.atCap.copies == nil || len(s.atCap.copies) >= atCapMax {
		s.atCap.copies = map[copyKey]struct{}{}
	}
	s.atCap.copies[k] = struct{}{}
}

// noteSeqs remembers the highest value of events_seq seen, for lockModes'
// prediction.
func (s *Store) noteSeqs(seqs []int64) {
	for _, q := range seqs {
		for {
			old := s.seqHint.Load()
			if q <= old || s.seqHint.CompareAndSwap(old, q) {
				break
			}
		}
	}
}
