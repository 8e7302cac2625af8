package store

import (
	"context"
	"errors"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
)

// ErrNotFound is returned when a message does not exist, or belongs to
// another account.
var ErrNotFound = errors.New("store: not found")

// ErrClosed is returned by a store that has been closed.
var ErrClosed = errors.New("store: closed")

// ErrErased is returned by Store.Message for a message whose tracking data
// was erased (DELETE /api/v1/messages/{ref}): its hits are not recorded.
var ErrErased = errors.New("store: message erased")

// Event types.
const (
	EventOpen  = "open"
	EventClick = "click"
	// EventDelivery is a feed entry for a change of a copy's delivery state.
	EventDelivery = "delivery"
	// EventReclassified is a feed entry announcing that an earlier event's
	// class changed as evidence arrived.
	EventReclassified = "reclassified"
)

// Message is what the relay tells the store about an accepted message.
type Message struct {
	ID         string    // queue id (what tokens carry)
	MessageID  string    // RFC 5322 Message-ID without <>
	Account    string    // account that sent it
	From       string    // envelope sender
	Subject    string    // the Subject header, decoded (RFC 2047); "" when absent
	SubmitIP   string    // IP that submitted the message (for class "self")
	AcceptedAt time.Time // when the relay made it durable
	Mode       string    // none|opens|clicks|all
	Recipients []Recipient
}

// Recipient is one recipient of a Message, in envelope order; its index is
// what tokens carry.
type Recipient struct {
	// Address is the recipient's address.
	Address string
	// Tracked is false for copies that are never instrumented (the
	// account's self_addresses, or mode none).
	Tracked bool
}

// Delivery is the state of one recipient's copy.
type Delivery struct {
	Status       delivery.Status
	Attempts     int
	LastResponse string
	UpdatedAt    time.Time
}

// Event is one recorded tracking hit.
type Event struct {
	// ID is set by the store when it reads an event back ("ev_..."); it is
	// the id of the event in the API, the feed and webhooks.
	ID        string
	Type      string // "open" | "click"
	At        time.Time
	Message   string // queue id
	Recipient int
	Link      int // click: link index; open: -1
	IP        string
	UserAgent string
	Client    string // readable client name, e.g. "Apple Mail"
	Country   string // ISO 3166-1 alpha-2 code of the client's country, if known
	City      string // English name of the client's city, if known
	Class     string // one of package classify's classes
	Reasons   []string
	// URL is the destination of a click, as signed in its token.
	URL string
	// WithoutMessage is set by the tracker on a hit it classified without
	// its message's data (the message or its copy's delivery could not be
	// read: the store was unavailable, or the message's record is not
	// stored yet). A store that can classifies it again
	// (classify.WithMessage) once it has them. Not part of the API.
	WithoutMessage bool
	// ClientIP is, on a hit WithoutMessage, the client's full address,
	// which the submitter rule compares with the message's (IP is what
	// tracking.ip_mode records). A store keeps it only until the hit is
	// classified again, and never shows it.
	ClientIP string
}

// Store is the tracker's ledger: messages, their links, the delivery state of
// each copy and the tracking events. The bbolt implementation is package
// bolt's; other backends implement the same interface and pass the
// conformance suite of package storetest. All methods are safe for
// concurrent use.
type Store interface {
	// PutMessage records an accepted message. Idempotent.
	PutMessage(ctx context.Context, m Message) error
	// SetLinks records the tracked link destinations of a message, by index.
	// Idempotent.
	SetLinks(ctx context.Context, message string, links []string) error
	// SetDelivery records the state of one recipient's copy.
	SetDelivery(ctx context.Context, message string, recipient int, d Delivery) error
	// AddEvent records a hit and returns only once it is durably committed.
	AddEvent(ctx context.Context, e Event) error
	// Lookup returns the API view of a message of account; ref is the queue
	// id or the Message-ID, with or without <>. A message of another account
	// is ErrNotFound.
	Lookup(ctx context.Context, account, ref string) (*MessageView, error)
	// Message returns a message by queue id, ErrNotFound, or ErrErased when
	// its tracking data was erased. The result is shared: callers must not
	// modify it.
	Message(ctx context.Context, id string) (*Message, error)
	// Feed returns the account's events and delivery changes committed
	// after the opaque cursor after ("" for the beginning), oldest first,
	// at most limit of them, and the cursor to pass next time.
	Feed(ctx context.Context, account, after string, limit int) (*FeedPage, error)
	// Erase deletes the tracking data of a message of account (events,
	// counters, deliveries, links, the message record). Later hits on its
	// links are served but not recorded. A message of another account is
	// ErrNotFound.
	Erase(ctx context.Context, account, ref string) error
	// Close releases the store; pending AddEvent calls fail with ErrClosed.
	Close() error
}

// HitReader is implemented by stores whose Message costs a round trip to a
// database shared by a fleet. The HTTP handler reads a hit's message with
// HitMessage when present: it answers as Message does, but may answer from
// a short-lived memory of the messages hits read, so that a busy message
// (a scanner fetching every link, a thread opened on several devices) is
// read once. A message's record does not change once written; what the
// memory can miss is an erasure on another node, and the store drops the
// hits of an erased message when it commits them, so none is stored.
type HitReader interface {
	HitMessage(ctx context.Context, id string) (*Message, error)
}

// DeliveryReader is implemented by stores that can return the delivery state
// of one copy. The HTTP handler uses it, when present, to tell link scanners
// (which click right after delivery) from people.
type DeliveryReader interface {
	// Delivery returns the state of one recipient's copy, or ErrNotFound.
	// When the status is delivered, UpdatedAt is the time of delivery.
	Delivery(ctx context.Context, message string, recipient int) (Delivery, error)
}
