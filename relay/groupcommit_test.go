package relay

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/trackrelay/trackrelay/internal/guard"
)

func TestGroupCommit_sharesCommits(t *testing.T) {
	testGroupCommit(t, false)
}

func TestGroupCommit_isolatesFailures(t *testing.T) {
	testGroupCommit(t, true)
}

// openTestDB opens a bbolt file of the test's own with one bucket, "b".
func openTestDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "g.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return db
}

func testGroupCommit(t *testing.T, failSome bool) {
	db := openTestDB(t)
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
			errs[i] = g.update("", func(tx *bolt.Tx) error {
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

// A record of a new file waits for a durable directory: if the directory
// cannot be synced it fails, and the group's other writes go on.
func TestGroupCommit_newFileNeedsItsDirectory(t *testing.T) {
	db := openTestDB(t)
	put := func(k string) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte(k), []byte("v")) }
	}
	g := &groupCommitter{db: db, dir: t.TempDir()}
	if err := g.updateNewFile("", put("new")); err != nil {
		t.Fatalf("record of a new file: %v", err)
	}
	g.dir = filepath.Join(t.TempDir(), "gone")
	// Both in one group: the committer looks busy while they queue. (Its
	// loop from the first write may still be on its way out: wait for it.)
	for {
		g.mu.Lock()
		idle := !g.running
		if idle {
			g.running = true
		}
		g.mu.Unlock()
		if idle {
			break
		}
		time.Sleep(time.Millisecond)
	}
	errs := make(chan error, 2)
	go func() { errs <- g.updateNewFile("", put("lost")) }()
	go func() { errs <- g.update("", put("other")) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		n := len(g.pending)
		g.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want 2", n)
		}
	}
	go g.loop()
	var failed, ok int
	for range 2 {
		if err := <-errs; err != nil {
			failed++
		} else {
			ok++
		}
	}
	if failed != 1 || ok != 1 {
		t.Errorf("%d failed, %d ok; want the new file's record alone to fail", failed, ok)
	}
	db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		if b.Get([]byte("lost")) != nil || b.Get([]byte("other")) == nil || b.Get([]byte("new")) == nil {
			t.Error("wrong records stored")
		}
		return nil
	})
}

// A lazy write (a delivery outcome) waits for the next eager write (an
// accepted message) and shares its commit; alone, it commits after the
// delay, not never.
func TestGroupCommit_lazyWritesRideAlong(t *testing.T) {
	db := openTestDB(t)
	var mu sync.Mutex
	txs := map[int]int{} // transaction id -> writes
	put := func(k string) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			mu.Lock()
			txs[tx.ID()]++
			mu.Unlock()
			return tx.Bucket([]byte("b")).Put([]byte(k), []byte("v"))
		}
	}
	g := &groupCommitter{db: db, lazyDelay: time.Hour}
	const lazy = 5
	done := make(chan error, lazy)
	for i := range lazy {
		go func() { done <- g.updateLazy("", put(fmt.Sprint("lazy", i))) }()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		n, running := len(g.pending), g.running
		g.mu.Unlock()
		if running {
			t.Fatal("a lazy write started a commit of its own")
		}
		if n == lazy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d lazy writes queued, want %d", n, lazy)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("a lazy write returned (%v) before any commit", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := g.update("", put("eager")); err != nil {
		t.Fatal(err)
	}
	for range lazy {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if len(txs) != 1 {
		t.Errorf("%d writes in %d transactions (%v), want one shared commit", lazy+1, len(txs), txs)
	}

	// Alone, a lazy write commits once the delay is over. (The loop of the
	// commit above may still be on its way out: a write would join it.)
	for {
		g.mu.Lock()
		running := g.running
		g.mu.Unlock()
		if !running {
			break
		}
		time.Sleep(time.Millisecond)
	}
	g.lazyDelay = 20 * time.Millisecond
	start := time.Now()
	if err := g.updateLazy("", put("alone")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < g.lazyDelay {
		t.Errorf("a lone lazy write committed after %v, before its delay of %v", d, g.lazyDelay)
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("b")).Stats().KeyN != lazy+2 {
			t.Error("writes missing")
		}
		return nil
	})
}

// Every write of a group whose commit panics fails, none is written, and
// the next write commits.
func TestGroupCommit_panicFailsEveryWriteOfItsGroup(t *testing.T) {
	db := openTestDB(t)
	put := func(k string) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte(k), []byte("v")) }
	}
	g := &groupCommitter{db: db, log: testLogger(t)}
	defer guard.Inject(func(c, item string) bool { return c == guard.GroupCommit && item == "bad" })()
	// The three writes in one group: the committer looks busy while they queue.
	g.running = true
	errs := make(chan error, 3)
	for i, k := range []string{"first", "bad", "last"} {
		go func() { errs <- g.update(k, put(k)) }()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			g.mu.Lock()
			n := len(g.pending)
			g.mu.Unlock()
			if n == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("write %s never queued", k)
			}
		}
	}
	go g.loop()
	for range 3 {
		if err := <-errs; !errors.Is(err, errCommitPanic) {
			t.Errorf("write of a group whose commit panicked: %v", err)
		}
	}
	if err := g.update("next", put("next")); err != nil {
		t.Fatalf("the write after: %v", err)
	}
	db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for _, k := range []string{"first", "bad", "last"} {
			if b.Get([]byte(k)) != nil {
				t.Errorf("%s written by a commit that panicked", k)
			}
		}
		if b.Get([]byte("next")) == nil {
			t.Error("the write after the panic is missing")
		}
		return nil
	})
}
