package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The schema is the ordered SQL files of migrations/, NNNN_name.sql, each
// applied once in its own transaction and recorded in schema_version.
// Migrations are additive (new tables, columns, indexes), so that nodes of
// an older version keep running on a migrated database during a rolling
// upgrade.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLock is the advisory lock (two-key form, apart from the
// single-key locks of messages) that serializes migrations, so that nodes
// starting together on an empty database set it up once.
const migrationLockA, migrationLockB = 0x74726b72, 1

// ErrSchemaNewer is returned by Open for a database migrated by a newer
// trackrelay than this one.
var ErrSchemaNewer = errors.New("postgres store: database schema is newer than this trackrelay knows")

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: versions must be 1, 2, 3, ...", m.name)
		}
	}
	return out, nil
}

// SchemaVersion is the schema version this build migrates databases to.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		panic(err)
	}
	return len(ms)
}

// migrate brings the database to the latest schema under the migration
// lock, and refuses one whose schema is newer than this build's. It
// reports whether messages have their trigram search index (searchIndex).
func migrate(ctx context.Context, pool *pgxpool.Pool) (indexed bool, err error) {
	ms, err := migrations()
	if err != nil {
		return false, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", migrationLockA, migrationLockB); err != nil {
		return false, fmt.Errorf("take the migration lock: %w", err)
	}
	defer func() {
		if _, uerr := conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1, $2)", migrationLockA, migrationLockB); uerr != nil {
			// The session keeps the lock: do not give it back to the pool.
			conn.Conn().Close(context.Background())
			err = errors.Join(err, uerr)
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    int PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return false, fmt.Errorf("create schema_version: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&current); err != nil {
		return false, fmt.Errorf("read schema_version: %w", err)
	}
	if current > len(ms) {
		return false, fmt.Errorf("%w: the database is at version %d, this trackrelay knows up to version %d; upgrade trackrelay",
			ErrSchemaNewer, current, len(ms))
	}
	for _, m := range ms[current:] {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return false, err
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			tx.Rollback(ctx)
			return false, fmt.Errorf("migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_version (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			tx.Rollback(ctx)
			return false, fmt.Errorf("migration %s: %w", m.name, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return false, fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return searchIndex(ctx, conn.Conn()), nil
}

// searchIndex makes, when missing, the trigram index (pg_trgm's GIN) on
// messages.search that a console search (search LIKE '%...%') uses
// instead of reading every message of the account. pg_trgm is a trusted
// extension since PostgreSQL 13: a role that may create objects in the
// database creates it. When it cannot (the extension is not installed,
// or the role may not), searching still works, on the account's messages
// in order, and this returns false. On a database with many messages the
// first start after the upgrade builds the index, holding writes to
// messages meanwhile (the relays keep accepting: their spools wait).
// Without fastupdate, each message goes into the index as it is stored,
// not into a pending list that every search would read until a vacuum (and
// that makes the planner pass the index by).
func searchIndex(ctx context.Context, conn *pgx.Conn) bool {
	// Made once: looking first spares every later start the table lock of
	// CREATE INDEX.
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('messages_search') IS NOT NULL").Scan(&exists); err == nil && exists {
		return true
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_trgm"); err != nil {
		return false
	}
	if _, err := tx.Exec(ctx, "CREATE INDEX IF NOT EXISTS messages_search ON messages USING gin (search gin_trgm_ops) WITH (fastupdate = off)"); err != nil {
		return false
	}
	return tx.Commit(ctx) == nil
}
