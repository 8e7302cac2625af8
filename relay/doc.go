// Package relay is trackrelay's mail transfer agent: the SMTP submission
// server (go-smtp backend and session, authentication, relay policy, limits),
// the durable spool (message files plus bbolt records) and the delivery
// workers that instrument each recipient's copy and hand it to the upstream
// smarthost, retrying and bouncing like an MTA.
//
// The relay owns every message from the moment it answers 250: nothing is
// acknowledged before the message file, its directory and its record are on
// disk. It reports acceptance and delivery status through the Ledger
// interface it defines, and asks a Minters implementation for the tracking
// URLs of each copy; it knows nothing of HTTP or of how tokens are made.
//
// It must never relay for a session that is neither authenticated nor from
// an account's network, never lose an accepted message, and never let a
// rewriting failure cost a user an email: a copy that cannot be instrumented
// is delivered unchanged. It never downgrades internationalized mail
// (SMTPUTF8, RFC 6531): a copy that needs the extension and meets an
// upstream without it bounces.
package relay
