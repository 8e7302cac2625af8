package relay

import (
	"context"

	"github.com/trackrelay/trackrelay/rewrite"
)

// Ledger is where the relay reports what happens to each message, so that
// the app can ask about it later. The relay defines it; the tracker's store
// implements it (cmd wires the two). Every method must be idempotent: after
// a crash the relay may report the same fact again.
type Ledger interface {
	// Accepted records a message the relay has just made durable, and its
	// tracked link destinations when links is not nil (as Links does).
	Accepted(ctx context.Context, env *Envelope, links []string) error
	// Links records the tracked link destinations of a message, by index.
	Links(ctx context.Context, queueID string, links []string) error
	// Delivery records the state of one recipient's copy.
	Delivery(ctx context.Context, queueID string, rcpt int, r Recipient) error
}

// Minters gives the tracking URLs of one recipient's copy.
type Minters interface {
	Minter(queueID string, rcpt int) rewrite.Minter
}

// HoneypotMinter is a rewrite.Minter that also mints the URL of a copy's
// honeypot link, for DeliveryConfig.Honeypot.
type HoneypotMinter interface {
	HoneypotURL() string
}

// NopLedger records nothing; for tests and tools that need no ledger.
type NopLedger struct{}

// Accepted implements Ledger.
func (NopLedger) Accepted(context.Context, *Envelope, []string) error { return nil }

// Links implements Ledger.
func (NopLedger) Links(context.Context, string, []string) error { return nil }

// Delivery implements Ledger.
func (NopLedger) Delivery(context.Context, string, int, Recipient) error { return nil }
