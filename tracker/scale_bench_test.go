package tracker

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/postgres"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

var (
	pgScaleMessages = flag.Int("pgscale.messages", 100000, "messages loaded by BenchmarkPostgresScale")
	pgScaleEvents   = flag.Int("pgscale.events", 1000000, "events loaded by BenchmarkPostgresScale")
)

// BenchmarkPostgresScale loads -pgscale.events events (default 1,000,000)
// over -pgscale.messages messages (default 100,000) into PostgreSQL
// through migrate-store's Import, each event with its feed entry, then
// reports the bytes per event of the event tables and the latency of the
// message API (GET /api/v1/messages/{ref} through the tracker's handler)
// for random messages. It only runs with -bench:
//
//	go test ./tracker -run '^$' -bench PostgresScale -benchtime 1x
//
// Events are imported in rounds, one event of every message a round, so
// that a message's events lie apart in the table as when hits arrive over
// days. The cluster runs with fsync off (pgtest.Start): the load is
// faster, the queries the same.
func BenchmarkPostgresScale(b *testing.B) {
	ctx := context.Background()
	_, dsn := pgtest.Own(b)
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	nm, ne := *pgScaleMessages, *pgScaleEvents
	rounds := (ne + nm - 1) / nm
	rng := rand.New(rand.NewPCG(1, 2))
	uas := []string{uaAppleMail, uaIOSMail, uaGmailProxy, uaOutlookDesktop, uaChrome, uaEdge, uaFirefox, uaSafari, uaThunderbird}
	base := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	msg := func(i int) store.Message {
		m := testMessage()
		m.ID = fmt.Sprintf("Q%011X", i)
		m.MessageID = fmt.Sprintf("%d.%x@mail.example.com", i, rng.Uint64())
		m.AcceptedAt = base.Add(time.Duration(i) * time.Second)
		return m
	}
	start := time.Now()
	var seq, loaded int64
	const perImport = 5000
	for r := range rounds {
		for first := 0; first < nm && loaded < int64(ne); first += perImport {
			batch := &postgres.ImportBatch{}
			for i := first; i < min(first+perImport, nm) && loaded < int64(ne); i++ {
				m := msg(i)
				im := &postgres.ImportMessage{Message: m, Links: []string{"https://example.com/quote?id=" + m.ID}}
				if r == 0 {
					im.Deliveries = map[int]store.Delivery{0: {Status: delivery.Delivered, Attempts: 1, LastResponse: "250 ok", UpdatedAt: m.AcceptedAt.Add(time.Second)}}
				}
				seq++
				loaded++
				e := store.Event{Type: store.EventOpen, At: m.AcceptedAt.Add(time.Duration(r+1) * time.Hour), Message: m.ID, Recipient: 0, Link: -1,
					IP: fmt.Sprintf("203.0.%d.%d", rng.IntN(256), rng.IntN(256)), Class: classify.Human, Reasons: []string{classify.ReasonNoMachineSignals}}
				e.UserAgent = uas[rng.IntN(len(uas))]
				e.Client = classify.Classify(classify.Hit{UserAgent: e.UserAgent}).Client
				if rng.IntN(4) == 0 {
					e.Type, e.Link, e.URL = store.EventClick, 0, im.Links[0]
				}
				im.Events = []postgres.ImportEvent{{Seq: seq, Event: e}}
				batch.Messages = append(batch.Messages, im)
				batch.Feed = append(batch.Feed, &postgres.ImportFeedEntry{Seq: seq, Account: m.Account, Kind: e.Type, Message: m.ID,
					Recipient: 0, Event: seq, At: e.At, Class: e.Class})
			}
			if _, err := s.Import(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	load := time.Since(start)

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		b.Fatal(err)
	}
	var events, eventBytes, feedBytes int64
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), pg_total_relation_size('events'),
		pg_total_relation_size('feed')`).Scan(&events, &eventBytes, &feedBytes); err != nil {
		b.Fatal(err)
	}
	if events != int64(ne) {
		b.Fatalf("%d events stored, want %d", events, ne)
	}

	h := NewHandler(Config{BaseURL: "http://t.example", Accounts: []Account{{Name: "alice", APIKeySHA256: keySum(aliceKey)}}},
		testKeyring(b), s)
	b.ResetTimer()
	var lat []time.Duration
	for range b.N {
		for range 10000 {
			id := fmt.Sprintf("Q%011X", rng.IntN(nm))
			req := httptest.NewRequest(http.MethodGet, "/api/v1/messages/"+id, nil)
			req.Header.Set("Authorization", "Bearer "+aliceKey)
			w := httptest.NewRecorder()
			t0 := time.Now()
			h.ServeHTTP(w, req)
			lat = append(lat, time.Since(t0))
			if w.Code != http.StatusOK {
				b.Fatalf("GET %s: %d %s", id, w.Code, w.Body)
			}
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)]) / 1e6 }
	b.ReportMetric(float64(eventBytes)/float64(ne), "bytes/event")
	b.ReportMetric(float64(eventBytes+feedBytes)/float64(ne), "with-feed-bytes/event")
	b.ReportMetric(pct(.5), "api-p50-ms")
	b.ReportMetric(pct(.99), "api-p99-ms")
	b.ReportMetric(load.Seconds(), "load-s")
}
