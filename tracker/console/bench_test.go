package console

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/store/postgres"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

// benchMessages is how many messages the account of BenchmarkListPage
// has.
const benchMessages = 100_000

// benchMessage is message i of the benchmark's account: one a minute,
// one recipient, delivered.
func benchMessage(i int) store.Message {
	return store.Message{ID: fmt.Sprintf("B%011d", i), MessageID: fmt.Sprintf("%d@mail.example.com", i), Account: "alice",
		From: "alice@example.com", Subject: fmt.Sprintf("Quote %d for client %d", i, i), SubmitIP: "192.0.2.10",
		AcceptedAt: t0.Add(time.Duration(i) * time.Minute), Mode: "all",
		Recipients: []store.Recipient{{Address: fmt.Sprintf("client-%d@example.net", i), Tracked: true}}}
}

// fillBolt stores the messages with many writers at once, so that they
// share the store's group commits.
func fillBolt(b *testing.B) *bolt.Store {
	s, err := bolt.Open(filepath.Join(b.TempDir(), "tracking.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	const writers = 256
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < benchMessages; i += writers {
				m := benchMessage(i)
				if err := s.PutMessage(ctx, m); err != nil {
					errc <- err
					return
				}
				if err := s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Delivered, Attempts: 1, UpdatedAt: m.AcceptedAt}); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	return s
}

// fillPostgres starts a throwaway PostgreSQL and imports the messages in
// large transactions (migrate-store's path).
func fillPostgres(b *testing.B) *postgres.Store {
	_, dsn := pgtest.Own(b)
	ctx := context.Background()
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const batch = 5000
	for start := 0; start < benchMessages; start += batch {
		var ib postgres.ImportBatch
		for i := start; i < min(start+batch, benchMessages); i++ {
			m := benchMessage(i)
			ib.Messages = append(ib.Messages, &postgres.ImportMessage{Message: m,
				Deliveries: map[int]store.Delivery{0: {Status: delivery.Delivered, Attempts: 1, UpdatedAt: m.AcceptedAt}}})
		}
		if _, err := s.Import(ctx, &ib); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkListPage renders the messages list of an account with 100,000
// messages on each backend: the first page, the page 1,000 pages deep
// (by its keyset cursor) and a search that matches nothing; each reports
// its p50 and p99 (the goal: p99 under 50 ms).
//
//	go test ./tracker/console -run '^$' -bench ListPage -benchtime 200x
func BenchmarkListPage(b *testing.B) {
	for _, backend := range []struct {
		name string
		fill func(*testing.B) Store
	}{
		{"bolt", func(b *testing.B) Store { return fillBolt(b) }},
		{"postgres", func(b *testing.B) Store { return fillPostgres(b) }},
	} {
		b.Run(backend.name, func(b *testing.B) {
			st := backend.fill(b)
			h, err := New(Config{Accounts: testAccounts(), Secrets: [][]byte{secretA}, Now: func() time.Time { return t0 }}, st)
			if err != nil {
				b.Fatal(err)
			}
			keys := *h.keys.Load()
			cookie := &http.Cookie{Name: CookieName, Value: (&session{Account: "alice", ID: "bench", Expires: t0.Add(time.Hour).Unix(),
				Cred: (*h.accounts.Load())["alice"].cred}).encode(keys[0])}
			// The cursor of page 1,000, found as a person paging would.
			var after string
			for range 999 {
				p, err := st.Messages(context.Background(), "alice", store.MessageQuery{After: after})
				if err != nil || p.Next == "" {
					b.Fatalf("paging: %v", err)
				}
				after = p.Next
			}
			for _, c := range []struct{ name, query string }{
				{"first", ""}, {"page1000", "?after=" + after}, {"search-none", "?q=no+such+client"},
			} {
				b.Run(c.name, func(b *testing.B) {
					req := httptest.NewRequest(http.MethodGet, "/ui/"+c.query, nil)
					req.AddCookie(cookie)
					var took []time.Duration
					for b.Loop() {
						rec := httptest.NewRecorder()
						start := time.Now()
						h.ServeHTTP(rec, req)
						took = append(took, time.Since(start))
						if rec.Code != http.StatusOK {
							b.Fatalf("%d: %s", rec.Code, rec.Body)
						}
					}
					slices.Sort(took)
					b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(took[(len(took)*99)/100].Microseconds())/1000, "p99-ms")
				})
			}
		})
	}
}
