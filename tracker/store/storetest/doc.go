// Package storetest is the conformance suite of store.Store backends: Run
// holds a backend to what the tracker's HTTP handler, the feed, the webhook
// sender and the relay's ledger rely on (messages and their lookup,
// delivery states, events and their counts, the cap per copy, the burst
// rule's verdicts, feed order and cursors, erasure, the webhook outbox).
// Package bolt's tests run it; a new backend's tests must too.
//
// What the package must never do: know a backend, or import anything of
// trackrelay but store and classify.
package storetest
