package tracker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
)

// nopStore records nothing: the baseline a recording server is measured
// against.
type nopStore struct{ failingStore }

func (nopStore) AddEvent(context.Context, store.Event) error { return nil }
func (nopStore) Message(context.Context, string) (*store.Message, error) {
	m := testMessage()
	return &m, nil
}

func benchPixel(b *testing.B, store store.Store) {
	keys := testKeyring(b)
	if err := store.PutMessage(context.Background(), testMessage()); err != nil {
		b.Fatal(err)
	}
	h := NewHandler(Config{BaseURL: "http://t.example"}, keys, store)
	path := "/o/" + keys.OpenToken(testMessage().ID, 0) + ".gif"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.RemoteAddr = "203.0.113.9:4711"
			req.Header.Set("User-Agent", uaAppleMail)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
}

// BenchmarkPixel serves the open pixel with every hit committed to a real
// bbolt file (group commit, fsync per batch).
func BenchmarkPixel(b *testing.B) {
	st := testStore(b, bolt.Options{})
	benchPixel(b, st)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/float64(max(st.Commits(), 1)), "events/commit")
}

// BenchmarkPixelNoRecord is the same without recording.
func BenchmarkPixelNoRecord(b *testing.B) {
	benchPixel(b, nopStore{})
}
