package bolt

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

var (
	scaleMessages = flag.Int("scale.messages", 100000, "messages loaded by BenchmarkStoreScale")
	scaleEvents   = flag.Int("scale.events", 1000000, "events loaded by BenchmarkStoreScale")
)

// BenchmarkStoreScale loads -scale.events events (default 1,000,000) over
// -scale.messages messages (default 100,000) through the collector's commit
// path, events interleaved across messages as hits arrive, then reports
// the file size per event and the latency of the message API query (and of
// a feed page) on the loaded store. It only runs with -bench:
//
//	go test ./tracker -run '^$' -bench StoreScale -benchtime 1x
//
// Loading skips fsync (the commit path is otherwise the same); the queries
// run on a store reopened from disk.
func BenchmarkStoreScale(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "scale.db")
	// No ReportDelay: the messages are put one after the other.
	s, err := Open(path, Options{MaxEventsPerRecipient: 1 << 30, ReportDelay: -1})
	if err != nil {
		b.Fatal(err)
	}
	nm, ne := *scaleMessages, *scaleEvents
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	s.db.NoSync = true
	base := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	for i := range nm {
		m := testMessage()
		m.ID = fmt.Sprintf("Q%011X", i)
		m.MessageID = fmt.Sprintf("%d.%x@mail.example.com", i, rng.Uint64())
		m.AcceptedAt = base.Add(time.Duration(i) * time.Second)
		if err := s.PutMessage(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	uas := []string{uaAppleMail, uaIOSMail, uaGmailProxy, uaOutlookDesktop, uaChrome, uaEdge, uaFirefox, uaSafari, uaThunderbird}
	batch := make([]*eventReq, 0, 1000)
	for i := range ne {
		id := fmt.Sprintf("Q%011X", rng.IntN(nm))
		e := store.Event{Type: store.EventOpen, At: base.Add(time.Duration(i) * 100 * time.Millisecond), Message: id, Recipient: 0, Link: -1,
			IP: fmt.Sprintf("203.0.%d.%d", rng.IntN(256), rng.IntN(256)), Class: classify.Human, Reasons: []string{classify.ReasonNoMachineSignals}}
		e.UserAgent = uas[rng.IntN(len(uas))]
		e.Client = classify.Classify(classify.Hit{UserAgent: e.UserAgent}).Client
		if rng.IntN(4) == 0 {
			e.Type, e.Link, e.URL = store.EventClick, rng.IntN(3), "https://example.com/quote?id="+id
		}
		val, err := json.Marshal(storedEvent{Type: e.Type, At: e.At, Recipient: e.Recipient, Link: e.Link, URL: e.URL,
			IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Class: e.Class, Reasons: e.Reasons})
		if err != nil {
			b.Fatal(err)
		}
		batch = append(batch, &eventReq{ev: e, value: val})
		if len(batch) == cap(batch) || i == ne-1 {
			if _, err := s.commit(batch, 0); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	s.db.NoSync = false
	if err := s.db.Sync(); err != nil {
		b.Fatal(err)
	}
	load := time.Since(start)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	// The file is preallocated ahead of use; count what bbolt uses.
	s, err = Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var used int64
	if err := s.db.View(func(tx *bbolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	var lookups, feeds []time.Duration
	for range b.N {
		for range 10000 {
			id := fmt.Sprintf("Q%011X", rng.IntN(nm))
			t0 := time.Now()
			v, err := s.Lookup(ctx, "alice", id)
			lookups = append(lookups, time.Since(t0))
			if err != nil || v.ID != id {
				b.Fatal(err)
			}
		}
		cursor := ""
		for range 200 {
			t0 := time.Now()
			p, err := s.Feed(ctx, "alice", cursor, 100)
			feeds = append(feeds, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			cursor = p.Next
		}
	}
	b.StopTimer()
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[int(float64(len(d)-1)*p)]) / 1e6
	}
	b.ReportMetric(float64(used)/float64(ne), "bytes/event")
	b.ReportMetric(float64(fi.Size())/float64(ne), "file-bytes/event")
	b.ReportMetric(pct(lookups, .5), "lookup-p50-ms")
	b.ReportMetric(pct(lookups, .99), "lookup-p99-ms")
	b.ReportMetric(pct(feeds, .99), "feed100-p99-ms")
	b.ReportMetric(load.Seconds(), "load-s")
}
