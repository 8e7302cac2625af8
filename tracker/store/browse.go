package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/cases"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/internal/subject"
	"github.com/trackrelay/trackrelay/tracker/classify"
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
	// AcceptedAt, then queue id, both descending), filtered by q.Search
	// (matched against SearchText, folded by FoldSearch). A cursor of
	// another backend or version is ErrBadCursor. The cost of a page
	// must not grow with how deep it is (keyset paging).
	Messages(ctx context.Context, account string, q MessageQuery) (*MessagePage, error)
	// Overview returns account's totals for messages accepted in
	// [from, to).
	Overview(ctx context.Context, account string, from, to time.Time) (*Overview, error)
}

// MaxOverviewDays bounds the period of Browser.Overview.
const MaxOverviewDays = 3660

// ErrBadPeriod is returned by Browser.Overview for a period that is empty,
// reversed or longer than MaxOverviewDays.
var ErrBadPeriod = errors.New("store: invalid overview period")

// MaxSubjectBytes is the longest Subject the stores keep, in bytes of
// UTF-8; TruncateSubject cuts longer ones.
const MaxSubjectBytes = subject.MaxBytes

// TruncateSubject returns s cut to at most MaxSubjectBytes, at a rune
// boundary.
func TruncateSubject(s string) string { return subject.Truncate(s) }

// FoldSearch returns s case-folded (Unicode full case folding), as both
// backends store the searchable text of a message and as they fold
// MessageQuery.Search, so that a search ignores case the same way in each.
func FoldSearch(s string) string { return cases.Fold().String(s) }

// SearchText is the text of m that MessageQuery.Search is matched against:
// its subject and recipient addresses, folded, each on a line of its own
// (a search, which cannot hold a line break, never spans two of them).
func SearchText(m *Message) string {
	var b strings.Builder
	b.WriteString(FoldSearch(m.Subject))
	for _, r := range m.Recipients {
		b.WriteByte('\n')
		b.WriteString(FoldSearch(r.Address))
	}
	return b.String()
}

// SearchNeedle returns q folded as SearchText is, and false when q cannot
// match any message (it holds a line break or NUL).
func SearchNeedle(q string) (string, bool) {
	if strings.ContainsAny(q, "\n\x00") {
		return "", false
	}
	return FoldSearch(q), true
}

// EncodeMessageCursor returns the opaque cursor of MessagePage.Next that
// follows the message accepted at at with queue id id.
func EncodeMessageCursor(at time.Time, id string) string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), uint64(at.UnixNano()))
	return base64.RawURLEncoding.EncodeToString(append(b, id...))
}

// DecodeMessageCursor returns the acceptance time and queue id of a cursor
// of EncodeMessageCursor, or ErrBadCursor.
func DecodeMessageCursor(c string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 9 || len(b) > 8+1024 || !utf8.Valid(b[8:]) || bytes.IndexByte(b[8:], 0) >= 0 {
		return time.Time{}, "", ErrBadCursor
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC(), string(b[8:]), nil
}

// Summarize returns the list line of m, counted as the API's view counts:
// deliveries, events and tallies are those BuildView takes.
func Summarize(m *Message, deliveries map[int]Delivery, events []Event, tallies map[int]*Tally) MessageSummary {
	v := BuildView(m, nil, deliveries, events, tallies)
	s := MessageSummary{
		ID:         m.ID,
		Subject:    m.Subject,
		AcceptedAt: m.AcceptedAt.UTC(),
		Recipients: make([]string, len(v.Recipients)),
		Delivery:   make([]delivery.Status, len(v.Recipients)),
	}
	for i, r := range v.Recipients {
		s.Recipients[i] = r.Address
		s.Delivery[i] = r.Delivery.Status
		if r.Opened {
			s.Opened++
		}
		if r.Clicks > 0 {
			s.Clicked++
		}
	}
	return s
}

// NewOverview returns an empty Overview of [from, to), with its days, for
// a backend to Add the period's messages to; ErrBadPeriod when the period
// is empty or longer than MaxOverviewDays.
func NewOverview(from, to time.Time) (*Overview, error) {
	from, to = from.UTC(), to.UTC()
	if !from.Before(to) || to.Sub(from) > MaxOverviewDays*24*time.Hour {
		return nil, ErrBadPeriod
	}
	o := &Overview{From: from, To: to, Filtered: map[string]int{}}
	for d := midnight(from); d.Before(to); d = d.AddDate(0, 0, 1) {
		o.Days = append(o.Days, DayTotals{Day: d})
	}
	return o, nil
}

func midnight(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Add counts one message accepted in the period, given as Summarize takes
// it. Filtered and Days count the events kept in detail (events); those
// past a copy's cap count only in Opened and Clicked, through tallies. A
// day counts the events in [From, To) only.
func (o *Overview) Add(m *Message, deliveries map[int]Delivery, events []Event, tallies map[int]*Tally) {
	v := BuildView(m, nil, deliveries, events, tallies)
	o.Messages++
	o.Recipients += len(v.Recipients)
	for _, r := range v.Recipients {
		if r.Opened {
			o.Opened++
		}
		if r.Clicks > 0 {
			o.Clicked++
		}
	}
	for _, e := range events {
		counted := classify.Counted(e.Class)
		if !counted {
			o.Filtered[e.Class]++
		}
		if len(o.Days) == 0 {
			continue
		}
		if e.At.Before(o.From) || !e.At.Before(o.To) {
			continue
		}
		i := int(midnight(e.At).Sub(o.Days[0].Day) / (24 * time.Hour))
		d := &o.Days[i]
		switch {
		case !counted:
			d.Filtered++
		case e.Type == EventOpen:
			d.Opens++
		case e.Type == EventClick:
			d.Clicks++
		}
	}
}
