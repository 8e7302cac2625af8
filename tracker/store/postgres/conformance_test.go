package postgres

import (
	"context"
	"os"
	"testing"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
	"github.com/trackrelay/trackrelay/tracker/store/storetest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		// TestFallbackKill9's child: its database is out of reach.
		os.Exit(m.Run())
	}
	os.Exit(pgtest.Main(m))
}

// testStore opens a store on dsn, closed when t ends.
func testStore(t *testing.T, dsn string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The PostgreSQL backend passes the store conformance suite, each case on
// a fresh database.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, o storetest.Options) store.Store {
		return testStore(t, pgtest.DSN(t), Options{MaxEventsPerRecipient: o.MaxEventsPerRecipient, WebhookAccounts: o.WebhookAccounts})
	})
}
