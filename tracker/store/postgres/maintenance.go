package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Maintenance is done by one node of the fleet at a time, the leader: the
// node whose store holds the maintenance lock, a session-level advisory
// lock on one connection of its pool. The lock goes with its session, so
// when the leader dies (or its connection does) the server frees it and
// another node takes it at its next try, every Options.LeaderPoll. The
// leader runs the tasks when it takes the lock and then every
// Options.MaintenanceInterval:
//   - retention (Options.Retention, tracking.retention): the events and
//     feed entries written before the newest retention mark older than the
//     period are deleted, like package bolt's sweep; a deleted event's
//     counts move to its copy's tallies, so counts, first and last open
//     times and the cap stay, and its links still redirect (tokens need no
//     store). The mark taken at each run makes the interval the precision.
//   - the webhook outbox: a delivery leaves it once sent or given up
//     (OutboxDone); one that no sender took within its retry period (24 h,
//     then the last backoff and a lease: Options.OutboxPurgeAfter), which
//     happens when no node has a webhook for its account any more, is
//     purged.
//
// Erasure tombstones are kept: a tombstone must live as long as a hit
// could still be recorded for its message, and tokens carry no expiry (a
// copy's links work for as long as it is kept), so that is forever, as in
// package bolt. A tombstone is one small row, in place of the message's
// rows.
//
// So no table grows but by what it keeps on purpose: with retention,
// events and feed entries are bounded by the period, tallies by the
// copies' (type, class, link) combinations, retention marks by the period
// over the interval; the outbox by what its senders have yet to send.

// The maintenance lock: the two-key form, apart from messages' locks,
// beside the migration lock.
const maintenanceLockA, maintenanceLockB = migrationLockA, 2

// Defaults of the maintenance Options.
const (
	DefaultMaintenanceInterval = time.Hour
	DefaultLeaderPoll          = 30 * time.Second
	// DefaultOutboxPurgeAfter is the webhook sender's retry period (24 h),
	// the longest backoff after which it tries a last time (1 h) and a
	// lease (DefaultOutboxLease), with room to spare.
	DefaultOutboxPurgeAfter = 26 * time.Hour
	// maintenanceChunk bounds the rows one maintenance transaction
	// deletes, so that hits keep being committed meanwhile.
	maintenanceChunk = 1000
	// maxExpireMessages bounds the messages whose events one retention
	// transaction deletes, and so the advisory locks it holds.
	maxExpireMessages = 128
)

// Leader reports whether this store holds the maintenance lock.
func (s *Store) Leader() bool { return s.leader.Load() }

// maintain is the maintenance goroutine: it takes or keeps the
// maintenance lock every LeaderPoll and, while it holds it, runs the tasks
// every MaintenanceInterval. A panic in a round is recovered, logged and
// counted, and the next round runs on time.
func (s *Store) maintain(ctx context.Context) {
	defer s.maintDone.Done()
	var conn *pgxpool.Conn
	defer func() {
		if conn != nil {
			s.resign(conn)
		}
	}()
	t := time.NewTicker(s.opts.LeaderPoll)
	defer t.Stop()
	var due time.Time
	for {
		guard.Run(guard.Retention, s.log, func() {
			was := conn != nil
			conn = s.lead(ctx, conn)
			if conn == nil {
				return
			}
			if !was {
				due = time.Time{} // a new leader runs the tasks at once
			}
			if now := time.Now(); !now.Before(due) {
				s.Maintain(ctx, now)
				due = now.Add(s.opts.MaintenanceInterval)
			}
		})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lead returns the connection that holds the maintenance lock: conn, when
// it still answers, else a new one that got the lock, else nil.
func (s *Store) lead(ctx context.Context, conn *pgxpool.Conn) *pgxpool.Conn {
	cctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
	defer cancel()
	if conn != nil {
		_, err := conn.Exec(cctx, "SELECT 1")
		if err == nil {
			return conn
		}
		// The session, and the lock with it, may be gone.
		s.log.Warn("postgres store: maintenance lock's connection lost", "err", err)
		conn.Conn().Close(context.Background())
		conn.Release()
		s.setLeader(false)
	}
	conn, err := s.pool.Acquire(cctx)
	if err != nil {
		return nil
	}
	var got bool
	if err := conn.QueryRow(cctx, "SELECT pg_try_advisory_lock($1, $2)", maintenanceLockA, maintenanceLockB).Scan(&got); err != nil || !got {
		conn.Release()
		return nil
	}
	s.log.Info("postgres store: this node runs the fleet's maintenance")
	s.setLeader(true)
	return conn
}

// resign gives the maintenance lock back, so that another node takes over
// at once.
func (s *Store) resign(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.ConnectTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1, $2)", maintenanceLockA, maintenanceLockB); err != nil {
		// The session may keep the lock: end it.
		conn.Conn().Close(context.Background())
	}
	conn.Release()
	s.setLeader(false)
}

func (s *Store) setLeader(v bool) {
	s.leader.Store(v)
	s.opts.Metrics.MaintenanceLeader(v)
}

// MaintenanceCounts are the rows one Maintain run deleted.
type MaintenanceCounts struct {
	Events, Feed, Outbox int
}

// Maintain runs the maintenance tasks once, as of now, whether or not
// this store is the leader (the tasks are safe to run on several nodes at
// once; the lock only saves the work): retention when Options.Retention
// is set, and the outbox purge. Each task's run is reported to the
// metrics; the tasks' errors are logged and returned, joined.
func (s *Store) Maintain(ctx context.Context, now time.Time) (MaintenanceCounts, error) {
	var n MaintenanceCounts
	var errs []error
	if s.opts.Retention > 0 {
		ev, feed, err := s.sweep(ctx, now, s.opts.Retention)
		n.Events, n.Feed = ev, feed
		s.opts.Metrics.Expired(ev)
		s.opts.Metrics.MaintenanceRan(store.TaskRetention, time.Now(), ev+feed, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("retention: %w", err))
		}
	}
	var err error
	n.Outbox, err = s.deleteChunks(ctx, `DELETE FROM outbox WHERE entry IN (
		SELECT entry FROM outbox WHERE first_at < $1 LIMIT $2)`, now.Add(-s.opts.OutboxPurgeAfter))
	s.opts.Metrics.MaintenanceRan(store.TaskOutbox, time.Now(), n.Outbox, err)
	if err != nil {
		errs = append(errs, fmt.Errorf("outbox purge: %w", err))
	}
	if len(errs) == 0 {
		return n, nil
	}
	err = fmt.Errorf("postgres store: maintenance: %w", errors.Join(errs...))
	if ctx.Err() == nil { // not the store closing
		s.log.Error("postgres store: maintenance", "err", err)
	}
	return n, err
}

// Sweep runs retention once, as of now, with the period retention: like
// package bolt's Sweep, it records a mark at now and deletes the events
// (their counts kept) and feed entries written before the newest mark
// older than retention. It returns the number of events deleted.
func (s *Store) Sweep(ctx context.Context, now time.Time, retention time.Duration) (int, error) {
	ev, _, err := s.sweep(ctx, now, retention)
	return ev, err
}

// sweep records a retention mark at now and deletes the events and feed
// entries written before the newest mark older than retention, each
// event's counts added to its copy's tallies. It returns the events and
// the feed entries deleted.
func (s *Store) sweep(ctx context.Context, now time.Time, retention time.Duration) (int, int, error) {
	var evCut, feedCut int64
	found := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO retention_marks (at, event_seq, feed_seq)
			SELECT $1, (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_seq),
				(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM feed_seq_seq)
			ON CONFLICT (at) DO NOTHING`, now); err != nil {
			return err
		}
		var at time.Time
		err := tx.QueryRow(ctx, `SELECT at, event_seq, feed_seq FROM retention_marks WHERE at <= $1
			ORDER BY at DESC LIMIT 1`, now.Add(-retention)).Scan(&at, &evCut, &feedCut)
		if errorsIsNoRows(err) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		// Older marks are no longer needed.
		_, err = tx.Exec(ctx, "DELETE FROM retention_marks WHERE at < $1", at)
		return err
	})
	if err != nil || !found {
		return 0, 0, err
	}
	events := 0
	for {
		n, err := s.expireEvents(ctx, evCut)
		events += n
		if err != nil {
			return events, 0, err
		}
		if n == 0 {
			break
		}
	}
	// A feed entry's outbox row goes with it (ON DELETE CASCADE).
	feed, err := s.deleteChunks(ctx, `DELETE FROM feed WHERE seq IN (
		SELECT seq FROM feed WHERE seq <= $1 ORDER BY seq LIMIT $2)`, feedCut)
	return events, feed, err
}

// expireEvents deletes up to maintenanceChunk events with a sequence at
// most cut, of at most maxExpireMessages messages, in one transaction
// holding their messages' locks (so that no
// batch classifies with them meanwhile), and adds them to their copies'
// tallies. It returns how many it deleted; 0 when none is left.
func (s *Store) expireEvents(ctx context.Context, cut int64) (int, error) {
	var ids []string
	rows, _ := s.pool.Query(ctx, `SELECT DISTINCT message FROM (
		SELECT message FROM events WHERE seq <= $1 ORDER BY seq LIMIT $2) e`, cut, maintenanceChunk)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	// Each message is a lock in the server's shared lock table.
	ids = ids[:min(len(ids), maxExpireMessages)]
	var n int
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockMessages(ctx, tx, ids...); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `WITH d AS (
				DELETE FROM events WHERE seq IN (
					SELECT seq FROM events WHERE seq <= $1 AND message = ANY($2) ORDER BY seq LIMIT $3)
				RETURNING message, recipient, type, class, link, kept, at_ns),
			t AS (
				INSERT INTO tallies (message, recipient, type, class, link, events, kept, first_ns, last_ns)
				SELECT message, recipient, type, class, link, count(*), count(*) FILTER (WHERE kept), min(at_ns), max(at_ns)
				FROM d GROUP BY message, recipient, type, class, link
				ON CONFLICT (message, recipient, type, class, link) DO UPDATE SET
					events = tallies.events + excluded.events, kept = tallies.kept + excluded.kept,
					first_ns = least(tallies.first_ns, excluded.first_ns),
					last_ns = greatest(tallies.last_ns, excluded.last_ns))
			SELECT count(*) FROM d`, cut, ids, maintenanceChunk).Scan(&n)
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		// The events found were erased meanwhile: those left are others.
		return s.expireEvents(ctx, cut)
	}
	return n, nil
}

// deleteChunks runs query, a DELETE of at most $2 rows selected by $1,
// until it deletes none, and returns the rows deleted.
func (s *Store) deleteChunks(ctx context.Context, query string, arg any) (int, error) {
	total := 0
	for {
		if s.isClosed() {
			return total, store.ErrClosed
		}
		tag, err := s.pool.Exec(ctx, query, arg, maintenanceChunk)
		if err != nil {
			return total, err
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < maintenanceChunk {
			return total, nil
		}
	}
}

// discardLogger is the Logger of a store given none.
var discardLogger = slog.New(slog.DiscardHandler)
