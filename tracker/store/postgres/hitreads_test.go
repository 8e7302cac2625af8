package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

// One group of reads answers each read as its own query would: a message,
// the same one twice, one erased, one unknown; a delivered copy, one not
// delivered yet, one of an unknown message.
func TestReadGroupAnswers(t *testing.T) {
	s := testStore(t, pgtest.DSN(t), Options{})
	ctx := context.Background()
	putMessage(t, s, "R1", 1)
	putMessage(t, s, "R2", 1)
	putMessage(t, s, "R3", 1)
	at := testAccepted.Add(time.Minute)
	if err := s.SetDelivery(ctx, "R1", 0, store.Delivery{Status: delivery.Delivered, Attempts: 1, UpdatedAt: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDelivery(ctx, "R2", 0, store.Delivery{Status: delivery.Deferred, Attempts: 1, UpdatedAt: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.Erase(ctx, "alice", "R3"); err != nil {
		t.Fatal(err)
	}
	group := []*readReq{
		{message: "R1", recipient: -1}, {message: "R2", recipient: -1}, {message: "R1", recipient: -1},
		{message: "R3", recipient: -1}, {message: "nope", recipient: -1},
		{message: "R1", recipient: 0}, {message: "R2", recipient: 0}, {message: "nope", recipient: 0},
		{message: "R1", recipient: 1},
	}
	for _, r := range group {
		r.done = make(chan readRes, 1)
	}
	s.readGroup(group)
	res := make([]readRes, len(group))
	for i, r := range group {
		res[i] = <-r.done
	}
	for _, i := range []int{0, 1, 2} {
		if res[i].err != nil || res[i].m == nil || res[i].m.ID != group[i].message || res[i].m.Account != "alice" ||
			len(res[i].m.Recipients) != 1 || !res[i].m.Recipients[0].Tracked || res[i].m.SubmitIP != "192.0.2.10" {
			t.Errorf("read %d (%s): %+v, %v", i, group[i].message, res[i].m, res[i].err)
		}
	}
	if res[0].m == res[2].m {
		t.Error("two reads of one message share one *store.Message")
	}
	if !errors.Is(res[3].err, store.ErrErased) {
		t.Errorf("erased message: %v", res[3].err)
	}
	if !errors.Is(res[4].err, store.ErrNotFound) {
		t.Errorf("unknown message: %v", res[4].err)
	}
	if res[5].err != nil || !res[5].at.Equal(at) {
		t.Errorf("delivered copy: %v, %v", res[5].at, res[5].err)
	}
	for _, i := range []int{6, 7, 8} {
		if res[i].err != nil || !res[i].at.IsZero() {
			t.Errorf("read %d, copy not delivered: %v, %v", i, res[i].at, res[i].err)
		}
	}
	// Through the methods: a copy not delivered is ErrNotFound.
	if _, err := s.Delivery(ctx, "R2", 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delivery of a deferred copy: %v", err)
	}
	if d, err := s.Delivery(ctx, "R1", 0); err != nil || d.Status != delivery.Delivered || !d.UpdatedAt.Equal(at) {
		t.Errorf("Delivery of a delivered copy: %+v, %v", d, err)
	}
}

// Reads that wait while the readers are busy are answered together: 200
// concurrent reads, the readers held on their first groups until the rest
// have queued, take a handful of round trips, and each gets its own answer.
func TestReadsGrouped(t *testing.T) {
	s := testStore(t, pgtest.DSN(t), Options{})
	const n = 200
	for i := range 10 {
		putMessage(t, s, fmt.Sprintf("G%d", i), 1)
	}
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	defer open()
	var groups, held atomic.Int32
	hook := func(size int) {
		if groups.Add(1) <= hitReaders {
			held.Add(int32(size))
			<-release
		}
	}
	s.beforeReadGroup.Store(&hook)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("G%d", i%12) // G10 and G11 are unknown
			m, err := s.Message(context.Background(), id)
			switch {
			case i%12 >= 10 && !errors.Is(err, store.ErrNotFound):
				errs <- fmt.Errorf("%s: %v, want ErrNotFound", id, err)
			case i%12 < 10 && (err != nil || m.ID != id):
				errs <- fmt.Errorf("%s: %+v, %v", id, m, err)
			}
		}()
	}
	// Every read is either held in a reader's group or queued.
	waiting := func() int { return int(held.Load()) + len(s.hitReads) }
	deadline := time.Now().Add(10 * time.Second)
	for (groups.Load() < hitReaders || waiting() < n) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if w := waiting(); w < n {
		t.Fatalf("%d reads held or queued, want %d", w, n)
	}
	open()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if g := groups.Load(); g > 2*hitReaders+2 {
		t.Errorf("%d reads took %d groups, want at most %d", n, g, 2*hitReaders+2)
	}
}

// HitMessage reads a message once for the hits of hitMessageTTL: this
// node's erasure is seen at once; another node's may not be, but the hit
// it lets through is not stored.
func TestHitMessageRemembered(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := testStore(t, dsn, Options{})
	b := testStore(t, dsn, Options{})
	ctx := context.Background()
	putMessage(t, a, "H1", 1)
	putMessage(t, a, "H2", 1)
	var groups atomic.Int32
	hook := func(int) { groups.Add(1) }
	a.beforeReadGroup.Store(&hook)
	for range 3 {
		m, err := a.HitMessage(ctx, "H1")
		if err != nil || m.ID != "H1" || m.SubmitIP != "192.0.2.10" {
			t.Fatalf("HitMessage: %+v, %v", m, err)
		}
		m.Recipients = nil // a caller's change stays its own
	}
	if g := groups.Load(); g != 1 {
		t.Errorf("3 reads of one message took %d round trips, want 1", g)
	}
	if m, err := a.HitMessage(ctx, "H1"); err != nil || len(m.Recipients) != 1 {
		t.Errorf("remembered message: %+v, %v", m, err)
	}
	if _, err := a.HitMessage(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown message: %v", err)
	}
	if _, err := a.HitMessage(ctx, "nope"); !errors.Is(err, store.ErrNotFound) || groups.Load() != 3 {
		t.Errorf("unknown message again: %v after %d round trips; an unknown message is not remembered", err, groups.Load())
	}

	// Erased on this node: seen at once.
	if err := a.Erase(ctx, "alice", "H1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.HitMessage(ctx, "H1"); !errors.Is(err, store.ErrErased) {
		t.Errorf("after this node's erasure: %v, want ErrErased", err)
	}

	// Erased on another node: a's memory may answer, a's batch drops the hit.
	if _, err := a.HitMessage(ctx, "H2"); err != nil {
		t.Fatal(err)
	}
	if err := b.Erase(ctx, "alice", "H2"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.HitMessage(ctx, "H2"); err != nil {
		t.Fatalf("remembered message erased elsewhere: %v", err)
	}
	if err := a.AddEvent(ctx, open(testAccepted.Add(time.Hour), "H2")); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := a.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM events WHERE message = 'H2') + (SELECT count(*) FROM feed WHERE message = 'H2')").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d rows of an erased message's hit, %v; want none", n, err)
	}
	// Once the memory's time is up, the erasure is read.
	mm := &a.hitMessages
	mm.mu.Lock()
	r := mm.cur["H2"]
	r.at = r.at.Add(-hitMessageTTL)
	mm.cur["H2"] = r
	mm.mu.Unlock()
	if _, err := a.HitMessage(ctx, "H2"); !errors.Is(err, store.ErrErased) {
		t.Errorf("after hitMessageTTL: %v, want ErrErased", err)
	}
}

// The memory stays bounded: past hitMessagesMax/2 messages its older half
// is dropped.
func TestMessageMemoryBounded(t *testing.T) {
	var mm messageMemory
	now := time.Now()
	for i := range 2 * hitMessagesMax {
		mm.put(fmt.Sprint(i), &store.Message{}, now)
	}
	if n := len(mm.cur) + len(mm.old); n > hitMessagesMax {
		t.Errorf("%d messages remembered, want at most %d", n, hitMessagesMax)
	}
	if mm.get(fmt.Sprint(2*hitMessagesMax-1), now) == nil {
		t.Error("the newest message is forgotten")
	}
	if mm.get("0", now) != nil {
		t.Error("the oldest message is still remembered")
	}
}
