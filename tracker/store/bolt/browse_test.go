package bolt

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/tracker/store"
)

// A store written before the browse index existed gets it at Open: its
// messages are listed and searchable, and the index is built only once.
func TestBrowseIndexBuiltAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tracker.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, id := range []string{"Q1", "Q2", "Q3"} {
		m := store.Message{ID: id, Account: "alice", Subject: "Subject " + id, AcceptedAt: testAccepted.Add(time.Duration(i) * time.Minute),
			Mode: "all", Recipients: []store.Recipient{{Address: "bob@example.net", Tracked: true}}}
		if err := s.PutMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Take the store back to the layout before the index.
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bucketBrowse); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Delete(metaBrowseKey)
	})
	if cerr := db.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Messages(ctx, "alice", store.MessageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if got := listIDs(p); !slices.Equal(got, []string{"Q3", "Q2", "Q1"}) {
		t.Errorf("listed %v after the index was built", got)
	}
	p, err = s.Messages(ctx, "alice", store.MessageQuery{Search: "subject q2"})
	if err != nil {
		t.Fatal(err)
	}
	if got := listIDs(p); !slices.Equal(got, []string{"Q2"}) {
		t.Errorf("search listed %v", got)
	}
	if err := s.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(metaBrowseKey) == nil {
			t.Error("the index is not marked built")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func listIDs(p *store.MessagePage) []string {
	var ids []string
	for _, m := range p.Messages {
		ids = append(ids, m.ID)
	}
	return ids
}
