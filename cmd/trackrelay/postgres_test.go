package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

// closedPort returns a port of 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// store.postgres is checked at load without connecting: the file must be
// readable and hold a connection string of valid syntax, or
// TRACKRELAY_POSTGRES_DSN must; errors name the key or the variable, never
// the password; the pool size is not negative; retention is taken.
func TestConfig_postgres(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Nothing listens there: a check that connected would fail.
	good := write("good", fmt.Sprintf("postgres://u:s3cret@127.0.0.1:%d/trackrelay?sslmode=disable\n", closedPort(t)))
	bad := write("bad", "postgres://u:s3cret@127.0.0.1:notaport/trackrelay\n")
	for _, tc := range []struct {
		name    string
		file    string
		env     string
		maxConn int
		ret     Duration
		after   Duration
		want    string // "" valid
	}{
		{name: "unset"},
		{name: "valid, server down", file: good},
		{name: "malformed", file: bad, want: "store.postgres.dsn_file: postgres store: invalid DSN"},
		{name: "missing file", file: filepath.Join(dir, "nope"), want: "store.postgres.dsn_file: open"},
		{name: "empty file", file: write("empty", "\n"), want: "store.postgres.dsn_file: empty"},
		{name: "environment wins", file: filepath.Join(dir, "nope"), env: "postgres://u:s3cret@127.0.0.1:5432/db"},
		{name: "malformed environment", env: "postgres://u:s3cret@[::1/db", want: "TRACKRELAY_POSTGRES_DSN: postgres store: invalid DSN"},
		{name: "negative pool", file: good, maxConn: -1, want: "store.postgres.max_connections"},
		{name: "fallback bound", file: good, after: Duration(300 * time.Millisecond)},
		{name: "negative fallback bound", file: good, after: Duration(-time.Millisecond), want: "store.postgres.fallback_after"},
		{name: "fallback bound past the hit's wait", file: good, after: Duration(time.Second), want: "store.postgres.fallback_after"},
		{name: "retention", file: good, ret: Duration(90 * 24 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envPostgresDSN, tc.env)
			cfg := defaultConfig()
			cfg.Store.Postgres.DSNFile, cfg.Store.Postgres.MaxConnections = tc.file, tc.maxConn
			cfg.Tracking.Retention = tc.ret
			cfg.Store.Postgres.FallbackAfter = tc.after
			var msgs []string
			for _, err := range cfg.validate() {
				if strings.Contains(err.Error(), "postgres") || strings.Contains(err.Error(), "retention") {
					msgs = append(msgs, err.Error())
				}
			}
			all := strings.Join(msgs, "\n")
			if tc.want == "" && all != "" || tc.want != "" && !strings.Contains(all, tc.want) {
				t.Errorf("errors %q, want %q", all, tc.want)
			}
			if strings.Contains(all, "s3cret") {
				t.Errorf("errors %q show the password", all)
			}
		})
	}
}

// With store.postgres set, serve's store is PostgreSQL's, migrated at
// start; a server that does not answer fails the start with its cause.
func TestOpenStore_postgres(t *testing.T) {
	c, dsn := pgtest.Own(t)
	dir := t.TempDir()
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.Store.Postgres.DSNFile = filepath.Join(dir, "dsn")
	cfg.Store.Postgres.MaxConnections = 4
	os.WriteFile(cfg.Store.Postgres.DSNFile, []byte(dsn+"\n"), 0o600)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := openStore(cfg, newMetrics(), log)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.backend.(*postgres.Store); !ok {
		st.close()
		t.Fatalf("store is %T, want *postgres.Store", st.backend)
	}
	ctx := context.Background()
	m := store.Message{ID: "Q1", MessageID: "q1@x", Account: "alice", AcceptedAt: time.Now(), Mode: "all",
		Recipients: []store.Recipient{{Address: "bob@example.net", Tracked: true}}}
	if err := st.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	st.close()
	if _, err := os.Stat(filepath.Join(dir, "tracking.db")); !os.IsNotExist(err) {
		t.Errorf("a bbolt store was made in data_dir: %v", err)
	}
	// Another node finds the message.
	st2, err := openStore(cfg, newMetrics(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.close()
	if v, err := st2.Lookup(ctx, "alice", "<q1@x>"); err != nil || v.ID != "Q1" {
		t.Errorf("Lookup on the next start: %+v, %v", v, err)
	}
	// With the database there, /readyz is ready and not degraded.
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	code, b := getReadyz(t, newReadiness(st2, spool, nil))
	if hl := b.Checks["hit_log"]; code != 200 || !b.Ready || b.Degraded || !b.Checks["store"].OK || !b.Checks["database"].OK ||
		!hl.OK || hl.Backlog == nil || *hl.Backlog != 0 {
		t.Errorf("readyz with the database up: %d %+v", code, b)
	}

	// A database that answers with an error fails the start, naming it.
	unknown := defaultConfig()
	unknown.DataDir = dir
	unknown.Store.Postgres.DSNFile = filepath.Join(dir, "unknown")
	os.WriteFile(unknown.Store.Postgres.DSNFile, []byte(c.URL("nosuchdb")), 0o600)
	if _, err := openStore(unknown, newMetrics(), log); err == nil || !strings.Contains(err.Error(), `database "nosuchdb" does not exist`) {
		t.Errorf("openStore of an unknown database: %v, want an error naming it", err)
	}
}

// A node that starts while PostgreSQL is out of reach serves: its store
// opens, hits go to the hit log in data_dir, and /readyz says ready but
// degraded, naming the refused connection and the backlog.
func TestOpenStore_postgresUnreachable(t *testing.T) {
	dir := t.TempDir()
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.Store.Postgres.DSNFile = filepath.Join(dir, "down")
	os.WriteFile(cfg.Store.Postgres.DSNFile, []byte(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable", closedPort(t))), 0o600)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := openStore(cfg, newMetrics(), log)
	if err != nil {
		t.Fatalf("openStore with no server: %v", err)
	}
	defer st.close()
	e := store.Event{Type: store.EventOpen, Message: "Q1", Link: -1, Class: "human", At: time.Now()}
	if err := st.AddEvent(context.Background(), e); err != nil {
		t.Fatalf("AddEvent with no server: %v", err)
	}
	if logs, _ := filepath.Glob(filepath.Join(dir, postgresHitLogDir, "*.log")); len(logs) != 1 {
		t.Errorf("hit log files %q, want one", logs)
	}
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	code, b := getReadyz(t, newReadiness(st, spool, nil))
	db, hl := b.Checks["database"], b.Checks["hit_log"]
	if code != 200 || !b.Ready || !b.Degraded || !b.Checks["store"].OK || db.OK || !db.Degraded ||
		!strings.Contains(db.Error, "refused") || hl.OK || hl.Backlog == nil || *hl.Backlog != 1 || hl.Oldest == "" {
		t.Errorf("readyz with no server: %d %+v", code, b)
	}
}
