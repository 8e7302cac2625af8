// Package store owns the contract between the tracker and the backends
// that keep its data: the Store interface (messages, their links, the
// delivery state of each copy, the tracking events, the account's feed,
// erasure), the Outbox interface of the webhook queue, the value types they
// exchange (Message, Event, FeedPage, ...), the API views built from them
// (MessageView, BuildView), their errors and constants, and the metrics
// every backend reports.
//
// The HTTP handler (package tracker), the webhook sender, and cmd's
// ledger for the relay use only this package; package bolt is the
// embedded backend, and package storetest is the conformance suite a
// backend must pass.
//
// What the package must never do:
//   - hold storage code or know a backend;
//   - import any trackrelay package but classify (which says what events
//     count in a view): not the tracker's HTTP handler, a backend, the
//     webhook sender, the relay or the rewriter.
package store
