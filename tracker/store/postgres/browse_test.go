package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
	"github.com/trackrelay/trackrelay/tracker/store/storetest"
)

// fillMessages stores n messages of account, one a second from start, in
// one COPY, and refreshes the planner's statistics. Message i is to
// client-i@example.com with the subject "Quote i for client i".
func fillMessages(tb testing.TB, s *Store, account string, n int, start time.Time) {
	tb.Helper()
	rows := make([][]any, n)
	for i := range n {
		m := store.Message{ID: fmt.Sprintf("%s-%08d", account, i), Subject: fmt.Sprintf("Quote %d for client %d", i, i),
			Recipients: []store.Recipient{{Address: fmt.Sprintf("client-%d@example.com", i), Tracked: true}}}
		rj, err := json.Marshal([]storedRecipient{{Address: m.Recipients[0].Address, Tracked: true}})
		if err != nil {
			tb.Fatal(err)
		}
		subject, search := subjectAndSearch(&m)
		rows[i] = []any{m.ID, account, m.ID + "@mail.example", account + "@example.com", "192.0.2.10",
			start.Add(time.Duration(i) * time.Second), "all", string(rj), subject, search}
	}
	ctx := context.Background()
	if _, err := s.pool.CopyFrom(ctx, pgx.Identifier{"messages"},
		[]string{"id", "account", "message_id", "sender", "submit_ip", "accepted_at", "mode", "recipients", "subject", "search"},
		pgx.CopyFromRows(rows)); err != nil {
		tb.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "ANALYZE messages"); err != nil {
		tb.Fatal(err)
	}
}

// listed returns the queue ids of a page of account's messages.
func listed(t *testing.T, s *Store, account string, q store.MessageQuery) []string {
	t.Helper()
	p, err := s.Messages(context.Background(), account, q)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range p.Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

// A database of the schema before the console (version 2) gets the
// subject and search columns by migration: its messages are listed, and
// found by recipient.
func TestBrowseMigratesOlderDatabase(t *testing.T) {
	dsn := pgtest.DSN(t)
	s := testStore(t, dsn, Options{})
	ctx := context.Background()
	for i, id := range []string{"Q1", "Q2", "Q3"} {
		m := store.Message{ID: id, Account: "alice", Subject: "Subject " + id, AcceptedAt: testAccepted.Add(time.Duration(i) * time.Minute),
			Mode: "all", Recipients: []store.Recipient{{Address: "Client-" + id + "@Example.com", Tracked: true}}}
		if err := s.PutMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Back to version 2: undo migrations 3 to 6.
	for _, q := range []string{
		"DROP TABLE awaiting",
		"DROP INDEX messages_browse",
		"DROP INDEX messages_search",
		"ALTER TABLE messages DROP COLUMN subject, DROP COLUMN search",
		"DROP TABLE tallies, retention_marks",
		"DROP INDEX outbox_first_at",
		"DROP INDEX events_clicks, events_marks",
		"DELETE FROM schema_version WHERE version >= 3",
	} {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s.Close()

	s = testStore(t, dsn, Options{})
	if got := listed(t, s, "alice", store.MessageQuery{}); !slices.Equal(got, []string{"Q3", "Q2", "Q1"}) {
		t.Errorf("listed %v after the migration", got)
	}
	if got := listed(t, s, "alice", store.MessageQuery{Search: "CLIENT-Q2@"}); !slices.Equal(got, []string{"Q2"}) {
		t.Errorf("search by recipient listed %v", got)
	}
	if !s.SearchIndexed() {
		t.Error("no trigram index after the migration")
	}
}

// planOf returns the plan PostgreSQL chooses for the list's query.
func planOf(t *testing.T, s *Store, account, search string) string {
	t.Helper()
	sql, args, err := browseQuery(account, "", search, store.DefaultMessagesLimit+1)
	if err != nil || sql == "" {
		t.Fatalf("browseQuery: %q, %v", sql, err)
	}
	rows, err := s.pool.Query(context.Background(), "EXPLAIN "+sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

// The list reads the account's messages on the messages_browse index, and
// a search that matches few of them is answered by the trigram index.
func TestBrowseQueriesUseIndexes(t *testing.T) {
	s := testStore(t, pgtest.DSN(t), Options{})
	fillMessages(t, s, "alice", 20000, testAccepted)
	fillMessages(t, s, "bob", 2000, testAccepted)
	if !s.SearchIndexed() {
		t.Fatal("no trigram index")
	}
	if plan := planOf(t, s, "alice", ""); !strings.Contains(plan, "messages_browse") {
		t.Errorf("the first page is not read on messages_browse:\n%s", plan)
	}
	if plan := planOf(t, s, "alice", "nothing matches this"); !strings.Contains(plan, "messages_search") {
		t.Errorf("a search that matches nothing does not use messages_search:\n%s", plan)
	}
	if got := listed(t, s, "alice", store.MessageQuery{Search: "quote 19999 for"}); !slices.Equal(got, []string{"alice-00019999"}) {
		t.Errorf("search listed %v", got)
	}
}

// Without the pg_trgm extension (here: a role that may not create it)
// the store works, and searching too, without the trigram index.
func TestBrowseWithoutTrigramIndex(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// A role that owns the schema but has no CREATE on the database, which
	// a trusted extension needs.
	for _, q := range []string{
		"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plain') THEN CREATE ROLE plain LOGIN; END IF; END $$",
		"GRANT ALL ON SCHEMA public TO plain",
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("plain")
	s := testStore(t, u.String(), Options{})
	if s.SearchIndexed() {
		t.Fatal("a role without CREATE on the database made the trigram index")
	}
	m := store.Message{ID: "Q1", Account: "alice", Subject: "Quote été", AcceptedAt: testAccepted, Mode: "all",
		Recipients: []store.Recipient{{Address: "bob@example.net", Tracked: true}}}
	if err := s.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got := listed(t, s, "alice", store.MessageQuery{Search: "ÉTÉ"}); !slices.Equal(got, []string{"Q1"}) {
		t.Errorf("search listed %v", got)
	}
}

// BenchmarkMessages lists an account of 100,000 messages (each delivered,
// every third opened), copied in with COPY and INSERT ... SELECT: see
// storetest.BenchMessages.
func BenchmarkMessages(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	s, err := Open(ctx, pgtest.DSN(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	fillMessages(b, s, "alice", n, testAccepted)
	for _, q := range []string{
		`INSERT INTO deliveries (message, recipient, status, attempts, last_response, updated_at)
			SELECT id, 0, 'delivered', 1, '250 ok', accepted_at + interval '1 second' FROM messages`,
		`INSERT INTO events (seq, hit, message, recipient, type, at_ns, link, kept, burst, class, reasons, url, ip, user_agent, client, country, city)
			SELECT nextval('events_seq'), gen_random_uuid(), id, 0, 'open',
				(extract(epoch FROM accepted_at + interval '1 hour') * 1e9)::bigint, -1, true, false, 'human', '[]',
				'', '198.51.100.7', 'Mozilla/5.0', 'Firefox', '', ''
			FROM messages WHERE right(id, 1) IN ('0', '3', '6', '9')`,
		"VACUUM ANALYZE messages, deliveries, events",
	} {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	// 1,000 pages of 50 from the newest end after the 50,000th message.
	deep := n - 1000*store.DefaultMessagesLimit
	storetest.BenchMessages(b, s, "alice", store.EncodeMessageCursor(testAccepted.Add(time.Duration(deep)*time.Second), fmt.Sprintf("alice-%08d", deep)))
}

// Overview reads a period of more messages than one chunk, each once.
func TestOverviewChunks(t *testing.T) {
	s := testStore(t, pgtest.DSN(t), Options{})
	fillMessages(t, s, "alice", 2*overviewChunk+500, testAccepted)
	// Messages 10 to 2,399, one a second.
	o, err := s.Overview(context.Background(), "alice", testAccepted.Add(10*time.Second), testAccepted.Add(2400*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if o.Messages != 2390 || o.Recipients != 2390 {
		t.Errorf("overview of %d messages, %d recipients; want 2390", o.Messages, o.Recipients)
	}
}
