// Package tracker owns everything trackrelay does after a message leaves:
// the signed tracking tokens and the URLs minted from them, the HTTP
// endpoints that serve them (open pixel, click redirect, the JSON API and
// the health check), the classification of every hit (human, proxy,
// prefetch, scanner, self) and the event store, with bbolt as its embedded
// backend.
//
// Tokens are HMAC-SHA256 signed (128-bit tag) with a key id, so keys rotate:
// the newest key of a Keyring signs and every key verifies. A click token
// carries its destination, so a redirect needs no store.
//
// A hit is committed to the Store before its response is sent; BoltStore
// batches concurrent events into one transaction and one fsync (group
// commit). The Store interface is the seam for other backends.
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
