package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/store/postgres"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

// migrateFixture fills a bbolt store in dir: messages with links and
// delivery states, events of several classes, a click burst that
// reclassified earlier clicks, a copy past the cap of events kept in
// detail, an erased message and webhook deliveries waiting in the outbox.
// It returns the queue ids of the messages still there and of the erased
// one.
func migrateFixture(t *testing.T, path string) (ids []string, erased string) {
	t.Helper()
	st, err := bolt.Open(path, bolt.Options{MaxEventsPerRecipient: 3, WebhookAccounts: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	put := func(id string, n int) {
		t.Helper()
		m := store.Message{ID: id, MessageID: id + "@mail.example.com", Account: "alice", From: "alice@example.com",
			Subject: "Devis " + id + " — été", SubmitIP: "192.0.2.10", AcceptedAt: base, Mode: "all",
			Recipients: []store.Recipient{{Address: "bob@example.net", Tracked: true}, {Address: "carol@example.org", Tracked: true}}}
		if err := st.PutMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
		var links []string
		for i := range n {
			links = append(links, fmt.Sprintf("https://example.com/%s/%d", id, i))
		}
		if err := st.SetLinks(ctx, id, links); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	hit := func(id string, r int, typ string, link int, class string, at time.Time, reasons ...string) {
		t.Helper()
		e := store.Event{Type: typ, Message: id, Recipient: r, Link: link, Class: class, Reasons: reasons, At: at,
			IP: "198.51.100.7", UserAgent: "Mozilla/5.0", Client: "Firefox", Country: "DE", City: "Berlin"}
		if typ == store.EventClick {
			e.URL = fmt.Sprintf("https://example.com/%s/%d", id, link)
		}
		if err := st.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 12 {
		id := fmt.Sprintf("Q%02d", i)
		put(id, 3)
		if err := st.SetDelivery(ctx, id, 0, store.Delivery{Status: delivery.Delivered, Attempts: 1,
			LastResponse: "250 ok", UpdatedAt: base.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetDelivery(ctx, id, 1, store.Delivery{Status: delivery.Deferred, Attempts: 2,
			LastResponse: "451 try later", UpdatedAt: base.Add(2 * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		hit(id, 0, store.EventOpen, -1, classify.Human, base.Add(time.Hour), classify.ReasonNoMachineSignals)
		hit(id, 1, store.EventOpen, -1, classify.Proxy, base.Add(time.Hour), classify.ReasonGoogleProxyIP)
	}
	// Three links clicked within a second: a burst, which turns the first
	// two clicks, human when they came, into scanner's.
	for l := range 3 {
		hit("Q01", 1, store.EventClick, l, classify.Human, base.Add(2*time.Hour+time.Duration(l)*300*time.Millisecond))
	}
	hit("Q02", 0, store.EventOpen, -1, classify.Prefetch, base.Add(3*time.Hour), classify.ReasonPrefetchHeader)
	hit("Q02", 0, store.EventClick, 2, classify.Scanner, base.Add(3*time.Hour), classify.ReasonScannerUA)
	// Past the cap of 3: counted only.
	for i := range 5 {
		hit("Q03", 1, store.EventClick, i%2, classify.Human, base.Add(4*time.Hour+time.Duration(i)*time.Minute))
	}
	hit("Q03", 1, store.EventOpen, -1, classify.Scanner, base.Add(5*time.Hour), classify.ReasonEmptyUA)
	if err := st.Erase(ctx, "alice", "Q04"); err != nil {
		t.Fatal(err)
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return id == "Q04" })
	return ids, "Q04"
}

// migrateConfig is a config whose data_dir is dir and whose store.postgres
// names dsn.
func migrateConfig(t *testing.T, dir, dsn string) *Config {
	t.Helper()
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.Tracking.MaxEventsPerRecipient = 3
	cfg.Store.Postgres.DSNFile = filepath.Join(dir, "dsn")
	if err := os.WriteFile(cfg.Store.Postgres.DSNFile, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tableCounts are the row counts of the ledger's tables.
func tableCounts(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var out []string
	for _, table := range []string{"messages", "links", "deliveries", "events", "feed", "outbox", "erased"} {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s=%d", table, n))
	}
	return strings.Join(out, " ")
}

// migrate-store copies a bbolt store into PostgreSQL: every message looks
// up the same (events with their classes and ids, counts past the cap,
// delivery states), the feed and the outbox are the same entries with the
// same ids, and the erased message stays erased. Interrupted and run
// again it ends with the same content as a run in one go; a third run
// inserts nothing.
func TestMigrateStore(t *testing.T) {
	c, _ := pgtest.Own(t)
	ctx := context.Background()
	dir := t.TempDir()
	ids, erased := migrateFixture(t, filepath.Join(dir, "tracking.db"))

	// In one go, into a database of its own: the reference counts.
	once, err := c.CreateDB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	if _, err := migrateStore(ctx, migrateConfig(t, dir, once), migrateOptions{batch: 4, progress: &progress}); err != nil {
		t.Fatal(err)
	}
	want := tableCounts(t, once)

	dsn, err := c.CreateDB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := migrateConfig(t, dir, dsn)
	cctx, cancel := context.WithCancel(ctx)
	batches := 0
	progress.Reset()
	_, err = migrateStore(cctx, cfg, migrateOptions{batch: 4, progress: &progress, afterBatch: func() {
		if batches++; batches == 2 {
			cancel()
		}
	}})
	cancel()
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "run migrate-store again") {
		t.Fatalf("interrupted run: %v", err)
	}
	if !strings.Contains(progress.String(), "migrate-store: interrupted") {
		t.Errorf("no summary of the interrupted run: %q", progress.String())
	}
	if got := tableCounts(t, dsn); got == want {
		t.Fatalf("the interrupted run copied everything: %s", got)
	}
	progress.Reset()
	tot, err := migrateStore(ctx, cfg, migrateOptions{batch: 4, progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if got := tableCounts(t, dsn); got != want {
		t.Errorf("after resuming: %s, want %s", got, want)
	}
	if tot.inserted.Messages == 0 || tot.inserted.Messages == int64(len(ids)) {
		t.Errorf("the resumed run inserted %d of %d messages, want the rest only", tot.inserted.Messages, len(ids))
	}
	if !strings.Contains(progress.String(), "migrate-store: done after") ||
		!strings.Contains(progress.String(), fmt.Sprintf("%d messages (", len(ids))) {
		t.Errorf("summary: %q", progress.String())
	}
	tot, err = migrateStore(ctx, cfg, migrateOptions{batch: 4, progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if tot.inserted != (postgres.ImportCounts{}) || tableCounts(t, dsn) != want {
		t.Errorf("a third run inserted %+v; counts %s, want %s", tot.inserted, tableCounts(t, dsn), want)
	}

	src, err := bolt.Open(filepath.Join(dir, "tracking.db"), bolt.Options{MaxEventsPerRecipient: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, dsn, postgres.Options{MaxEventsPerRecipient: 3, WebhookAccounts: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for _, id := range ids {
		bv, err := src.Lookup(ctx, "alice", id)
		if err != nil {
			t.Fatal(err)
		}
		pv, err := dst.Lookup(ctx, "alice", id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if b, p := jsonOf(t, bv), jsonOf(t, pv); b != p {
			t.Errorf("%s:\n bbolt    %s\n postgres %s", id, b, p)
		}
	}
	if _, err := dst.Lookup(ctx, "alice", erased); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("erased message: %v", err)
	}
	// The console's list, subjects and search included, is the same.
	for _, search := range []string{"", "q03 — ÉTÉ", "carol@"} {
		bp, err := src.Messages(ctx, "alice", store.MessageQuery{Search: search})
		if err != nil {
			t.Fatal(err)
		}
		pp, err := dst.Messages(ctx, "alice", store.MessageQuery{Search: search})
		if err != nil {
			t.Fatal(err)
		}
		if b, p := jsonOf(t, bp.Messages), jsonOf(t, pp.Messages); b != p || len(bp.Messages) == 0 {
			t.Errorf("list (search %q):\n bbolt    %s\n postgres %s", search, b, p)
		}
	}
	// The tombstone came along: the relay's late report is not stored.
	if err := dst.PutMessage(ctx, store.Message{ID: erased, Account: "alice", AcceptedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Lookup(ctx, "alice", erased); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("erased message after a put: %v", err)
	}
	bf, err := src.Feed(ctx, "alice", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := dst.Feed(ctx, "alice", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if b, p := jsonOf(t, bf.Events), jsonOf(t, pf.Events); b != p {
		t.Errorf("feed:\n bbolt    %s\n postgres %s", b, p)
	}
	if !strings.Contains(jsonOf(t, pf.Events), `"reclassified"`) {
		t.Errorf("the feed has no reclassified entry: %s", jsonOf(t, pf.Events))
	}
	far := time.Now().Add(24 * time.Hour)
	bo, err := src.OutboxDue(far, 1000)
	if err != nil {
		t.Fatal(err)
	}
	po, err := dst.OutboxDue(far, 1000)
	if err != nil {
		t.Fatal(err)
	}
	outbox := func(items []store.OutboxItem) string {
		var out []string
		for _, it := range items {
			out = append(out, fmt.Sprintf("%s %s %d %d %s", it.ID, it.Account, it.Attempts, it.First.Unix(), it.Body))
		}
		return strings.Join(out, "\n")
	}
	if len(bo) == 0 || outbox(bo) != outbox(po) {
		t.Errorf("outbox:\n bbolt    %s\n postgres %s", outbox(bo), outbox(po))
	}
	// New hits take ids after the copied ones.
	if err := dst.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: "Q05", Link: -1, Class: classify.Human, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	v, err := dst.Lookup(ctx, "alice", "Q05")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		bv, err := src.Lookup(ctx, "alice", id)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range bv.Events {
			seen[e.ID] = true
		}
	}
	if n := len(v.Events); n != 3 || seen[v.Events[2].ID] {
		t.Errorf("new event after the migration: %+v", v.Events)
	}
}

// A running relay holds tracking.db: migrate-store says so and copies
// nothing.
func TestMigrateStore_locked(t *testing.T) {
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "tracking.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := migrateConfig(t, dir, fmt.Sprintf("postgres://u@127.0.0.1:%d/db?sslmode=disable", closedPort(t)))
	_, err = migrateStore(context.Background(), cfg, migrateOptions{batch: 10, progress: &bytes.Buffer{}})
	if err == nil || !strings.Contains(err.Error(), "locked by a running trackrelay") {
		t.Errorf("err = %v", err)
	}
}

// migrate-store needs -config, and a database to copy into.
func TestMigrateStore_usage(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"migrate-store"}, nil, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "-config FILE is required") {
		t.Errorf("without -config: %d %q", code, stderr.String())
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "trackrelay.yaml")
	if err := os.WriteFile(path, []byte("data_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envPostgresDSN, "")
	stderr.Reset()
	if code := run([]string{"migrate-store", "-config", path}, nil, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "set store.postgres.dsn_file") {
		t.Errorf("without store.postgres: %d %q", code, stderr.String())
	}
}
