// Package webhook owns the delivery of each account's feed entries to its
// webhook: a Sender POSTs the entries queued in a store's durable outbox
// (store.Outbox), signed (SignatureHeader, Sign), at least once: an entry
// leaves the outbox only after a 2xx answer, or once it has failed for
// MaxAge (24 hours by default), retried with exponential backoff.
//
// What the package must never do:
//   - reach into a store's storage: it sees only the store.Outbox interface;
//   - follow a redirect, or send one account's entries to another's hook;
//   - stop sending because one POST panicked or failed;
//   - import the tracker's HTTP handler, the relay or the rewriter.
package webhook
