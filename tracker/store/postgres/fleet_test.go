package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

var testAccepted = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func putMessage(t *testing.T, s store.Store, id string, links int) store.Message {
	t.Helper()
	m := store.Message{
		ID: id, MessageID: id + "@mail.example.com", Account: "alice", From: "alice@example.com",
		SubmitIP: "192.0.2.10", AcceptedAt: testAccepted, Mode: "all",
		Recipients: []store.Recipient{{Address: "bob@example.net", Tracked: true}},
	}
	ctx := context.Background()
	if err := s.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	urls := make([]string, links)
	for i := range urls {
		urls[i] = fmt.Sprintf("https://example.com/%d", i)
	}
	if err := s.SetLinks(ctx, id, urls); err != nil {
		t.Fatal(err)
	}
	return m
}

func open(at time.Time, id string) store.Event {
	return store.Event{Type: store.EventOpen, Message: id, Link: -1, Class: classify.Human, At: at}
}

// holdCommits makes s's next event batch wait, in its open transaction,
// until release is called; reached is closed when it waits.
func holdCommits(s *Store) (reached <-chan struct{}, release func()) {
	r, rel := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f := func() {
		once.Do(func() {
			close(r)
			<-rel
		})
	}
	s.beforeCommit.Store(&f)
	return r, sync.OnceFunc(func() { close(rel) })
}

// An event committed late, after a later one of another node, is neither
// skipped nor given twice: while the first writer's transaction is open,
// the feed returns neither event (the second is behind the first in feed
// order); once it commits, both, in order, and then nothing more.
func TestFeedOutOfOrderCommits(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := testStore(t, dsn, Options{})
	b := testStore(t, dsn, Options{FeedWait: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Two messages: a batch holds its messages' locks until it commits.
	putMessage(t, a, "Q1", 1)
	putMessage(t, a, "Q1B", 1)
	reached, release := holdCommits(a)
	defer release()
	first := make(chan error, 1)
	go func() { first <- a.AddEvent(ctx, open(testAccepted.Add(time.Hour), "Q1")) }()
	<-reached
	// The second writer commits while the first is open.
	if err := b.AddEvent(ctx, open(testAccepted.Add(2*time.Hour), "Q1B")); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d events committed (%v), want the second writer's only", n, err)
	}
	cursor := ""
	for _, s := range []*Store{b, a} {
		p, err := s.Feed(ctx, "alice", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) != 0 {
			t.Fatalf("feed while the first writer is open: %+v", p.Events)
		}
		cursor = p.Next
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	p, err := b.Feed(ctx, "alice", cursor, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 2 || p.Events[0].Message != "Q1" || p.Events[1].Message != "Q1B" {
		t.Fatalf("feed once both committed: %+v", p.Events)
	}
	for _, s := range []*Store{a, b} {
		p2, err := s.Feed(ctx, "alice", p.Next, 10)
		if err != nil || len(p2.Events) != 0 {
			t.Errorf("feed after both: %+v, %v", p2, err)
		}
	}
}

// Two stores on one database are two nodes: each finds the other's
// messages and events, a click burst spread over both is one burst, the
// ids are the same on both, and an erasure on one holds on the other.
func TestTwoNodes(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := testStore(t, dsn, Options{})
	b := testStore(t, dsn, Options{})
	ctx := context.Background()
	m := putMessage(t, a, "Q2", 3)
	got, err := b.Message(ctx, m.ID)
	if err != nil || got.Account != "alice" || len(got.Recipients) != 1 {
		t.Fatalf("node b: Message = %+v, %v", got, err)
	}
	at := testAccepted.Add(time.Hour)
	for i, s := range []*Store{a, b, a} {
		e := store.Event{Type: store.EventClick, Message: m.ID, Link: i, Class: classify.Human,
			Reasons: []string{classify.ReasonNoMachineSignals}, At: at.Add(time.Duration(i) * time.Second)}
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	va, err := a.Lookup(ctx, "alice", m.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := b.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(va.Events) != 3 || len(vb.Events) != 3 {
		t.Fatalf("events: node a %d, node b %d, want 3", len(va.Events), len(vb.Events))
	}
	for i := range va.Events {
		if va.Events[i].ID != vb.Events[i].ID || va.Events[i].Class != classify.Scanner || vb.Events[i].Class != classify.Scanner {
			t.Errorf("event %d: node a %+v, node b %+v, want the same scanner click", i, va.Events[i], vb.Events[i])
		}
	}
	pa, err := a.Feed(ctx, "alice", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := b.Feed(ctx, "alice", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(pa.Events) == 0 || len(pa.Events) != len(pb.Events) || pa.Next != pb.Next {
		t.Fatalf("feeds differ: node a %d entries (next %s), node b %d (next %s)", len(pa.Events), pa.Next, len(pb.Events), pb.Next)
	}
	recl := 0
	for i := range pa.Events {
		if pa.Events[i].ID != pb.Events[i].ID {
			t.Errorf("entry %d: %s on node a, %s on node b", i, pa.Events[i].ID, pb.Events[i].ID)
		}
		if pa.Events[i].Type == store.EventReclassified {
			recl++
		}
	}
	if recl != 2 {
		t.Errorf("%d reclassified entries, want 2 (the burst's first two clicks)", recl)
	}
	if err := b.Erase(ctx, "alice", m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Message(ctx, m.ID); !errors.Is(err, store.ErrErased) {
		t.Errorf("node a after erase on b: %v, want ErrErased", err)
	}
	if err := a.AddEvent(ctx, open(at.Add(time.Minute), m.ID)); err != nil {
		t.Fatal(err)
	}
	if err := a.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	var events, messages, tombstones int
	if err := a.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM messages),
		(SELECT count(*) FROM erased)`).Scan(&events, &messages, &tombstones); err != nil {
		t.Fatal(err)
	}
	if events != 0 || messages != 0 || tombstones != 1 {
		t.Errorf("after erase and late writes: %d events, %d messages, %d tombstones; want 0, 0, 1", events, messages, tombstones)
	}
}

// Nodes opening an empty database together migrate it once, and agree on
// its id.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	dsn := pgtest.DSN(t)
	const nodes = 6
	stores := make([]*Store, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { stores[i], errs[i] = Open(context.Background(), dsn, Options{MaxConnections: 2}) })
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		defer s.Close()
		if s.storeID != stores[0].storeID {
			t.Errorf("node %d: store id %s, node 0: %s", i, s.storeID, stores[0].storeID)
		}
	}
	var applied, ids int
	if err := stores[0].pool.QueryRow(context.Background(),
		"SELECT (SELECT count(*) FROM schema_version), (SELECT count(*) FROM store_meta)").Scan(&applied, &ids); err != nil {
		t.Fatal(err)
	}
	if applied != SchemaVersion() || ids != 1 {
		t.Errorf("%d migrations recorded (want %d), %d store ids (want 1)", applied, SchemaVersion(), ids)
	}
}

// A database migrated by a newer trackrelay is refused, with both versions
// in the error.
func TestNewerSchemaRefused(t *testing.T) {
	dsn := pgtest.DSN(t)
	s := testStore(t, dsn, Options{})
	newer := SchemaVersion() + 1
	if _, err := s.pool.Exec(context.Background(), "INSERT INTO schema_version (version, name) VALUES ($1, 'future.sql')", newer); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(context.Background(), dsn, Options{})
	if !errors.Is(err, ErrSchemaNewer) {
		t.Fatalf("Open: %v, want ErrSchemaNewer", err)
	}
	for _, want := range []string{fmt.Sprintf("version %d", newer), fmt.Sprintf("version %d", SchemaVersion())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// A malformed DSN, a server that is not there and a database that does
// not exist each fail Open with an error naming the cause; none repeats
// the password.
func TestOpenErrors(t *testing.T) {
	c := pgtest.Current(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	for _, tc := range []struct {
		name, dsn string
		want      []string
	}{
		{"malformed", "postgres://u:s3cret@127.0.0.1:notaport/db", []string{"invalid DSN"}},
		{"no server", fmt.Sprintf("postgres://u:s3cret@127.0.0.1:%d/db?sslmode=disable&connect_timeout=5", closedPort),
			[]string{fmt.Sprintf("127.0.0.1:%d/db", closedPort), "connect", "refused"}},
		{"no database", fmt.Sprintf("postgres://postgres:s3cret@127.0.0.1:%d/nosuchdb?sslmode=disable", c.Port),
			[]string{`database "nosuchdb" does not exist`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(context.Background(), tc.dsn, Options{ConnectTimeout: 5 * time.Second})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// Concurrent AddEvent calls share a commit: while one batch is committing,
// the hits that arrive wait together and go in the next one.
func TestGroupCommit(t *testing.T) {
	s := testStore(t, pgtest.DSN(t), Options{Committers: 1})
	ctx := context.Background()
	putMessage(t, s, "Q3", 1)
	var mu sync.Mutex
	batches := 0
	reached, hold := make(chan struct{}), make(chan struct{})
	f := func() {
		mu.Lock()
		batches++
		n := batches
		mu.Unlock()
		if n == 1 {
			close(reached)
			<-hold
		}
	}
	s.beforeCommit.Store(&f)
	const hits = 50
	var wg sync.WaitGroup
	errs := make(chan error, hits)
	add := func(i int) {
		wg.Go(func() { errs <- s.AddEvent(ctx, open(testAccepted.Add(time.Duration(i)*time.Second), "Q3")) })
	}
	add(0)
	<-reached
	for i := 1; i < hits; i++ {
		add(i)
	}
	// The first batch is held in its transaction: the others queue.
	for len(s.reqs[0]) < hits-1 {
		time.Sleep(time.Millisecond)
	}
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if batches != 2 {
		t.Errorf("%d commits for %d hits, %d of them concurrent; want 2", batches, hits, hits-1)
	}
	v, err := s.Lookup(ctx, "alice", "Q3")
	if err != nil {
		t.Fatal(err)
	}
	if v.Recipients[0].EventsTotal != hits {
		t.Errorf("%d events recorded, want %d", v.Recipients[0].EventsTotal, hits)
	}
}

// A batch written again (its commit's outcome unknown, say) records each
// hit once: hits carry the id their node minted.
func TestReplayedBatchIsHarmless(t *testing.T) {
	s := testStore(t, pgtest.DSN(t), Options{})
	ctx := context.Background()
	putMessage(t, s, "Q4", 1)
	batch := []*eventReq{
		{ev: open(testAccepted.Add(time.Hour), "Q4"), hit: newUUID()},
		{ev: open(testAccepted.Add(2*time.Hour), "Q4"), hit: newUUID()},
	}
	for range 2 {
		if err := s.commitEvents(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.Lookup(ctx, "alice", "Q4")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Events) != 2 || v.Recipients[0].Opens != 2 {
		t.Errorf("%d events, %d opens; want 2 and 2", len(v.Events), v.Recipients[0].Opens)
	}
	p, err := s.Feed(ctx, "alice", "", 100)
	if err != nil || len(p.Events) != 2 {
		t.Errorf("feed: %+v, %v; want 2 entries", p, err)
	}
}

// One node at a time sends a webhook delivery: what one node's OutboxDue
// returned is leased to it; another node gets it once the first retries
// it, or once the lease runs out (the first node died).
func TestOutboxLease(t *testing.T) {
	dsn := pgtest.DSN(t)
	opts := Options{WebhookAccounts: []string{"alice"}, OutboxLease: time.Hour}
	a := testStore(t, dsn, opts)
	b := testStore(t, dsn, opts)
	ctx := context.Background()
	putMessage(t, a, "Q5", 1)
	putMessage(t, a, "Q6", 1)
	now := time.Now()
	for _, id := range []string{"Q5", "Q6"} {
		if err := a.AddEvent(ctx, open(now, id)); err != nil {
			t.Fatal(err)
		}
	}
	items, err := a.OutboxDue(now.Add(time.Minute), 1)
	if err != nil || len(items) != 1 {
		t.Fatalf("node a: %+v, %v", items, err)
	}
	other, err := b.OutboxDue(now.Add(time.Minute), 10)
	if err != nil || len(other) != 1 || other[0].ID == items[0].ID {
		t.Fatalf("node b while a holds %s: %+v, %v; want the other item only", items[0].ID, other, err)
	}
	if again, err := b.OutboxDue(now.Add(time.Minute), 10); err != nil || len(again) != 0 {
		t.Fatalf("node b again: %+v, %v; want nothing", again, err)
	}
	if err := a.OutboxRetry(items, []time.Time{now}); err != nil {
		t.Fatal(err)
	}
	retried, err := b.OutboxDue(now.Add(time.Minute), 10)
	if err != nil || len(retried) != 1 || retried[0].ID != items[0].ID || retried[0].Attempts != 1 {
		t.Fatalf("node b after a's retry: %+v, %v", retried, err)
	}
	// Node b dies holding both: once the leases run out, node a sends them.
	if _, err := a.pool.Exec(ctx, "UPDATE outbox SET leased_until = clock_timestamp() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	if late, err := a.OutboxDue(now.Add(time.Minute), 10); err != nil || len(late) != 2 {
		t.Fatalf("node a after b's leases ran out: %+v, %v", late, err)
	}
}

// The relay's records are group-committed: PutMessage and SetLinks calls
// that arrive while batches commit share the next commit, one statement
// each for the messages and the links, and every record is there after.
func TestRecordGroupCommit(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := testStore(t, pgtest.DSN(t), Options{Metrics: store.NewMetrics(reg)})
	ctx := context.Background()
	var mu sync.Mutex
	batches := 0
	reached := []chan struct{}{make(chan struct{}), make(chan struct{})}
	hold := make(chan struct{})
	f := func() {
		mu.Lock()
		batches++
		n := batches
		mu.Unlock()
		if n <= recordCommitters {
			close(reached[n-1])
			<-hold
		}
	}
	s.beforeRecordCommit.Store(&f)
	const messages = 40
	msg := func(i int) store.Message {
		id := fmt.Sprintf("R%03d", i)
		return store.Message{ID: id, MessageID: id + "@mail.example.com", Account: "alice", From: "alice@example.com",
			SubmitIP: "192.0.2.10", AcceptedAt: testAccepted, Mode: "all",
			Recipients: []store.Recipient{{Address: "bob@example.net", Tracked: true}}}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*messages)
	// Each committer is held in the transaction of its first batch.
	for i := range recordCommitters {
		wg.Go(func() { errs <- s.PutMessage(ctx, msg(i)) })
		<-reached[i]
	}
	queued := 0
	for i := recordCommitters; i < messages; i++ {
		wg.Go(func() { errs <- s.PutMessage(ctx, msg(i)) })
		wg.Go(func() { errs <- s.SetLinks(ctx, msg(i).ID, []string{fmt.Sprintf("https://example.com/%d", i)}) })
		queued += 2
	}
	for len(s.recs) < queued {
		time.Sleep(time.Millisecond)
	}
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	n := batches
	mu.Unlock()
	// The queued records go in one commit, or two if both committers
	// take a share.
	if n > recordCommitters+2 {
		t.Errorf("%d commits for %d records, %d of them queued together; want at most %d", n, queued+recordCommitters, queued, recordCommitters+2)
	}
	for i := range messages {
		v, err := s.Lookup(ctx, "alice", msg(i).ID)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if i >= recordCommitters && (len(v.Links) != 1 || v.Links[0].URL != fmt.Sprintf("https://example.com/%d", i)) {
			t.Errorf("message %d: links %+v", i, v.Links)
		}
	}
	// The metric counts the commits and what they wrote.
	var count uint64
	var sum float64
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "trackrelay_store_record_batch_size" {
			count, sum = mf.Metric[0].GetHistogram().GetSampleCount(), mf.Metric[0].GetHistogram().GetSampleSum()
		}
	}
	if int(count) != n || int(sum) != queued+recordCommitters {
		t.Errorf("record_batch_size: %d commits of %v records; want %d of %d", count, sum, n, queued+recordCommitters)
	}
}

// Writes of one message in one batch do not fail the batch (a statement
// may not change a row twice), and an erased message stays erased.
func TestRecordBatchSameMessage(t *testing.T) {
	s := testStore(t, pgtest.DSN(t), Options{})
	ctx := context.Background()
	putMessage(t, s, "E1", 1)
	if err := s.Erase(ctx, "alice", "E1"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	batches := 0
	reached := []chan struct{}{make(chan struct{}), make(chan struct{})}
	hold := make(chan struct{})
	f := func() {
		mu.Lock()
		batches++
		n := batches
		mu.Unlock()
		if n <= recordCommitters {
			close(reached[n-1])
			<-hold
		}
	}
	s.beforeRecordCommit.Store(&f)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range recordCommitters {
		wg.Go(func() { errs <- s.SetLinks(ctx, fmt.Sprintf("H%d", i), nil) })
		<-reached[i]
	}
	m := store.Message{ID: "W1", MessageID: "w1@x", Account: "alice", AcceptedAt: testAccepted, Mode: "all",
		Recipients: []store.Recipient{{Address: "a@example.net"}}}
	for range 3 {
		wg.Go(func() { errs <- s.PutMessage(ctx, m) })
		wg.Go(func() { errs <- s.SetLinks(ctx, "W1", []string{"https://example.com/"}) })
	}
	wg.Go(func() { errs <- s.PutMessage(ctx, store.Message{ID: "E1", Account: "alice", AcceptedAt: testAccepted}) })
	for len(s.recs) < 7 {
		time.Sleep(time.Millisecond)
	}
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if v, err := s.Lookup(ctx, "alice", "W1"); err != nil || len(v.Links) != 1 {
		t.Errorf("W1: %+v, %v", v, err)
	}
	if _, err := s.Message(ctx, "E1"); !errors.Is(err, store.ErrErased) {
		t.Errorf("erased message written again: %v", err)
	}
}
