// Package storetest is the conformance suite of store.Store backends: Run
// holds a backend to what the tracker's HTTP handler, the feed, the webhook
// sender and the relay's ledger rely on (messages and their lookup,
// delivery states, events and their counts, the cap per copy, the sequence
// rules' verdicts (bursts, gateway pairs, multi-recipient scans, honeypot
// hits) and their reclassified feed entries, feed order and cursors,
// erasure, the webhook outbox, retention for a store that applies it).
// RunFleet runs the sequence rules again on two nodes of one ledger, for a
// backend that a fleet shares. Package bolt's tests run Run; a new
// backend's tests must too.
//
// What the package must never do: know a backend, or import anything of
// trackrelay but store, classify, token (the honeypot's link index) and
// internal/delivery (delivery states).
package storetest
