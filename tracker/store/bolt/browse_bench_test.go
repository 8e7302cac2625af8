package bolt

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/storetest"
)

// benchMessages is the size of the account BenchmarkMessages lists.
const benchMessages = 100_000

// BenchmarkMessages lists an account of 100,000 messages (each delivered,
// every third opened), written in one transaction: see
// storetest.BenchMessages.
func BenchmarkMessages(b *testing.B) {
	s := testStore(b, Options{})
	at := func(i int) time.Time { return testAccepted.Add(time.Duration(i) * time.Second) }
	id := func(i int) string { return fmt.Sprintf("Q%015d", i) }
	err := s.db.Update(func(tx *bbolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		for i := range benchMessages {
			rec := storedMessage{ID: id(i), MessageID: id(i) + "@mail.example", Account: "alice", From: "alice@example.com",
				Subject: fmt.Sprintf("Quote %d for client %d", i, i), SubmitIP: "192.0.2.10", AcceptedAt: at(i), Mode: "all",
				Recipients: []storedRecipient{{Address: fmt.Sprintf("client-%d@example.com", i), Tracked: true}}}
			val, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := putMessage(tx, &rec, val); err != nil {
				return err
			}
			d, err := json.Marshal(storedDelivery{Status: delivery.Delivered, Attempts: 1, LastResponse: "250 ok", UpdatedAt: at(i).Add(time.Second)})
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketDeliveries).Put(deliveryKey(rec.ID, 0), d); err != nil {
				return err
			}
			if i%3 != 0 {
				continue
			}
			ev, err := encodeEvent(&storedEvent{Type: store.EventOpen, At: at(i).Add(time.Hour), Link: -1, IP: "198.51.100.7",
				UserAgent: "Mozilla/5.0", Client: "Firefox", Class: classify.Human})
			if err != nil {
				return err
			}
			seq, err := events.NextSequence()
			if err != nil {
				return err
			}
			if err := events.Put(eventKey(rec.ID, seq), ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	// 1,000 pages of 50 from the newest end after the 50,000th message.
	deep := benchMessages - 1000*store.DefaultMessagesLimit
	storetest.BenchMessages(b, s, "alice", store.EncodeMessageCursor(at(deep), id(deep)))
}
