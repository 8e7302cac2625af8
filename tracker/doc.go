// Package tracker is trackrelay's tracking web server: the HTTP endpoints
// that serve the tracking URLs (open pixel, click redirect), the JSON API
// (a message's status, its erasure, the account's feed) and the health
// check. For each hit it finds the client's address (X-Forwarded-For only
// from trusted proxies), limits what one address may record, asks package
// classify for a verdict and records the event in a store.Store before the
// response is sent, waiting StoreTimeout at most.
//
// The rest lives in packages named for what they own: token (signed
// tokens, the key ring and the URL layout), classify (every signal and
// rule), store (the Store interface, its value types and the API views),
// store/bolt (the embedded bbolt backend), webhook (the sender of the
// webhook outbox) and geoip.
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
//   - import a store backend (it sees store.Store only; cmd wires bolt in),
//     the webhook sender, the relay or the rewriter.
package tracker
