package relay

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/internal/durable"
	"github.com/trackrelay/trackrelay/internal/guard"
)

// groupCommitter runs the spool's writes in shared transactions: a write
// that arrives while the store is idle commits at once, and the writes that
// arrive during a commit (its fsync, mostly) all go into the next one. No
// timer, so a lone SMTP session never waits for company, and a busy server
// pays one fsync for many messages. bbolt's own Batch waits a fixed delay
// before every commit.
//
// The record of a new message file needs the file's directory entry to be
// durable first: a group that holds such records starts with one fsync of
// dir, which covers every file created before it.
//
// A lazy write (the outcome of a delivery attempt) does not start a commit
// of its own at once: it waits up to lazyDelay for a write that does (the
// next accepted message, usually). Each commit is two fdatasyncs of
// queue.db, and on a busy relay the outcomes then cost none of their own;
// the delivery worker that waits for one is not on any client's path.
//
// A panic in a commit fails that group's writes with errCommitPanic and
// the loop goes on with the next group: the writers learn that nothing of
// theirs was written (a client gets a 451), and one bad write does not
// stop the spool.
type groupCommitter struct {
	db        *bolt.DB
	dir       string
	lazyDelay time.Duration // 0: lazy writes commit at once
	log       *slog.Logger  // nil: slog's default

	mu      sync.Mutex
	pending []*commitReq
	running bool
	timer   *time.Timer // will start the loop for waiting lazy writes
}

type commitReq struct {
	item    string // the queue id written, for guard.Check
	fn      func(*bolt.Tx) error
	needDir bool // a new file in dir: sync the directory before the record
	err     error
	done    chan struct{}
	ended   bool // done is closed; set and read by the loop only
}

// end hands the write its result, once.
func (r *commitReq) end(err error) {
	if r.ended {
		return
	}
	r.ended = true
	r.err = err
	close(r.done)
}

// run applies the write in tx.
func (r *commitReq) run(tx *bolt.Tx) error {
	guard.Check(guard.GroupCommit, r.item)
	return r.fn(tx)
}

// errCommitPanic is the result of the writes still unanswered when their
// group's commit panicked: none of them was written.
var errCommitPanic = errors.New("spool: the commit failed on an internal error (see the log); nothing was written")

// maxGroup bounds one transaction, so that one failing write costs a
// bounded number of retries.
const maxGroup = 256

// update runs fn, a write of the record of item, in a shared read-write
// transaction and returns once that transaction is durable. fn may run
// twice (alone, after a shared transaction failed), so it must be
// idempotent.
func (g *groupCommitter) update(item string, fn func(*bolt.Tx) error) error {
	return g.submit(&commitReq{item: item, fn: fn, done: make(chan struct{})}, false)
}

// updateLazy is update for a write that may wait up to lazyDelay for
// company before its commit starts.
func (g *groupCommitter) updateLazy(item string, fn func(*bolt.Tx) error) error {
	return g.submit(&commitReq{item: item, fn: fn, done: make(chan struct{})}, true)
}

// updateNewFile is update for the record of a file just created (and
// fsynced) in the committer's directory.
func (g *groupCommitter) updateNewFile(item string, fn func(*bolt.Tx) error) error {
	return g.submit(&commitReq{item: item, fn: fn, needDir: true, done: make(chan struct{})}, false)
}

func (g *groupCommitter) submit(r *commitReq, lazy bool) error {
	g.mu.Lock()
	g.pending = append(g.pending, r)
	switch {
	case g.running:
	case lazy && g.lazyDelay > 0:
		if g.timer == nil {
			g.timer = time.AfterFunc(g.lazyDelay, g.timeout)
		}
	default:
		if g.timer != nil {
			g.timer.Stop()
			g.timer = nil
		}
		g.running = true
		go g.loop()
	}
	g.mu.Unlock()
	<-r.done
	return r.err
}

// timeout starts the loop for lazy writes that found no company. If a
// commit took them meanwhile, there is nothing left to do (and the timer
// it clears may be a newer one: then the loop merely starts early).
func (g *groupCommitter) timeout() {
	g.mu.Lock()
	g.timer = nil
	if !g.running && len(g.pending) > 0 {
		g.running = true
		go g.loop()
	}
	g.mu.Unlock()
}

func (g *groupCommitter) loop() {
	for {
		g.mu.Lock()
		batch := g.pending
		if len(batch) > maxGroup {
			batch = batch[:maxGroup]
		}
		g.pending = g.pending[len(batch):]
		if len(batch) == 0 {
			g.running = false
			g.pending = nil
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		if p := guard.Run(guard.GroupCommit, g.log, func() { g.commit(g.syncDir(batch)) }); p != nil {
			// bbolt rolled the transaction back: what was not yet
			// answered was not written.
			for _, r := range batch {
				r.end(errCommitPanic)
			}
		}
	}
}

// syncDir fsyncs the directory if a write of batch needs it, and returns
// the writes that may go on: on failure, those needing it fail.
func (g *groupCommitter) syncDir(batch []*commitReq) []*commitReq {
	need := false
	for _, r := range batch {
		need = need || r.needDir
	}
	if !need {
		return batch
	}
	err := durable.SyncDir(g.dir)
	if err == nil {
		return batch
	}
	rest := batch[:0:0]
	for _, r := range batch {
		if r.needDir {
			r.end(err)
		} else {
			rest = append(rest, r)
		}
	}
	return rest
}

func (g *groupCommitter) commit(batch []*commitReq) {
	if len(batch) == 0 {
		return
	}
	err := g.db.Update(func(tx *bolt.Tx) error {
		for _, r := range batch {
			if err := r.run(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		// One write failed, or the commit did: each write is tried alone,
		// so that one bad write does not fail the others.
		for _, r := range batch {
			r.end(g.db.Update(r.run))
		}
		return
	}
	for _, r := range batch {
		r.end(err)
	}
}
