package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// Each DSN names a fresh, empty database of the package's cluster, on
// 127.0.0.1, where the test may create tables.
func TestFreshDatabases(t *testing.T) {
	ctx := context.Background()
	seen := map[string]bool{}
	for range 2 {
		dsn := DSN(t)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		var db, addr string
		var tables int
		if err := conn.QueryRow(ctx, `SELECT current_database(), inet_server_addr()::text,
			(SELECT count(*) FROM pg_tables WHERE schemaname = 'public')`).Scan(&db, &addr, &tables); err != nil {
			t.Fatal(err)
		}
		if seen[db] || tables != 0 || addr != "127.0.0.1/32" {
			t.Errorf("database %s (seen: %v), %d tables, server address %s", db, seen[db], tables, addr)
		}
		seen[db] = true
		if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
			t.Error(err)
		}
		conn.Close(ctx)
	}
}

// StopServer refuses connections until StartServer, which keeps the data.
func TestStopStartServer(t *testing.T) {
	ctx := context.Background()
	dsn := DSN(t)
	c := Current(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.StopServer(); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, dsn); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var x int
	if err := conn.QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 42 {
		t.Errorf("after a restart: %d, %v", x, err)
	}
}
