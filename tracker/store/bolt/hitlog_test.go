package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

// holdWriter blocks bbolt's writer (so the applier cannot commit) until the
// returned function is called.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	hold, done := make(chan struct{}), make(chan struct{})
	go s.db.Update(func(*bbolt.Tx) error { close(hold); <-done; return nil })
	<-hold
	return func() { close(done) }
}

// crashCopy copies the store's files to a new directory as a crash would
// leave them: the bbolt file as last committed, and the hit log.
func crashCopy(t *testing.T, s *Store) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{s.path, s.path + "-wal"} {
		src, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(dir, filepath.Base(name)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, filepath.Base(s.path))
}

// crashAfter adds open events from to to (exclusive) with the applier
// held, and returns the crash copy taken then.
func crashAfter(t *testing.T, s *Store, id string, from, to int) string {
	t.Helper()
	release := holdWriter(t, s)
	defer release()
	for i := from; i < to; i++ {
		if err := s.AddEvent(context.Background(), openEvent(id, i)); err != nil {
			t.Fatal(err)
		}
	}
	return crashCopy(t, s)
}

func openEvent(id string, i int) store.Event {
	return store.Event{Type: store.EventOpen, At: testAccepted.Add(time.Duration(i) * time.Second), Message: id, Link: -1,
		IP: fmt.Sprintf("203.0.113.%d", i%250), UserAgent: uaAppleMail, Client: "Apple Mail", Class: classify.Human,
		Reasons: []string{classify.ReasonNoMachineSignals}}
}

func countEvents(t *testing.T, s *Store, id string) (n int, ips map[string]int) {
	t.Helper()
	v, err := s.Lookup(context.Background(), "alice", id)
	if err != nil {
		t.Fatal(err)
	}
	ips = map[string]int{}
	for _, e := range v.Events {
		ips[e.IP]++
	}
	return len(v.Events), ips
}

// Hits answered from the log but not yet in bbolt when the process dies
// are committed when the store opens again, each once.
func TestHitLog_replaysAfterCrash(t *testing.T) {
	s := testStore(t, Options{MaxEventsPerRecipient: 1 << 20})
	ctx := context.Background()
	m := putTestMessage(t, s)
	for i := range 5 {
		if err := s.AddEvent(ctx, openEvent(m.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	s.caughtUp(ctx) // these five are in bbolt
	path := crashAfter(t, s, m.ID, 5, 205)

	var logged bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logged, nil))
	r, err := Open(path, Options{MaxEventsPerRecipient: 1 << 20, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logged.String(), "hits=200") {
		t.Errorf("log: %q, want the 200 replayed hits", logged.String())
	}
	if n, ips := countEvents(t, r, m.ID); n != 205 || len(ips) != 205 {
		t.Fatalf("after replay: %d events, %d distinct", n, len(ips))
	}
	// The sequence goes on: more hits, another crash, another replay, and
	// nothing is applied twice.
	path2 := crashAfter(t, r, m.ID, 205, 215)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(path2, Options{MaxEventsPerRecipient: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if n, ips := countEvents(t, r2, m.ID); n != 215 || len(ips) != 215 {
		t.Fatalf("after the second replay: %d events, %d distinct", n, len(ips))
	}
}

// A torn append (the process died during the write) is not replayed, and
// what precedes it is.
func TestHitLog_tornTail(t *testing.T) {
	s := testStore(t, Options{})
	m := putTestMessage(t, s)
	path := crashAfter(t, s, m.ID, 0, 3)
	end := s.log.off
	// A fourth record, cut short: its header and half its payload.
	var rec []byte
	{
		l := &hitLog{seg: logSegment}
		l.f, _ = os.OpenFile(filepath.Join(t.TempDir(), "x"), os.O_RDWR|os.O_CREATE, 0o600)
		defer l.f.Close()
		l.seq = 3
		v, _ := encodeEvent(&storedEvent{Type: store.EventOpen, At: testAccepted, Link: -1, Class: classify.Human})
		if _, err := l.append([]*eventReq{{ev: store.Event{Message: m.ID}, value: v}}); err != nil {
			t.Fatal(err)
		}
		rec = make([]byte, l.off)
		l.f.ReadAt(rec, 0)
	}
	f, err := os.OpenFile(path+"-wal", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(rec[:len(rec)/2], end); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, _ := countEvents(t, r, m.ID); n != 3 {
		t.Fatalf("%d events replayed, want 3", n)
	}
}

// The log moves between its two segments as they fill, and what a crash
// leaves across both is replayed in order.
func TestHitLog_segments(t *testing.T) {
	defer func(n int64) { logSegment = n }(logSegment)
	logSegment = 4096 // about 10 records
	s := testStore(t, Options{MaxEventsPerRecipient: 1 << 20})
	ctx := context.Background()
	m := putTestMessage(t, s)
	for i := range 100 {
		if err := s.AddEvent(ctx, openEvent(m.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	if n, ips := countEvents(t, s, m.ID); n != 100 || len(ips) != 100 {
		t.Fatalf("%d events, %d distinct", n, len(ips))
	}
	if s.log.last[0] == 0 || s.log.last[1] == 0 {
		t.Fatalf("the log did not use both segments: %v", s.log.last)
	}
	if fi, err := os.Stat(s.path + "-wal"); err != nil || fi.Size() > 2*logGrow {
		t.Fatalf("log file: %v, %v", fi.Size(), err)
	}
	// Fill the current segment and spill into the other with the applier
	// held: the records are replayed from both, in order.
	path := crashAfter(t, s, m.ID, 100, 115)
	r, err := Open(path, Options{MaxEventsPerRecipient: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, err := r.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != 115 {
		t.Fatalf("after replay: %d events", len(v.Events))
	}
	for i, e := range v.Events {
		if !e.At.Equal(openEvent(m.ID, i).At) {
			t.Fatalf("event %d at %v: out of order", i, e.At)
		}
	}
}

// When the other segment is not yet applied, an append that needs it
// writes nothing and fails; the store then commits the hits to bbolt
// itself, and they are answered only once there.
func TestHitLog_fullFallsBackToCommit(t *testing.T) {
	l := &hitLog{seg: 1024}
	var err error
	if l.f, err = os.OpenFile(filepath.Join(t.TempDir(), "wal"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		t.Fatal(err)
	}
	defer l.f.Close()
	l.free = func(uint64) bool { return false }
	v, _ := encodeEvent(&storedEvent{Type: store.EventOpen, At: testAccepted, Link: -1, Class: classify.Human, UserAgent: uaAppleMail})
	var reqs []*eventReq
	for range 8 {
		reqs = append(reqs, &eventReq{ev: store.Event{Message: "Q1A2B3"}, value: v})
	}
	l.last[1] = 1 // the other segment holds a record not yet applied
	if _, err := l.append(reqs); err == nil {
		t.Fatal("append past the segment succeeded")
	}
	if l.off != 0 || l.seq != 0 || l.size != 0 {
		t.Fatalf("failed append moved the log: off %d seq %d size %d", l.off, l.seq, l.size)
	}

	s := testStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	s.log.free = func(uint64) bool { return false }
	if err := s.AddEvent(ctx, openEvent(m.ID, 0)); err != nil {
		t.Fatal(err)
	}
	s.log.seg = s.log.off + 10              // the next record does not fit
	s.log.last[1-s.log.cur] = s.log.seq + 1 // and the other segment is not applied
	if err := s.AddEvent(ctx, openEvent(m.ID, 1)); err != nil {
		t.Fatal(err)
	}
	if n, _ := countEvents(t, s, m.ID); n != 2 {
		t.Fatalf("%d events", n)
	}
}

// Whatever a crash (or a bad disk) leaves in the log file, reading it
// never panics, and what it returns is the run of records that follows
// applied, in order.
func FuzzHitLogRead(f *testing.F) {
	v, _ := encodeEvent(&storedEvent{Type: store.EventOpen, At: testAccepted, Link: -1, Class: classify.Human, UserAgent: uaAppleMail})
	good := func(from uint64, n int) []byte {
		l := &hitLog{seg: 1 << 20, seq: from}
		l.f, _ = os.OpenFile(filepath.Join(f.TempDir(), "seed"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		defer l.f.Close()
		var reqs []*eventReq
		for range n {
			reqs = append(reqs, &eventReq{ev: store.Event{Message: "Q1A2B3"}, value: v})
		}
		if _, err := l.append(reqs); err != nil {
			f.Fatal(err)
		}
		b := make([]byte, l.off)
		l.f.ReadAt(b, 0)
		return b
	}
	f.Add(good(0, 3), uint64(0), uint32(0))
	f.Add(good(0, 3), uint64(2), uint32(1<<10))
	f.Add(good(7, 2), uint64(7), uint32(0))
	f.Add(good(0, 2)[:100], uint64(0), uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, applied uint64, seg uint32) {
		// In memory: the reader is what is tested, not the file system.
		l := &hitLog{src: bytes.NewReader(data), size: int64(len(data)), seg: int64(seg%(1<<16)) + logHeader}
		recs, err := l.read(applied)
		if err != nil {
			return // a record that passes its checksum but does not decode
		}
		for i, r := range recs {
			if r.seq != applied+1+uint64(i) {
				t.Fatalf("record %d has sequence %d after %d", i, r.seq, applied)
			}
		}
	})
}

// fault makes f fail with a disk error while the returned function has not
// been called.
func fault(f *atomic.Pointer[func() error]) (stop func()) {
	fail := func() error { return errors.New("injected disk error") }
	f.Store(&fail)
	return func() { f.Store(nil) }
}

// Replayed hits of an account with a webhook go to its outbox, as live
// ones do.
func TestHitLog_replayFeedsWebhooks(t *testing.T) {
	opts := Options{WebhookAccounts: []string{"alice"}}
	s := testStore(t, opts)
	m := putTestMessage(t, s)
	path := crashAfter(t, s, m.ID, 0, 3)
	r, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n := r.outboxN.Load(); n != 3 {
		t.Errorf("outbox gauge %d after replaying 3 hits", n)
	}
	items, err := r.OutboxDue(time.Now().Add(time.Hour), 10)
	if err != nil || len(items) != 3 {
		t.Errorf("outbox: %d items, %v", len(items), err)
	}
}

// A logged record that the store refuses (here a recipient out of range,
// which AddEvent would not take) is dropped on replay, as it would have
// been live: the store opens, reads do not wait for it, and the next start
// does not replay it again.
func TestHitLog_replayDropsARefusedRecord(t *testing.T) {
	s := testStore(t, Options{})
	m := putTestMessage(t, s)
	path := crashCopy(t, s)
	l, _, err := openHitLog(path+"-wal", 0)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := encodeEvent(&storedEvent{Type: store.EventOpen, At: testAccepted, Recipient: -1, Link: -1, Class: classify.Human})
	l.free = func(uint64) bool { return true }
	if _, err := l.append([]*eventReq{{ev: store.Event{Message: m.ID}, value: v}}); err != nil {
		t.Fatal(err)
	}
	l.close()
	var logged bytes.Buffer
	opts := Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))}
	r, err := Open(path, opts)
	if err != nil {
		t.Fatalf("open with a refused record in the log: %v", err)
	}
	if !strings.Contains(logged.String(), "logged event not stored") {
		t.Errorf("log: %q", logged.String())
	}
	// A read waits until the log is applied as far as it was answered:
	// the refused record must not leave that wait pending.
	if applied, logged := r.applied.Load(), r.logged.Load(); applied < logged {
		t.Errorf("log applied up to %d, answered up to %d: reads would wait for the refused record", applied, logged)
	}
	if n, _ := countEvents(t, r, m.ID); n != 0 {
		t.Errorf("%d events", n)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	logged.Reset()
	r, err = Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if strings.Contains(logged.String(), "hits=") || strings.Contains(logged.String(), "not stored") {
		t.Errorf("the record was replayed again: %q", logged.String())
	}
}

// When bbolt fails to commit hits already answered from the log, the
// applier tries again by itself, with no new traffic, once the disk is
// back.
func TestHitLog_applierRetriesAlone(t *testing.T) {
	s := testStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	failed := make(chan struct{})
	var once sync.Once
	fail := func() error {
		once.Do(func() { close(failed) })
		return errors.New("injected disk error")
	}
	commitFault.Store(&fail)
	defer commitFault.Store(nil)
	if err := s.AddEvent(ctx, openEvent(m.ID, 0)); err != nil {
		t.Fatal(err) // answered: it is in the log
	}
	s.hurry()
	select {
	case <-failed: // at least one commit failed
	case <-time.After(30 * time.Second):
		t.Fatal("no commit was tried")
	}
	commitFault.Store(nil)
	deadline := time.Now().Add(10 * time.Second)
	for s.applied.Load() < s.logged.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("applied %d, logged %d: the applier did not try again", s.applied.Load(), s.logged.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, _ := countEvents(t, s, m.ID); n != 1 {
		t.Fatalf("%d events", n)
	}
}

// A failed sync leaves records of unknown state in the log. Their hits are
// committed to bbolt instead, answered from there, and never replayed
// again; the log is not used again until the store reopens.
func TestHitLog_failedSyncIsNotReplayed(t *testing.T) {
	var logged bytes.Buffer
	s := testStore(t, Options{MaxEventsPerRecipient: 1 << 20, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	ctx := context.Background()
	m := putTestMessage(t, s)
	for i := range 3 {
		if err := s.AddEvent(ctx, openEvent(m.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	stop := fault(&syncFault)
	if err := s.AddEvent(ctx, openEvent(m.ID, 3)); err != nil {
		t.Fatal(err)
	}
	stop()
	if !s.log.broken {
		t.Fatal("the log is still in use after a failed sync")
	}
	for i := 4; i < 8; i++ {
		if err := s.AddEvent(ctx, openEvent(m.ID, i)); err != nil {
			t.Fatal(err)
		}
	}
	// Said once, not for each of the batches that followed.
	if n := strings.Count(logged.String(), "level=ERROR"); n != 1 || !strings.Contains(logged.String(), "until trackrelay restarts") {
		t.Errorf("%d error lines, want 1 saying the log is given up: %q", n, logged.String())
	}
	path := crashCopy(t, s)
	r, err := Open(path, Options{MaxEventsPerRecipient: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, ips := countEvents(t, r, m.ID); n != 8 || len(ips) != 8 {
		t.Fatalf("%d events, %d distinct, want 8 once each", n, len(ips))
	}
	// The reopened log works, and goes on from the sequence the failed
	// sync used.
	path = crashAfter(t, r, m.ID, 8, 10)
	r2, err := Open(path, Options{MaxEventsPerRecipient: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if n, ips := countEvents(t, r2, m.ID); n != 10 || len(ips) != 10 {
		t.Fatalf("after the second crash: %d events, %d distinct", n, len(ips))
	}
}
