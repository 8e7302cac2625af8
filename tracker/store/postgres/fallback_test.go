package postgres

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/hitlog"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

// childEnv names, in a re-executed test binary, the hit log directory of
// TestFallbackKill9's child; childDSNEnv its database.
const childEnv, childDSNEnv = "TRACKRELAY_TEST_HITLOG_CHILD", "TRACKRELAY_TEST_HITLOG_CHILD_DSN"

// fallbackOptions are the options of a store with a hit log in dir, with
// short waits, metrics on reg, and alice's webhooks.
func fallbackOptions(dir string, reg prometheus.Registerer) Options {
	return Options{HitLogDir: dir, FallbackAfter: 100 * time.Millisecond, ProbeInterval: 20 * time.Millisecond,
		WebhookAccounts: []string{"alice"}, MaxEventsPerRecipient: 100000, Metrics: store.NewMetrics(reg)}
}

// hitWith is a human open of message id whose user agent names it.
func hitWith(id, ua string) store.Event {
	e := open(testAccepted.Add(time.Hour), id)
	e.UserAgent = ua
	return e
}

// closedDSN is a connection URI of 127.0.0.1 where nothing listens.
func closedDSN(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable&connect_timeout=2", port)
}

// storeMetric is the value of the metric name (with label value lv, if
// any) gathered from reg.
func storeMetric(t *testing.T, reg *prometheus.Registry, name, lv string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if lv != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != lv) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{%s}", name, lv)
	return 0
}

// waitShipped waits until s's hit log is empty and the database takes
// commits again.
func waitShipped(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		h := s.Health(context.Background())
		if h.Backlog == 0 && h.Database == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hit log not shipped: %d hits left, database %v", h.Backlog, h.Database)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ledger is what the database holds of a message's opens.
type ledger struct {
	byUA           map[string]int // events by user agent
	events, hits   int            // rows, distinct hit ids
	feed, outboxed int            // open entries in the feed; of those, in the outbox
}

func readLedger(t *testing.T, dsn, message string) ledger {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	l := ledger{byUA: map[string]int{}}
	rows, _ := conn.Query(ctx, "SELECT user_agent FROM events WHERE message = $1", message)
	for rows.Next() {
		var ua string
		if err := rows.Scan(&ua); err != nil {
			t.Fatal(err)
		}
		l.byUA[ua]++
		l.events++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	err = conn.QueryRow(ctx, `SELECT (SELECT count(DISTINCT hit) FROM events WHERE message = $1),
		(SELECT count(*) FROM feed WHERE message = $1 AND kind = 'open'),
		(SELECT count(*) FROM outbox o JOIN feed f ON f.seq = o.entry WHERE f.message = $1 AND f.kind = 'open')`,
		message).Scan(&l.hits, &l.feed, &l.outboxed)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// checkLedger checks that every answered hit is stored once, with one
// feed entry and one outbox row each, and nothing else was stored twice.
func checkLedger(t *testing.T, l ledger, answered []string) {
	t.Helper()
	for _, ua := range answered {
		if n := l.byUA[ua]; n != 1 {
			t.Errorf("answered hit %s stored %d times", ua, n)
		}
	}
	for ua, n := range l.byUA {
		if n != 1 {
			t.Errorf("hit %s stored %d times", ua, n)
		}
	}
	if l.hits != l.events || l.feed != l.events || l.outboxed != l.events {
		t.Errorf("%d events, %d hit ids, %d feed entries, %d outbox rows: want one each per event", l.events, l.hits, l.feed, l.outboxed)
	}
}

// PostgreSQL stops while hits flow, and starts again: every hit answered
// before, during and after the outage is stored once, with its feed entry
// and outbox row; hits during it took the fallback, and the log was
// shipped.
func TestFallbackOutage(t *testing.T) {
	c, dsn := pgtest.Own(t)
	reg := prometheus.NewRegistry()
	s := testStore(t, dsn, fallbackOptions(t.TempDir(), reg))
	putMessage(t, s, "Q1", 1)

	var mu sync.Mutex
	var answered []string
	var failed []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ua := fmt.Sprintf("ua-%d-%d", w, i)
				err := s.AddEvent(context.Background(), hitWith("Q1", ua))
				mu.Lock()
				if err == nil {
					answered = append(answered, ua)
				} else {
					failed = append(failed, err)
				}
				mu.Unlock()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(answered)
	}
	waitFor := func(n int) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for count() < n {
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%d hits answered, waiting for %d; %d failed (%v)", len(answered), n, len(failed), errors.Join(failed[:min(len(failed), 1)]...))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(100)
	if err := c.StopServer(); err != nil {
		t.Fatal(err)
	}
	before := count()
	waitFor(before + 300)
	h := s.Health(context.Background())
	if h.Database == nil || h.Backlog == 0 {
		t.Errorf("during the outage: database %v, backlog %d; want an error and a backlog", h.Database, h.Backlog)
	}
	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	waitFor(count() + 100)
	close(stop)
	wg.Wait()
	waitShipped(t, s)

	if len(failed) > 0 {
		t.Errorf("%d hits not answered, first: %v", len(failed), failed[0])
	}
	l := readLedger(t, dsn, "Q1")
	checkLedger(t, l, answered)
	if l.events < len(answered) {
		t.Errorf("%d events stored, %d answered", l.events, len(answered))
	}
	fell := storeMetric(t, reg, "trackrelay_store_fallback_hits_total", CauseError) +
		storeMetric(t, reg, "trackrelay_store_fallback_hits_total", CauseUnreachable) +
		storeMetric(t, reg, "trackrelay_store_fallback_hits_total", CauseSlow)
	if fell < 300 {
		t.Errorf("%v hits took the fallback, want at least the 300 answered during the outage", fell)
	}
	// After the first failed commit, hits went to the log without waiting
	// for the database.
	if n := storeMetric(t, reg, "trackrelay_store_fallback_hits_total", CauseUnreachable); n == 0 {
		t.Error("no hit went straight to the hit log during the outage")
	}
	if shipped := storeMetric(t, reg, "trackrelay_store_hitlog_shipped_total", ""); shipped < fell {
		t.Errorf("%v hits shipped, %v took the fallback", shipped, fell)
	}
	if up := storeMetric(t, reg, "trackrelay_store_database_up", ""); up != 1 {
		t.Errorf("database_up %v after the outage", up)
	}
	t.Logf("%d hits answered, %v through the hit log", len(answered), fell)
}

// A commit slower than the bound (its batch waits for a message's lock
// that another session holds) answers the hit from the hit log; once the
// lock is released the hit is stored once, by the late commit or the
// shipper, with one feed entry.
func TestFallbackSlowCommit(t *testing.T) {
	dsn := pgtest.DSN(t)
	reg := prometheus.NewRegistry()
	s := testStore(t, dsn, fallbackOptions(t.TempDir(), reg))
	putMessage(t, s, "Q1", 1)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey("Q1")); err != nil {
		t.Fatal(err)
	}
	// Far longer than the bound: without the fallback it waits for the lock.
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := s.AddEvent(actx, hitWith("Q1", "slow")); err != nil {
		t.Fatalf("AddEvent while its commit waits: %v", err)
	}
	if got := storeMetric(t, reg, "trackrelay_store_fallback_hits_total", CauseSlow); got != 1 {
		t.Errorf("fallback{cause=slow} = %v, want 1", got)
	}
	if l := readLedger(t, dsn, "Q1"); l.events != 0 {
		t.Fatalf("%d events stored while the lock is held", l.events)
	}
	if h := s.Health(ctx); h.Backlog != 1 {
		t.Errorf("backlog %d while the lock is held, want 1", h.Backlog)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", lockKey("Q1")); err != nil {
		t.Fatal(err)
	}
	waitShipped(t, s)
	checkLedger(t, readLedger(t, dsn, "Q1"), []string{"slow"})
	// The database was there all along: the circuit stayed closed.
	if err := s.AddEvent(ctx, hitWith("Q1", "after")); err != nil {
		t.Fatal(err)
	}
	if got := storeMetric(t, reg, "trackrelay_store_fallback_hits_total", CauseUnreachable); got != 0 {
		t.Errorf("fallback{cause=unreachable} = %v, want 0", got)
	}
	checkLedger(t, readLedger(t, dsn, "Q1"), []string{"slow", "after"})
}

// setReadOnly makes the database of dsn read-only (or writable again) for
// new sessions, and ends its other sessions so that the store's pool
// reconnects.
func setReadOnly(t *testing.T, dsn string, on bool) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	ctx := context.Background()
	u.Path = "/postgres"
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	q := "ALTER DATABASE " + pgx.Identifier{db}.Sanitize() + " RESET default_transaction_read_only"
	if on {
		q = "ALTER DATABASE " + pgx.Identifier{db}.Sanitize() + " SET default_transaction_read_only = on"
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db); err != nil {
		t.Fatal(err)
	}
}

// A read-only database: hits are answered from the hit log, the store's
// health names the cause, and once the database is writable again every
// hit is stored once.
func TestFallbackReadOnly(t *testing.T) {
	dsn := pgtest.DSN(t)
	reg := prometheus.NewRegistry()
	s := testStore(t, dsn, fallbackOptions(t.TempDir(), reg))
	putMessage(t, s, "Q1", 1)
	ctx := context.Background()
	setReadOnly(t, dsn, true)
	var answered []string
	for i := range 20 {
		ua := fmt.Sprintf("ro-%d", i)
		if err := s.AddEvent(ctx, hitWith("Q1", ua)); err != nil {
			t.Fatalf("AddEvent on a read-only database: %v", err)
		}
		answered = append(answered, ua)
	}
	// The shipper's next try meets the read-only database.
	deadline := time.Now().Add(time.Minute)
	for {
		h := s.Health(ctx)
		if h.Database != nil && strings.Contains(h.Database.Error(), "read-only") && h.Backlog == len(answered) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health on a read-only database: %v, backlog %d; want an error naming read-only, and a backlog of %d",
				h.Database, h.Backlog, len(answered))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l := readLedger(t, dsn, "Q1"); l.events != 0 {
		t.Fatalf("%d events stored in a read-only database", l.events)
	}
	setReadOnly(t, dsn, false)
	waitShipped(t, s)
	checkLedger(t, readLedger(t, dsn, "Q1"), answered)
	if l := readLedger(t, dsn, "Q1"); l.events != len(answered) {
		t.Errorf("%d events, want %d", l.events, len(answered))
	}
}

// Open with the database out of reach: with a hit log the store opens,
// answers hits from the log and says why the database is missing; without
// one, Open fails naming the refused connection. A database that answers
// with an error (here: unknown) fails Open either way.
func TestOpenUnreachable(t *testing.T) {
	ctx := context.Background()
	down := closedDSN(t)
	if _, err := Open(ctx, down, Options{}); err == nil || !strings.Contains(err.Error(), "connect") || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Open without a hit log: %v, want an error naming the refused connection", err)
	}
	s := testStore(t, down, fallbackOptions(t.TempDir(), nil))
	if err := s.AddEvent(ctx, hitWith("Q1", "a")); err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	h := s.Health(ctx)
	if h.Database == nil || h.Backlog != 1 {
		t.Errorf("health: %v, backlog %d; want an error and 1", h.Database, h.Backlog)
	}
	if _, err := s.Message(ctx, "Q1"); err == nil {
		t.Error("Message answered without a database")
	}

	u, _ := url.Parse(pgtest.DSN(t))
	u.Path = "/nosuchdb"
	_, err := Open(ctx, u.String(), fallbackOptions(t.TempDir(), nil))
	if err == nil || !strings.Contains(err.Error(), "nosuchdb") {
		t.Errorf("Open of an unknown database with a hit log: %v, want an error naming it", err)
	}
}

// The child of TestFallbackKill9: a store whose database is unreachable
// logs hits and prints each answered one, until it is killed.
func TestFallbackKill9Child(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("run by TestFallbackKill9")
	}
	s, err := Open(context.Background(), os.Getenv(childDSNEnv), fallbackOptions(dir, nil))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var out sync.Mutex
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				ua := fmt.Sprintf("k-%d-%d", w, i)
				if err := s.AddEvent(context.Background(), hitWith("Q1", ua)); err != nil {
					fmt.Fprintln(os.Stderr, "AddEvent:", err)
					return
				}
				out.Lock()
				fmt.Fprintln(os.Stdout, "answered", ua)
				out.Unlock()
			}
		}()
	}
	wg.Wait()
}

// A node killed with SIGKILL while logging hits (its database out of
// reach) and started again ships every hit it answered, once.
func TestFallbackKill9(t *testing.T) {
	dsn := pgtest.DSN(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFallbackKill9Child$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, childDSNEnv+"="+closedDSN(t))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var answered []string
	sc := bufio.NewScanner(stdout)
	for len(answered) < 500 && sc.Scan() {
		if ua, ok := strings.CutPrefix(sc.Text(), "answered "); ok {
			answered = append(answered, ua)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// What it printed before it died was answered too.
	for sc.Scan() {
		if ua, ok := strings.CutPrefix(sc.Text(), "answered "); ok {
			answered = append(answered, ua)
		}
	}
	cmd.Wait()
	if len(answered) < 500 {
		t.Fatalf("the child answered %d hits before it ended", len(answered))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(files) == 0 {
		t.Fatal("the child left no hit log")
	}

	// The message is there before the node starts again.
	putMessage(t, testStore(t, dsn, Options{}), "Q1", 1)
	s := testStore(t, dsn, fallbackOptions(dir, nil))
	waitShipped(t, s)
	l := readLedger(t, dsn, "Q1")
	checkLedger(t, l, answered)
	t.Logf("%d hits answered by the killed node, %d shipped after its restart", len(answered), l.events)
}

// A torn last record of the hit log (a crash in the middle of an append,
// never answered) is skipped: the records before it are shipped.
func TestFallbackTornRecord(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, closedDSN(t), fallbackOptions(dir, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, ua := range []string{"t1", "t2", "t3"} {
		if err := s.AddEvent(ctx, hitWith("Q1", ua)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(files) != 1 {
		t.Fatalf("segment files %q, want one", files)
	}
	// The last record loses its last bytes.
	last := files[0]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	end := 0
	if _, err := hitlog.ReadRun(bytesReaderAt(b), 0, int64(len(b)), func(_ uint64, p []byte) error {
		end += hitlog.HeaderSize + len(p)
		return nil
	}); err != nil || end == 0 {
		t.Fatalf("reading %s: %d bytes, %v", last, end, err)
	}
	copy(b[end-4:end], []byte{0, 0, 0, 0})
	if err := os.WriteFile(last, b, 0o600); err != nil {
		t.Fatal(err)
	}

	dsn := pgtest.DSN(t)
	putMessage(t, testStore(t, dsn, Options{}), "Q1", 1)
	s2 := testStore(t, dsn, fallbackOptions(dir, nil))
	waitShipped(t, s2)
	l := readLedger(t, dsn, "Q1")
	checkLedger(t, l, []string{"t1", "t2"})
	if l.events != 2 {
		t.Errorf("%d events shipped, want 2 (the torn one skipped)", l.events)
	}
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, errors.New("EOF")
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, errors.New("EOF")
	}
	return n, nil
}

// Hits logged for a message that is erased before they are shipped are not
// stored: the shipper meets its tombstone as a direct commit would.
func TestFallbackErasedBeforeShipping(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, closedDSN(t), fallbackOptions(dir, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, ua := range []string{"e1", "e2"} {
		if err := s.AddEvent(ctx, hitWith("Q1", ua)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddEvent(ctx, hitWith("Q2", "kept")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.DSN(t)
	base := testStore(t, dsn, Options{})
	putMessage(t, base, "Q1", 1)
	putMessage(t, base, "Q2", 1)
	if err := base.Erase(ctx, "alice", "Q1"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s2 := testStore(t, dsn, fallbackOptions(dir, reg))
	waitShipped(t, s2)
	if l := readLedger(t, dsn, "Q1"); l.events != 0 || l.feed != 0 {
		t.Errorf("erased message: %d events, %d feed entries shipped", l.events, l.feed)
	}
	checkLedger(t, readLedger(t, dsn, "Q2"), []string{"kept"})
	if n := storeMetric(t, reg, "trackrelay_store_events_unlisted_total", store.UnlistedErased); n != 2 {
		t.Errorf("events_unlisted_total{reason=erased} = %v, want 2", n)
	}
}

// A database that accepts connections and never answers (a hung server, a
// network partition): the store opens with its hit log, answers hits from
// it, and the reads of the hit path give up after the bound instead of
// waiting for as long as their caller lets them.
func TestFallbackSilentDatabase(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns sync.WaitGroup
	held := make(chan net.Conn, 64)
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held <- c // accepted, never answered
		}
	}()
	defer func() {
		l.Close()
		conns.Wait()
		close(held)
		for c := range held {
			c.Close()
		}
	}()
	opts := fallbackOptions(t.TempDir(), nil)
	opts.ConnectTimeout = 200 * time.Millisecond
	dsn := fmt.Sprintf("postgres://postgres@%s/x?sslmode=disable", l.Addr())
	s := testStore(t, dsn, opts)
	ctx := context.Background()
	if err := s.AddEvent(ctx, hitWith("Q1", "a")); err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	for name, read := range map[string]func() error{
		"Message":  func() error { _, err := s.Message(ctx, "Q1"); return err },
		"Delivery": func() error { _, err := s.Delivery(ctx, "Q1", 0); return err },
	} {
		done := make(chan error, 1)
		go func() { done <- read() }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s answered without a database", name)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still waits for a database that never answers", name)
		}
	}
}

// A hit the database rejects (here a constraint of the test's own) is
// dropped, logged and counted as lost; the hits around it are shipped and
// the log empties, rather than the one hit holding back the rest for ever.
func TestFallbackRejectedHit(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, closedDSN(t), fallbackOptions(dir, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, ua := range []string{"r1", "poison", "r2"} {
		if err := s.AddEvent(ctx, hitWith("Q1", ua)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.DSN(t)
	putMessage(t, testStore(t, dsn, Options{}), "Q1", 1)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "ALTER TABLE events ADD CONSTRAINT test_no_poison CHECK (user_agent <> 'poison')"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s2 := testStore(t, dsn, fallbackOptions(dir, reg))
	waitShipped(t, s2)
	l := readLedger(t, dsn, "Q1")
	checkLedger(t, l, []string{"r1", "r2"})
	if l.events != 2 {
		t.Errorf("%d events, want r1 and r2", l.events)
	}
	if n := storeMetric(t, reg, "trackrelay_tracking_events_lost_total", ""); n != 1 {
		t.Errorf("events_lost_total = %v, want 1", n)
	}
}

// A hit too large for the hit log fails alone: the hits appended with it
// are logged and answered.
func TestFallbackOversizedHit(t *testing.T) {
	s := testStore(t, closedDSN(t), fallbackOptions(t.TempDir(), nil))
	var batch []*eventReq
	for _, ua := range []string{"small", strings.Repeat("x", hitlog.MaxPayload), "small too"} {
		batch = append(batch, &eventReq{ev: hitWith("Q1", ua), hit: newUUID(), logged: make(chan error, 1)})
	}
	s.logSpills(batch)
	for i, want := range []bool{true, false, true} {
		if err := <-batch[i].logged; (err == nil) != want {
			t.Errorf("hit %d: logged %v, want %v (%v)", i, err == nil, want, err)
		}
	}
	if h := s.Health(context.Background()); h.Backlog != 2 || h.HitLog != nil {
		t.Errorf("backlog %d, hit log error %v; want 2, none", h.Backlog, h.HitLog)
	}
}
