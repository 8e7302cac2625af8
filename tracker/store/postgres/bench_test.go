package postgres

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

// BenchmarkAddEvent measures AddEvent from 64×GOMAXPROCS concurrent
// callers, each hit durable before AddEvent returns: on PostgreSQL with
// fsync on (its own cluster), and on bbolt (its hit log, fdatasync'd), in
// the same run. Hits go to 1000 messages. It reports events/s and, for
// PostgreSQL, the mean batch.
func BenchmarkAddEvent(b *testing.B) {
	run := func(b *testing.B, s store.Store) {
		ctx := context.Background()
		for i := range 1000 {
			m := store.Message{ID: fmt.Sprintf("Q%04d", i), MessageID: fmt.Sprintf("%d@x", i), Account: "alice",
				AcceptedAt: time.Now(), Mode: "all", Recipients: []store.Recipient{{Address: "bob@example.net", Tracked: true}}}
			if err := s.PutMessage(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
		var n atomic.Int64
		b.SetParallelism(64)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				e := store.Event{Type: store.EventOpen, Message: fmt.Sprintf("Q%04d", i%1000), Link: -1,
					Class: classify.Human, At: time.Now(), IP: "198.51.100.7", UserAgent: "Mozilla/5.0"}
				if err := s.AddEvent(ctx, e); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	}
	b.Run("postgres", func(b *testing.B) {
		c, err := pgtest.StartDurable()
		if errors.Is(err, pgtest.ErrNotInstalled) {
			b.Skip(err.Error())
		}
		if err != nil {
			b.Fatal(err)
		}
		defer c.Stop()
		dsn, err := c.CreateDB(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		var batches atomic.Int64
		s, err := Open(context.Background(), dsn, Options{MaxConnections: 16})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		f := func() { batches.Add(1) }
		s.beforeCommit.Store(&f)
		run(b, s)
		b.ReportMetric(float64(b.N)/float64(max(batches.Load(), 1)), "events/batch")
	})
	b.Run("bolt", func(b *testing.B) {
		s, err := bolt.Open(filepath.Join(b.TempDir(), "tracking.db"), bolt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
}
