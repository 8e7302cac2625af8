package store

import (
	"context"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
)

// Paging limits of Browser.Messages.
const (
	// DefaultMessagesLimit is the page size when MessageQuery.Limit is 0.
	DefaultMessagesLimit = 50
	// MaxMessagesLimit is the largest page a backend returns.
	MaxMessagesLimit = 200
)

// MessageQuery selects one page of an account's messages, newest first.
type MessageQuery struct {
	// Search, when not empty, keeps the messages whose subject or one of
	// whose recipient addresses contains it, ignoring case.
	Search string
	// After is the opaque cursor of MessagePage.Next: the page starts with
	// the message after it, in newest-first order. "" starts at the newest.
	After string
	// Limit is the page size: 0 means DefaultMessagesLimit; more than
	// MaxMessagesLimit means MaxMessagesLimit.
	Limit int
}

// MessagePage is one page of Browser.Messages.
type MessagePage struct {
	Messages []MessageSummary
	// Next is the cursor of the following page, "" on the last page.
	Next string
}

// MessageSummary is one line of the console's message list: what a person
// needs to see at a glance, without the events.
type MessageSummary struct {
	ID         string // queue id
	Subject    string // decoded
	AcceptedAt time.Time
	// Recipients are the envelope recipients, in order.
	Recipients []string
	// Delivery is each recipient's delivery status, in the same order
	// (queued when nothing was reported yet).
	Delivery []delivery.Status
	// Opened and Clicked count the recipients a person opened (a click
	// counts as an open) or clicked for; machine hits do not count.
	Opened  int
	Clicked int
}

// Overview is an account's totals over a period, for the console.
type Overview struct {
	// From and To bound the period: messages accepted in [From, To).
	From, To time.Time
	// Messages accepted in the period, and their recipients' copies.
	Messages   int
	Recipients int
	// Opened and Clicked count those copies a person opened (a click
	// counts as an open) or clicked a link in.
	Opened  int
	Clicked int
	// Filtered counts the hits on those messages that were not a person's,
	// by class (prefetch, scanner, self).
	Filtered map[string]int
	// Days are the period's days (UTC), oldest first, each with the counted
	// (people's) opens and clicks and the filtered hits of those messages
	// that happened that day.
	Days []DayTotals
}

// DayTotals is one day of an Overview.
type DayTotals struct {
	Day      time.Time // midnight UTC
	Opens    int
	Clicks   int
	Filtered int
}

// Browser is implemented by stores the web console can list: every backend
// of trackrelay. It is separate from Store so that the API's hot paths do
// not depend on it.
type Browser interface {
	// Messages returns a page of account's messages, newest first (by
	// AcceptedAt, then queue id), filtered by q.Search. The cost of a page
	// must not grow with how deep it is (keyset paging).
	Messages(ctx context.Context, account string, q MessageQuery) (*MessagePage, error)
	// Overview returns account's totals for messages accepted in
	// [from, to).
	Overview(ctx context.Context, account string, from, to time.Time) (*Overview, error)
}
