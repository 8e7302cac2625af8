// Package token owns trackrelay's tracking tokens and the URLs minted from
// them: HMAC-SHA256 signing (a 128-bit tag) with a key id, verification,
// the key ring that rotates keys (the newest key signs, every key
// verifies), and the layout of the open-pixel and click-redirect URLs
// (OpenPath, ClickPath), which nothing else spells out. A click token
// carries its destination, so a redirect needs no store.
//
// What the package must never do:
//   - accept a token that is malformed, over MaxLen, signed by an unknown key
//     or tampered with, or say which of these it was (all are ErrInvalid);
//   - hold state beyond its keys: no storage, no HTTP, no logging;
//   - import any other trackrelay package: the tracker, the rewriter (which
//     is handed minted URLs through cmd) and cmd import it.
package token
