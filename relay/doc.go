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
// The operator's queue commands are Go methods (Spool.List, Deliverer.Retry,
// Deliverer.Delete) that cmd/trackrelay serves on its admin socket.
//
// It must never relay for a session that is neither authenticated nor from
// an account's network, never lose an accepted message, and never let a
// rewriting failure cost a user an email: a copy that cannot be instrumented
// is delivered unchanged. It never downgrades internationalized mail
// (SMTPUTF8, RFC 6531): a copy that needs the extension and meets an
// upstream without it bounces.
//
// It imports rewrite and the leaf packages under internal/, and never the
// tracker's packages or net/http: what it tells the tracking store goes
// through its Ledger, wired in cmd/trackrelay.
//
// Where each part lives:
//
//   - Receiving: server.go (the go-smtp server), session.go (one SMTP
//     session: AUTH, MAIL, RCPT, DATA), account.go (accounts and tracking
//     modes), limits.go (connection limits, the final read timeout),
//     readahead.go (reading a streaming client 64 KiB at a time),
//     smtputf8.go (internationalized mail), header.go (raw header fields).
//   - Storing: spool.go (message files and their records), groupcommit.go
//     (shared bbolt commits), syncdir.go (shared directory fsyncs).
//   - Delivering: delivery.go (the Deliverer: configuration, start, submit,
//     shutdown), schedule.go (the job heap, workers, retry timing),
//     attempt.go (one attempt of one copy and recording its outcome),
//     copy.go (building a copy: instrumenting it, DKIM-signing it),
//     dkim.go (DKIM keys and signing), upstream.go (the smarthost's
//     connections), dotstuff.go (DATA encoding), capture.go (capture mode:
//     copies written as files), outcome.go (the texts a failed attempt
//     shows), health.go (the upstream's health for readiness).
//   - Reporting and the operator: announce.go (telling the Ledger of new
//     messages and their links, before the 250 with ReportWait), owed.go
//     (reports the Ledger failed: retried in order, kept in the spool
//     across restarts), ledger.go (the Ledger and Minters
//     interfaces), bounce.go (delivery status notifications), hold.go
//     (copies held after a panic, and releasing them), operator.go (the
//     operator's retry and delete), metrics.go (Prometheus metrics).
package relay
