// Package postgres is the store.Store of fleet mode: the ledger that
// several trackrelay nodes share in one PostgreSQL database (messages,
// delivery states, events, the accounts' feed, the webhook outbox,
// erasure tombstones), through a pgx connection pool.
//
// The schema is embedded (migrations/) and migrated at Open under an
// advisory lock. Events are appended, one row per hit, never updated per
// hit: counts are derived at read time. Hits are committed in batches
// (group commit), each hit with an id the node mints, so that writing a
// batch again is harmless. A batch holds the advisory locks of its
// messages, reads their recent history from the database (each copy's
// events near the batch's hits, the message's clicks soon after their
// copies' delivery) and applies the sequence rules as package bolt does,
// with the pure functions of package classify (sequence.go): bursts,
// gateway pairs, multi-recipient scans and honeypot hits spanning nodes
// are seen, and every node reaches the same verdict. The feed is
// ordered by (writing transaction, sequence) and read only below the
// oldest running transaction, so that an entry another node commits late
// is never skipped.
//
// Maintenance (retention, purging the webhook outbox) is done by one node
// of the fleet at a time, the holder of a session-level advisory lock
// (maintenance.go).
//
// With a hit log (Options.HitLogDir, in the node's data_dir), a hit whose
// batch fails to commit, or has not committed within FallbackAfter, is
// appended to the log (package hitlog) and answered once that is
// fdatasynced; after a failed commit, hits go straight to the log until
// the shipper has committed it to the database, in order, each hit with
// its minted id, classified and fed exactly as a direct commit would be
// (fallback.go). A node may so start, and serve, while the database is out
// of reach.
//
// An event may be committed before its message's record (shipped, or
// committed by another node, before the relay's report arrives); and a
// hit the tracker classified without its message (store.Event.
// WithoutMessage: the database was unreachable) lacks the message's
// evidence. Such events wait in the awaiting table: the transaction that
// commits the record (or a copy's delivery, for a click) lists them in
// the feed and the outbox once and classifies them again with
// classify.WithMessage (awaiting.go).
//
// What the package must never do: import the tracker's HTTP handler, the
// relay or another backend.
package postgres
