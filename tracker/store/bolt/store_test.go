package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

func testStore(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "tracker.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

var testAccepted = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func testMessage() store.Message {
	return store.Message{
		ID:         "Q1A2B3",
		MessageID:  "abc/def+1@mail.example.com",
		Account:    "alice",
		From:       "alice@example.com",
		SubmitIP:   "192.0.2.10",
		AcceptedAt: testAccepted,
		Mode:       "all",
		Recipients: []store.Recipient{
			{Address: "bob@example.net", Tracked: true},
			{Address: "alice@example.com", Tracked: false},
		},
	}
}

func putTestMessage(t testing.TB, s store.Store) store.Message {
	t.Helper()
	m := testMessage()
	ctx := context.Background()
	if err := s.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLinks(ctx, m.ID, []string{"https://example.com/quote?id=1&x=2", "https://example.com/b"}); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBolt_groupCommit(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	metrics := store.NewMetrics(reg)
	s := testStore(t, Options{Metrics: metrics, MaxEventsPerRecipient: 1000})
	ctx := context.Background()
	m := putTestMessage(t, s)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: m.ID, Recipient: 0, Link: -1, Class: classify.Human, At: time.Now(), UserAgent: fmt.Sprint(i)})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != n || v.Recipients[0].Opens != n {
		t.Errorf("%d events, %d opens; want %d", len(v.Events), v.Recipients[0].Opens, n)
	}
	commits := s.commits.Load()
	if commits >= n {
		t.Errorf("%d commits for %d events: no grouping", commits, n)
	}
	t.Logf("%d events in %d commits", n, commits)
	if got := uint64(metricValue(t, reg, "trackrelay_store_commit_batch_size")); got != uint64(commits) {
		t.Errorf("batch size histogram has %d observations, want %d", got, commits)
	}
}

// A store whose file another process holds fails to open with bbolt's
// timeout once LockTimeout is over, and opens if the file is let go within
// it: the configured timeout, not the default, bounds the wait.
func TestBolt_lockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	open := func(timeout time.Duration) <-chan error {
		done := make(chan error, 1)
		go func() {
			s2, err := Open(path, Options{LockTimeout: timeout})
			if err == nil {
				err = s2.Close()
			}
			done <- err
		}()
		return done
	}
	wait := func(done <-chan error) error {
		select {
		case err := <-done:
			return err
		case <-time.After(time.Minute):
			t.Fatal("Open still waiting for the lock after a minute")
			return nil
		}
	}
	if err := wait(open(100 * time.Millisecond)); !errors.Is(err, berrors.ErrTimeout) {
		t.Fatalf("second Open while the file is locked: %v, want bbolt's timeout", err)
	}

	// Let go past the default timeout, within the configured one.
	done := open(30 * time.Second)
	time.Sleep(DefaultLockTimeout + time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait(done); err != nil {
		t.Errorf("Open after the file was let go within LockTimeout: %v", err)
	}
}

func TestBolt_reopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := putTestMessage(t, s)
	if err := s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Lookup(ctx, "alice", "<"+m.MessageID+">")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != 1 || !v.Recipients[0].Opened {
		t.Errorf("after reopen: %+v", v)
	}
}

// The relay's reports from many delivery workers share the collector's
// commits with each other and with the hits.
func TestBolt_reportsShareCommits(t *testing.T) {
	s := testStore(t, Options{MaxEventsPerRecipient: 1000})
	ctx := context.Background()
	m := putTestMessage(t, s)
	before := s.commits.Load()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		id := fmt.Sprintf("R%04d", i)
		wg.Go(func() {
			mm := testMessage()
			mm.ID, mm.MessageID = id, id+"@example.com"
			errs <- s.PutMessage(ctx, mm)
			errs <- s.SetDelivery(ctx, id, 0, store.Delivery{Status: delivery.Delivered, Attempts: 1, UpdatedAt: time.Now()})
		})
		wg.Go(func() {
			errs <- s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: time.Now()})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	commits := s.commits.Load() - before
	if commits >= 2*n {
		t.Errorf("%d commits for %d reports and %d hits: no grouping", commits, 2*n, n)
	}
	t.Logf("%d reports and %d hits in %d commits", 2*n, n, commits)
	for i := range n {
		v, err := s.Lookup(ctx, "alice", fmt.Sprintf("R%04d", i))
		if err != nil {
			t.Fatal(err)
		}
		if v.Recipients[0].Delivery.Status != delivery.Delivered {
			t.Fatalf("R%04d: status %q", i, v.Recipients[0].Delivery.Status)
		}
	}
}

// One failing write in a shared commit fails alone, and what the others
// did in the rolled-back transaction is not done twice.
func TestBolt_failedWriteSparesItsBatch(t *testing.T) {
	s := testStore(t, Options{WebhookAccounts: []string{"alice"}})
	ctx := context.Background()
	m := putTestMessage(t, s)
	outboxKeys := func() int64 {
		var n int
		s.db.View(func(tx *bbolt.Tx) error { n = tx.Bucket(bucketOutbox).Stats().KeyN; return nil })
		return int64(n)
	}
	outbox0, keys0 := s.outboxN.Load(), outboxKeys()

	// Hold the writer lock so that the requests below queue up and form one
	// batch: a click, a delivery report (a feed entry for alice's webhook)
	// and a write that fails.
	hold, release := make(chan struct{}), make(chan struct{})
	go s.db.Update(func(*bbolt.Tx) error { close(hold); <-release; return nil })
	<-hold
	first := make(chan error, 1)
	go func() { first <- s.SetLinks(ctx, m.ID, []string{"https://example.com/a"}) }()
	// Best effort, for the order in the batch: on a loaded machine the
	// collector may take a request early, and the checks below still hold.
	waitQueued := func(n int) {
		for deadline := time.Now().Add(2 * time.Second); len(s.reqs) != n && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	waitQueued(0)                     // the collector took SetLinks
	time.Sleep(20 * time.Millisecond) // and waits for the lock
	errs := make(chan error, 3)
	go func() {
		errs <- s.AddEvent(ctx, store.Event{Type: store.EventClick, At: time.Now(), Message: m.ID, Link: 0,
			URL: "https://example.com/a", Class: classify.Human, Reasons: []string{classify.ReasonNoMachineSignals}})
	}()
	waitQueued(1)
	go func() {
		errs <- s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 1, UpdatedAt: time.Now()})
	}()
	waitQueued(2)
	boom := errors.New("boom")
	go func() { errs <- s.write(ctx, func(*bbolt.Tx) error { return boom }, nil) }()
	waitQueued(3)
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	var failed int
	for range 3 {
		if err := <-errs; err != nil {
			if !errors.Is(err, boom) {
				t.Errorf("unexpected error %v", err)
			}
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d writes failed, want the failing one alone", failed)
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != 1 {
		t.Fatalf("%d events stored, want 1", len(v.Events))
	}
	seen := map[string]bool{}
	for _, r := range v.Events[0].Reasons {
		if seen[r] {
			t.Errorf("reason %q twice in %q: the retry kept the rolled-back evidence", r, v.Events[0].Reasons)
		}
		seen[r] = true
	}
	if v.Recipients[0].Delivery.Status != delivery.Delivered {
		t.Errorf("delivery %+v", v.Recipients[0].Delivery)
	}
	// The click and the delivery each queue one webhook entry.
	if got, keys := s.outboxN.Load()-outbox0, outboxKeys()-keys0; got != keys || keys != 2 {
		t.Errorf("outbox count grew by %d for %d entries stored, want 2", got, keys)
	}
}

// A report alone waits for company (a hit, more reports) up to
// ReportDelay; a hit never waits; and closing the store commits a report
// still waiting.
func TestBolt_reportsWaitForCompany(t *testing.T) {
	s := testStore(t, Options{ReportDelay: time.Hour})
	ctx := context.Background()
	m := testMessage()
	before := s.commits.Load()
	put := make(chan error, 1)
	go func() { put <- s.PutMessage(ctx, m) }()
	select {
	case err := <-put:
		t.Fatalf("a lone report committed (%v) without waiting", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The hit does not wait for ReportDelay (an hour), and takes the report
	// along; the guard only keeps a broken store from hanging the test.
	guard, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.AddEvent(guard, store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-put:
		if err != nil {
			t.Fatal(err)
		}
	case <-guard.Done():
		t.Fatal("the report still waits after the hit was answered")
	}
	if n := s.commits.Load() - before; n != 1 {
		t.Errorf("%d commits for a report and a hit, want 1", n)
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != 1 || v.Stats.Opens != 1 {
		t.Errorf("events %+v, stats %+v; want the open", v.Events, v.Stats)
	}

	// Alone, a report commits once ReportDelay is over.
	s2 := testStore(t, Options{ReportDelay: 20 * time.Millisecond})
	start := time.Now()
	if err := s2.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("a lone report committed after %v, before ReportDelay", d)
	}

	// Closing commits a waiting report.
	path := filepath.Join(t.TempDir(), "tracker.db")
	s3, err := Open(path, Options{ReportDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	go func() { put <- s3.PutMessage(ctx, m) }()
	time.Sleep(50 * time.Millisecond)
	if err := s3.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-put; err != nil {
		t.Fatalf("report waiting at close: %v", err)
	}
	s3, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if _, err := s3.Lookup(ctx, "alice", m.ID); err != nil {
		t.Errorf("report waiting at close was not committed: %v", err)
	}
}

// Buckets whose keys arrive in order (the feed, the messages) fill their
// pages before splitting them, instead of leaving each half empty.
func TestBolt_appendedBucketsFillPages(t *testing.T) {
	s := testStore(t, Options{MaxEventsPerRecipient: 1 << 20, ReportDelay: -1})
	ctx := context.Background()
	for i := range 300 {
		m := testMessage()
		m.ID, m.MessageID = fmt.Sprintf("Q%08d", i), fmt.Sprintf("%d@mail.example.com", i)
		if err := s.PutMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3000; i += 100 {
		var batch []*eventReq
		for j := range 100 {
			e := store.Event{Type: store.EventOpen, Message: fmt.Sprintf("Q%08d", (i+j)%300), Link: -1, Class: classify.Human,
				At: time.Now(), UserAgent: uaAppleMail, IP: "203.0.113.9"}
			v, err := encodeEvent(&storedEvent{Type: e.Type, At: e.At, Link: e.Link, UserAgent: e.UserAgent, IP: e.IP, Class: e.Class})
			if err != nil {
				t.Fatal(err)
			}
			batch = append(batch, &eventReq{ev: e, value: v})
		}
		if _, err := s.commit(batch, 0); err != nil {
			t.Fatal(err)
		}
	}
	s.db.View(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketFeed, bucketMessages} {
			st := tx.Bucket(name).Stats()
			fill := float64(st.LeafInuse) / float64(st.LeafAlloc)
			if fill < 0.75 {
				t.Errorf("bucket %s: leaf pages %.0f%% full (%d pages), want them filled", name, 100*fill, st.LeafPageN)
			}
		}
		return nil
	})
}
