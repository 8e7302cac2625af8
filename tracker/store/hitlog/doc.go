// Package hitlog is the durable log a store appends hits to before it
// answers them, when its own commit would make them wait: package bolt's
// write-ahead log, and package postgres's fallback while the database is
// slow or unreachable. It owns the record format (length, CRC-32C,
// sequence, payload), reading records back up to the first torn or stale
// one, growing files in zero-filled steps so that an append's fdatasync
// writes data only, and Log, a log of segment files that grows without
// bound and drops segments once their records are released.
//
// What the package must never do: interpret a payload (each store encodes
// its own), or import a store.
package hitlog
