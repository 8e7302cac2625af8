package storetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
)

// BenchMessages runs the sub-benchmarks of Browser.Messages that the web
// console's list needs fast, on an account the caller filled: first-page,
// deep-page (the page after the cursor deep, 1,000 pages in) and
// search-nothing (a search that matches no message, so it looks at all of
// them). Each reports, besides ns/op, the 99th percentile of its calls'
// latencies as p99-ms.
func BenchMessages(b *testing.B, br store.Browser, account, deep string) {
	for _, c := range []struct {
		name  string
		q     store.MessageQuery
		count int
	}{
		{"first-page", store.MessageQuery{}, store.DefaultMessagesLimit},
		{"deep-page", store.MessageQuery{After: deep}, store.DefaultMessagesLimit},
		{"search-nothing", store.MessageQuery{Search: "no message has this"}, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			p, err := br.Messages(ctx, account, c.q)
			if err != nil {
				b.Fatal(err)
			}
			if len(p.Messages) != c.count {
				b.Fatalf("%d messages, want %d", len(p.Messages), c.count)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := br.Messages(ctx, account, c.q); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			p99 := lat[(len(lat)*99+99)/100-1]
			b.ReportMetric(float64(p99)/float64(time.Millisecond), "p99-ms")
		})
	}
}
