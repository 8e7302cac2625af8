package store

import (
	"errors"
	"time"
)

// Feed limits.
const (
	DefaultFeedLimit = 100
	MaxFeedLimit     = 1000
)

// ErrBadCursor is returned by Feed for a cursor it did not issue.
var ErrBadCursor = errors.New("store: invalid cursor")

// FeedEntry is one entry of GET /api/v1/events and one webhook body.
// Type is open, click, delivery or reclassified.
type FeedEntry struct {
	// ID is unique and stable: webhook receivers dedupe on it. For open and
	// click entries it is the event's id in the message view.
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	At        time.Time `json:"at"`
	Message   string    `json:"message"`    // queue id
	MessageID string    `json:"message_id"` // Message-ID without <>
	Recipient string    `json:"recipient"`
	// Open, click and reclassified entries.
	Link      string   `json:"link,omitempty"`
	LinkIndex *int     `json:"link_index,omitempty"`
	IP        string   `json:"ip,omitempty"`
	UserAgent string   `json:"user_agent,omitempty"`
	Client    string   `json:"client,omitempty"`
	Country   string   `json:"country,omitempty"`
	City      string   `json:"city,omitempty"`
	Class     string   `json:"class,omitempty"`
	Reasons   []string `json:"reasons,omitempty"`
	// Reclassified entries: the event whose class changed, its type and
	// its class before.
	EventID       string `json:"event_id,omitempty"`
	EventType     string `json:"event_type,omitempty"`
	PreviousClass string `json:"previous_class,omitempty"`
	// Delivery entries.
	Delivery *DeliveryView `json:"delivery,omitempty"`
}

// FeedPage is the answer of GET /api/v1/events. Next is the cursor to ask
// with next time; it is returned even when Events is empty.
type FeedPage struct {
	Events []FeedEntry `json:"events"`
	Next   string      `json:"next"`
}

// OutboxItem is a webhook delivery due now.
type OutboxItem struct {
	// Key is the backend's handle of the entry; callers pass it back
	// unchanged.
	Key      []byte
	Account  string
	Attempts int       // failed attempts so far
	First    time.Time // when the entry was queued
	ID       string    // the entry's id
	Body     []byte    // JSON FeedEntry
}

// Outbox is the durable queue of webhook deliveries a Store keeps for the
// accounts that have a webhook: every feed entry of such an account is
// added to it in the transaction that commits the entry, and stays until
// the sender is done with it. Its methods are safe for concurrent use.
type Outbox interface {
	// OutboxDue returns up to limit items due at now, oldest due first.
	// Items whose feed entry was erased or has expired are removed.
	OutboxDue(now time.Time, limit int) ([]OutboxItem, error)
	// OutboxDone removes delivered (or abandoned) items.
	OutboxDone(items []OutboxItem) error
	// OutboxRetry makes each item due again at next[i], counting the
	// failed attempt.
	OutboxRetry(items []OutboxItem, next []time.Time) error
	// OutboxAdded receives a value after entries were added, so that a
	// sender need not wait for its next poll.
	OutboxAdded() <-chan struct{}
}
