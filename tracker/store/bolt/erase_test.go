package bolt

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

// keysOf returns the keys of buckets that start with prefix.
func keysOf(t *testing.T, s *Store, prefix string, buckets ...[]byte) []string {
	t.Helper()
	s.caughtUp(context.Background()) // the hits answered are in bbolt
	var out []string
	if err := s.db.View(func(tx *bbolt.Tx) error {
		for _, b := range buckets {
			c := tx.Bucket(b).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if strings.HasPrefix(string(k), prefix) {
					out = append(out, string(b)+":"+string(k))
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// Erase leaves no key of the message behind in any bucket that holds its
// data; late reports and hits do not bring any back.
func TestErase_leavesNoKeys(t *testing.T) {
	s := testStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	now := time.Now()
	for _, e := range []store.Event{
		{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: now},
		{Type: store.EventClick, Message: m.ID, Link: 0, Class: classify.Human, At: now},
	} {
		if err := s.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Delivered, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	buckets := [][]byte{bucketEvents, bucketDeliveries, bucketRecipients, bucketClicks, bucketLinks, bucketMsgFeed}
	if len(keysOf(t, s, m.ID, buckets...)) == 0 {
		t.Fatal("nothing stored before Erase")
	}
	if err := s.Erase(ctx, "alice", m.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDelivery(ctx, m.ID, 0, store.Delivery{Status: delivery.Delivered, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "alice", m.ID); err == nil {
		t.Error("erased message still found")
	}
	if left := keysOf(t, s, m.ID, buckets...); len(left) != 0 {
		t.Errorf("keys left after Erase: %q", left)
	}
}

// The retention sweep deletes the click index with the events: an old
// click's time is not kept for the burst rule either.
func TestSweep_dropsClickIndex(t *testing.T) {
	s := testStore(t, Options{})
	ctx := context.Background()
	m := putTestMessage(t, s)
	if err := s.AddEvent(ctx, store.Event{Type: store.EventClick, Message: m.ID, Link: 0, Class: classify.Human, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if len(keysOf(t, s, m.ID, bucketClicks)) != 1 {
		t.Fatal("click not indexed")
	}
	const retention = 90 * 24 * time.Hour
	later := time.Now().Add(24 * time.Hour)
	if _, err := s.Sweep(ctx, later, retention); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(ctx, later.Add(retention+time.Hour), retention); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if left := keysOf(t, s, m.ID, bucketClicks); len(left) != 0 {
		t.Errorf("clicks indexed after sweep: %q", left)
	}
}
