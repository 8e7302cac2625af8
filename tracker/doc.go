// Package tracker owns everything trackrelay does after a message leaves:
// the signed tracking tokens and the URLs minted from them, the HTTP
// endpoints that serve them (open pixel, click redirect, the JSON API and
// the health check), the classification of every hit (human, proxy,
// prefetch, scanner, self) and the event store, with bbolt as its embedded
// backend.
//
// Tokens and the URLs minted from them are package token's: a click token
// carries its destination, so a redirect needs no store.
//
// A hit is durable in the Store before its response is sent. BoltStore
// appends concurrent hits to its hit log (a write-ahead log beside the
// bbolt file) with one fdatasync per batch (group commit): a lone hit is
// logged at once, and the hits that arrive during an append form the next
// batch. An applier commits the log to bbolt every 20 ms, in bigger
// transactions; reads wait for the hits answered before them, and a
// restart replays what a crash left in the log. Classification reads
// message data from an in-memory LRU, so a hit needs no read transaction.
// The Store interface is the seam for other backends.
//
// Each event carries its class with reasons. Evidence that only a sequence
// shows (a burst of clicks over several links, a click before any open) is
// added when the event is committed; an earlier event whose class changes
// gets a "reclassified" entry in the account's feed (GET /api/v1/events),
// which also lists delivery changes. Feed entries of accounts with a
// webhook go to a durable outbox in the store, which WebhookSender POSTs,
// signed, with retries for 24 hours. Privacy: events older than the
// retention period are swept (their counts stay), the recorded IP may be
// truncated or dropped, a copy keeps at most MaxEventsPerRecipient
// detailed events, and DELETE /api/v1/messages/{ref} erases a message's
// tracking data while its links keep working.
//
// What the package must never do:
//   - redirect anywhere but to an http(s) destination signed by its own keys
//     (a tampered, unknown or malformed token is a 404, never an open
//     redirect, and the response never says why);
//   - let the store decide whether a recipient gets the pixel or the
//     redirect: when the store fails or is slow, the hit is served anyway and
//     the loss is counted (trackrelay_tracking_events_lost_total) and logged;
//   - trust X-Forwarded-For from anyone but the configured trusted proxies;
//   - show one account's messages to another account's API key;
//   - put unbounded values (addresses, URLs, ids) in metric labels, or use
//     global registries or loggers;
//   - import the relay or rewrite packages: the relay reports to the store
//     through its own interface, wired in cmd.
package tracker
