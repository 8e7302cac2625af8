// Package bolt is the embedded store.Store backend: one bbolt file and a
// hit log beside it.
//
// A hit is durable before its response is sent. The collector
// (collector.go) takes concurrent hits and the relay's reports in batches
// (group commit): it appends the hits to the hit log (hitlog.go, a
// write-ahead log) with one fdatasync per batch and answers them; a lone
// hit is logged at once, and the hits that arrive during an append form
// the next batch. The applier (applier.go) commits the batches to bbolt in
// order, events every 20 ms, reports at once; a commit (events.go) adds
// each event with what its copy's history shows, which package classify
// judges (the order of open and click, the burst rule over the copy's
// clicks within 5 s, kept in an index by time: clicks.go; the
// multi-recipient rule over the message's clicks soon after delivery:
// multi.go). Reads
// (lookups.go, feed.go) wait for the hits answered before them, and a
// restart replays what a crash left in the log. The bucket layout and
// the records are in schema.go; the relay's reports and erasure in
// writes.go; the webhook outbox in outbox.go; retention in retention.go;
// hits whose commit panics are set aside by quarantine.go. Message data
// for classification comes from an in-memory LRU (cache.go), so a hit
// needs no read transaction.
//
// What the package must never do:
//   - answer a hit before it is durable (in the log or in bbolt);
//   - decide a class itself: classification is package classify's;
//   - import the tracker's HTTP handler, the webhook sender, the relay or
//     the rewriter.
package bolt
