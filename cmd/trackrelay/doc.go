// Command trackrelay is the relay's one binary: `serve` runs the SMTP
// submission server, delivery, the tracking and API server and the
// metrics listener; `check-config`, `hash-password`, `queue`,
// `dkim-keygen` and the rest are the operator's tools (see main.go).
//
// It owns the configuration (config.go: the YAML schema, its defaults and
// its checks, documented key by key in docs/configuration.md), the
// secrets on disk, and the wiring: it is the only package that imports
// relay, rewrite and the tracker's packages together. The relay reports
// to the tracking store through storeLedger and mints URLs through
// keyMinters (wire.go); serve.go starts the parts as a short sequence of
// named steps (store.go, delivery.go, listeners.go) and stops them in
// order; on SIGHUP, reload.go swaps in the file's accounts and tracking
// secrets and names the changed keys that need a restart. The operator's admin socket (admin.go) and /readyz (readyz.go)
// are served here, not by the relay or the tracker.
package main
