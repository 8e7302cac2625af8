package postgres

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
	"github.com/trackrelay/trackrelay/tracker/token"
)

const lockTestIP = "203.0.113.7"

func plainOpen(id string, at time.Time) store.Event {
	return store.Event{Type: store.EventOpen, Message: id, Link: -1, IP: lockTestIP, UserAgent: "Mozilla/5.0",
		Class: classify.Human, Reasons: []string{classify.ReasonNoMachineSignals}, At: at}
}

// addAsync runs s.AddEvent(e) and returns its answer's channel.
func addAsync(s *Store, e store.Event) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.AddEvent(context.Background(), e) }()
	return done
}

// waitingFor reports whether done stays silent for d.
func waitingFor(done <-chan error, d time.Duration) bool {
	select {
	case <-done:
		return false
	case <-time.After(d):
		return true
	}
}

// Plain opens of one message commit side by side: while one node's batch
// of them is held in its transaction, another node's commits.
func TestSharedLocksPlainOpens(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := testStore(t, dsn, Options{})
	b := testStore(t, dsn, Options{})
	putMessage(t, a, "L1", 1)
	at := testAccepted.Add(time.Hour)
	reached, release := holdCommits(a)
	defer release()
	held := addAsync(a, plainOpen("L1", at))
	<-reached
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.AddEvent(ctx, plainOpen("L1", at.Add(time.Second))); err != nil {
		t.Fatalf("a plain open waited for another batch of plain opens: %v", err)
	}
	release()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	v, err := b.Lookup(context.Background(), "alice", "L1")
	if err != nil || len(v.Events) != 2 || v.Recipients[0].Opens != 2 {
		t.Fatalf("view %+v, %v; want 2 opens", v, err)
	}
}

// A honeypot hit waits for the plain opens in flight and sees them: the
// open of its address, held in another node's transaction when the hit
// arrives, is reclassified once both commit.
func TestHoneypotWaitsForSharedOpens(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := testStore(t, dsn, Options{})
	b := testStore(t, dsn, Options{})
	putMessage(t, a, "L2", 2)
	at := testAccepted.Add(time.Hour)
	reached, release := holdCommits(a)
	defer release()
	held := addAsync(a, plainOpen("L2", at))
	<-reached
	v := classify.OnHoneypot(classify.Verdict{Class: classify.Human, Reasons: []string{classify.ReasonNoMachineSignals}})
	hp := store.Event{Type: store.EventClick, Message: "L2", Link: token.HoneypotLink, IP: lockTestIP,
		UserAgent: "Mozilla/5.0", Class: v.Class, Reasons: v.Reasons, At: at.Add(3 * time.Second)}
	done := addAsync(b, hp)
	if !waitingFor(done, 300*time.Millisecond) {
		t.Fatal("a honeypot hit committed while an open of its message was in flight")
	}
	release()
	for _, c := range []<-chan error{held, done} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	view, err := b.Lookup(context.Background(), "alice", "L2")
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(view.Events, func(e store.EventView) bool { return e.Type == store.EventOpen })
	if i < 0 || view.Events[i].Class != classify.Scanner || !slices.Contains(view.Events[i].Reasons, classify.ReasonNearHoneypot) {
		t.Fatalf("the open: %+v, want it reclassified near the honeypot", view.Events)
	}
}

// The cap holds when two nodes record one copy at once: a copy under the
// cap is counted under an exclusive lock, also by a node whose guess said
// shared (it learns the batch needs exclusive locks and commits again).
func TestCapUnderConcurrentBatches(t *testing.T) {
	dsn := pgtest.DSN(t)
	const limit = 5
	a := testStore(t, dsn, Options{MaxEventsPerRecipient: limit})
	putMessage(t, a, "L3", 1)
	putMessage(t, a, "L4", 1)
	at := testAccepted.Add(time.Hour)
	ctx := context.Background()
	// events_seq past the cap, so that it no longer bounds a copy's count.
	for i := range 2 * limit {
		if err := a.AddEvent(ctx, plainOpen("L4", at.Add(time.Duration(i)*time.Millisecond))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range limit - 2 {
		if err := a.AddEvent(ctx, plainOpen("L3", at.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	b := testStore(t, dsn, Options{MaxEventsPerRecipient: limit}) // it has seen no value of events_seq
	reached, release := holdCommits(a)
	defer release()
	held := addAsync(a, plainOpen("L3", at.Add(time.Minute)))
	<-reached
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := range 3 {
		wg.Go(func() { errs <- b.AddEvent(ctx, plainOpen("L3", at.Add(time.Minute+time.Duration(i+1)*time.Second))) })
	}
	time.Sleep(300 * time.Millisecond)
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if b.exclusiveRetries.Load() == 0 {
		t.Error("node b's batches never learned that they needed exclusive locks")
	}
	v, err := a.Lookup(ctx, "alice", "L3")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != limit || v.Recipients[0].EventsTotal != limit+2 || v.Recipients[0].Opens != limit+2 {
		t.Fatalf("%d events in detail of %d (opens %d), want %d of %d",
			len(v.Events), v.Recipients[0].EventsTotal, v.Recipients[0].Opens, limit, limit+2)
	}
	// Once a node has read a copy at the cap, its plain opens of the copy
	// take the lock shared again.
	for i, s := range []*Store{a, b} {
		if err := s.AddEvent(ctx, plainOpen("L3", at.Add(90*time.Second+time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	reached, release = holdCommits(a)
	defer release()
	held = addAsync(a, plainOpen("L3", at.Add(2*time.Minute)))
	<-reached
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.AddEvent(tctx, plainOpen("L3", at.Add(3*time.Minute))); err != nil {
		t.Fatalf("an open of a copy at the cap waited for another: %v", err)
	}
	release()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}

// Two batches that hold the same hit (a replay) under shared locks store
// it once and list it once.
func TestReplayInConcurrentBatches(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := testStore(t, dsn, Options{})
	b := testStore(t, dsn, Options{})
	putMessage(t, a, "L5", 1)
	ctx := context.Background()
	hit := newUUID()
	e := plainOpen("L5", testAccepted.Add(time.Hour))
	reached, release := holdCommits(a)
	defer release()
	first := make(chan error, 1)
	go func() { first <- a.commitEvents(ctx, []*eventReq{{ev: e, hit: hit}}) }()
	<-reached
	second := make(chan error, 1)
	go func() { second <- b.commitEvents(ctx, []*eventReq{{ev: e, hit: hit}}) }()
	if !waitingFor(second, 300*time.Millisecond) {
		t.Fatal("the replay committed while the hit's first batch was in flight")
	}
	release()
	for _, c := range []<-chan error{first, second} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	v, err := a.Lookup(ctx, "alice", "L5")
	if err != nil || len(v.Events) != 1 {
		t.Fatalf("view %+v, %v; want one event", v, err)
	}
	p, err := a.Feed(ctx, "alice", "", 100)
	if err != nil || len(p.Events) != 1 {
		t.Fatalf("feed %+v, %v; want one entry", p, err)
	}
	var rows int
	if err := a.pool.QueryRow(ctx, "SELECT count(*) FROM feed WHERE message = 'L5'").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("%d rows of feed, %v; want 1", rows, err)
	}
}

// Each message's hits go to one committer: while a batch of clicks of one
// message is held in its transaction (its lock exclusive), a click of a
// message of the other committer commits, though another click of the
// first waits behind the batch. With one queue for both committers, the
// free one would take both clicks into one batch and wait too.
func TestCommittersByMessage(t *testing.T) {
	dsn := pgtest.DSN(t)
	s := testStore(t, dsn, Options{Committers: 2})
	ids := map[int]string{}
	for i := 0; len(ids) < 2; i++ {
		if i == 26 {
			t.Fatal("26 messages, all on one committer")
		}
		id := "P" + string(rune('a'+i))
		if _, ok := ids[s.committerOf(id)]; !ok {
			ids[s.committerOf(id)] = id
			putMessage(t, s, id, 2)
		}
	}
	a, b := ids[0], ids[1]
	click := func(id string, at time.Time) store.Event {
		return store.Event{Type: store.EventClick, Message: id, Link: 0, IP: lockTestIP, UserAgent: "Mozilla/5.0",
			Class: classify.Human, Reasons: []string{classify.ReasonNoMachineSignals}, At: at}
	}
	at := testAccepted.Add(time.Hour)
	// Only the first batch is held (holdCommits' sync.Once would hold the
	// other committer's too, until the first's release).
	var first atomic.Bool
	reachedC, rel := make(chan struct{}), make(chan struct{})
	f := func() {
		if first.CompareAndSwap(false, true) {
			close(reachedC)
			<-rel
		}
	}
	s.beforeCommit.Store(&f)
	release := sync.OnceFunc(func() { close(rel) })
	defer release()
	reached := (<-chan struct{})(reachedC)
	held := addAsync(s, click(a, at))
	<-reached
	second := addAsync(s, click(a, at.Add(time.Minute)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.AddEvent(ctx, click(b, at.Add(2*time.Minute))); err != nil {
		t.Fatalf("a click of %s waited for the batch of %s: %v", b, a, err)
	}
	if !waitingFor(second, 100*time.Millisecond) {
		t.Fatalf("a second click of %s committed while the first was held", a)
	}
	release()
	for _, c := range []<-chan error{held, second} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
}
