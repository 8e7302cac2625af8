package relay

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestGroupCommit_sharesCommits(t *testing.T) {
	testGroupCommit(t, false)
}

func TestGroupCommit_isolatesFailures(t *testing.T) {
	testGroupCommit(t, true)
}

func testGroupCommit(t *testing.T, failSome bool) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "g.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err })
	g := &groupCommitter{db: db}
	const n = 200
	bad := errors.New("bad write")
	var mu sync.Mutex
	txs := map[int]bool{}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.update(func(tx *bolt.Tx) error {
				mu.Lock()
				txs[tx.ID()] = true
				mu.Unlock()
				if failSome && i%50 == 7 {
					return bad
				}
				return tx.Bucket([]byte("b")).Put([]byte(fmt.Sprint(i)), []byte("v"))
			})
		}()
	}
	wg.Wait()
	stored := 0
	db.View(func(tx *bolt.Tx) error { stored = tx.Bucket([]byte("b")).Stats().KeyN; return nil })
	for i, err := range errs {
		if (failSome && i%50 == 7) != errors.Is(err, bad) {
			t.Errorf("write %d: err %v", i, err)
		}
	}
	want := n
	if failSome {
		want -= 4
	}
	if stored != want {
		t.Errorf("%d keys stored, want %d", stored, want)
	}
	if !failSome && len(txs) > n/2 {
		t.Errorf("%d write transactions for %d writes: no grouping", len(txs), n)
	}
	t.Logf("%d writes in %d transactions", n, len(txs))
}
