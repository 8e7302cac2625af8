package store

import (
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
)

// MessageView is the JSON answer of GET /api/v1/messages/{ref}.
type MessageView struct {
	ID         string          `json:"id"`
	MessageID  string          `json:"message_id"`
	Account    string          `json:"account"`
	From       string          `json:"from"`
	Subject    string          `json:"subject"` // decoded (RFC 2047)
	AcceptedAt time.Time       `json:"accepted_at"`
	Mode       string          `json:"mode"`
	Recipients []RecipientView `json:"recipients"`
	Links      []LinkView      `json:"links"`
	Events     []EventView     `json:"events"`
	// Stats sums the recipients' counts.
	Stats StatsView `json:"stats"`
}

// StatsView counts what people did with a message, over all recipients:
// totals, and unique counts (recipients who opened, who clicked).
type StatsView struct {
	Opens         int        `json:"opens"`
	UniqueOpens   int        `json:"unique_opens"`
	Clicks        int        `json:"clicks"`
	UniqueClicks  int        `json:"unique_clicks"`
	FirstOpenedAt *time.Time `json:"first_opened_at"`
	LastOpenedAt  *time.Time `json:"last_opened_at"`
	// Events counts every event recorded, of any class, including those
	// no longer listed in detail (over the per-recipient cap, or past
	// retention).
	Events int `json:"events_total"`
}

// RecipientView is one recipient of a MessageView. Opened, FirstOpenedAt,
// Opens and Clicks count only what a person did (classes human and proxy).
type RecipientView struct {
	Address  string       `json:"address"`
	Tracked  bool         `json:"tracked"`
	Delivery DeliveryView `json:"delivery"`
	// Opened is true once a counted open or click was seen (a click implies
	// the message was opened, even with images blocked).
	Opened bool `json:"opened"`
	// FirstOpenedAt is the time of the first counted open or click; null
	// when not opened.
	FirstOpenedAt *time.Time `json:"first_opened_at"`
	// LastOpenedAt is the time of the latest counted open or click.
	LastOpenedAt *time.Time `json:"last_opened_at"`
	Opens        int        `json:"opens"`
	Clicks       int        `json:"clicks"`
	// EventsTotal counts every event of this copy, of any class, listed
	// or not.
	EventsTotal int `json:"events_total"`
}

// DeliveryView is the delivery state of one recipient's copy.
type DeliveryView struct {
	Status       delivery.Status `json:"status"`
	Attempts     int             `json:"attempts"`
	LastResponse string          `json:"last_response"`
	UpdatedAt    time.Time       `json:"updated_at"`
}

// LinkView is one tracked link of a message, with its counted clicks.
type LinkView struct {
	Index  int    `json:"index"`
	URL    string `json:"url"`
	Clicks int    `json:"clicks"`
	// UniqueClicks is the number of recipients who clicked it.
	UniqueClicks int `json:"unique_clicks"`
}

// EventView is one tracking event as the API shows it, with its current
// class and the reasons for it.
type EventView struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	At        time.Time `json:"at"`
	Recipient string    `json:"recipient"`
	Link      string    `json:"link,omitempty"`
	IP        string    `json:"ip"`
	UserAgent string    `json:"user_agent"`
	Client    string    `json:"client"`
	// Country (ISO 3166-1 alpha-2) and City (English name) of the client,
	// with tracking.geoip_db set and the address in the database.
	Country string   `json:"country,omitempty"`
	City    string   `json:"city,omitempty"`
	Class   string   `json:"class"`
	Reasons []string `json:"reasons"`
}

// Tally counts a copy's events that are not kept in detail (past the
// store's cap per copy, or expired). Opens, Clicks, Links (clicks by link
// index), First and Last count only what a person did (classify.Counted).
type Tally struct {
	Events int
	Opens  int
	Clicks int
	Links  map[int]int
	First  *time.Time
	Last   *time.Time
}

// BuildView assembles the API view of m. deliveries is indexed by recipient
// (missing entries are queued), events are in commit order with their
// stored classes, which are the ones the feed and webhooks last gave them
// (a verdict changes only when an event is committed, with a reclassified
// entry), tallies count each recipient's events not kept in detail.
func BuildView(m *Message, links []string, deliveries map[int]Delivery, events []Event, tallies map[int]*Tally) *MessageView {
	v := &MessageView{
		ID:         m.ID,
		MessageID:  m.MessageID,
		Account:    m.Account,
		From:       m.From,
		Subject:    m.Subject,
		AcceptedAt: m.AcceptedAt.UTC(),
		Mode:       m.Mode,
		Recipients: make([]RecipientView, len(m.Recipients)),
		Links:      make([]LinkView, len(links)),
		Events:     make([]EventView, 0, len(events)),
	}
	for i, r := range m.Recipients {
		d, ok := deliveries[i]
		if !ok {
			d = Delivery{Status: delivery.Queued, UpdatedAt: m.AcceptedAt}
		}
		v.Recipients[i] = RecipientView{
			Address: r.Address,
			Tracked: r.Tracked,
			Delivery: DeliveryView{
				Status:       d.Status,
				Attempts:     d.Attempts,
				LastResponse: d.LastResponse,
				UpdatedAt:    d.UpdatedAt.UTC(),
			},
		}
	}
	for i, u := range links {
		v.Links[i] = LinkView{Index: i, URL: u}
	}
	for _, e := range events {
		// A click on a link the store has no URL for (links not reported)
		// still shows its destination, taken from the signed token.
		if e.Type == EventClick && e.Link >= len(v.Links) && e.Link < len(v.Links)+1024 {
			for j := len(v.Links); j <= e.Link; j++ {
				v.Links = append(v.Links, LinkView{Index: j})
			}
		}
		if e.Type == EventClick && e.Link >= 0 && e.Link < len(v.Links) && v.Links[e.Link].URL == "" {
			v.Links[e.Link].URL = e.URL
		}
	}
	clicked := make([]map[int]bool, len(v.Recipients)) // links each recipient clicked
	for i := range clicked {
		clicked[i] = map[int]bool{}
	}
	for _, e := range events {
		ev := EventView{
			ID:        e.ID,
			Type:      e.Type,
			At:        e.At.UTC(),
			IP:        e.IP,
			UserAgent: e.UserAgent,
			Client:    e.Client,
			Country:   e.Country,
			City:      e.City,
			Class:     e.Class,
			Reasons:   e.Reasons,
		}
		if ev.Reasons == nil {
			ev.Reasons = []string{}
		}
		var rv *RecipientView
		if e.Recipient >= 0 && e.Recipient < len(v.Recipients) {
			rv = &v.Recipients[e.Recipient]
			ev.Recipient = rv.Address
		}
		if e.Type == EventClick {
			ev.Link = e.URL
			if e.Link >= 0 && e.Link < len(v.Links) {
				if v.Links[e.Link].URL != "" {
					ev.Link = v.Links[e.Link].URL
				}
				if classify.Counted(e.Class) {
					v.Links[e.Link].Clicks++
				}
			}
		}
		v.Events = append(v.Events, ev)
		if rv == nil {
			continue
		}
		rv.EventsTotal++
		if !classify.Counted(e.Class) {
			continue
		}
		switch e.Type {
		case EventOpen:
			rv.Opens++
		case EventClick:
			rv.Clicks++
			if e.Link >= 0 && e.Link < len(v.Links) {
				clicked[e.Recipient][e.Link] = true
			}
		}
		rv.seen(ev.At)
	}
	for i, t := range tallies {
		if i < 0 || i >= len(v.Recipients) {
			continue
		}
		rv := &v.Recipients[i]
		rv.EventsTotal += t.Events
		rv.Opens += t.Opens
		rv.Clicks += t.Clicks
		for l, n := range t.Links {
			if l >= 0 && l < len(v.Links) && n > 0 {
				v.Links[l].Clicks += n
				clicked[i][l] = true
			}
		}
		if t.First != nil {
			rv.seen(*t.First)
		}
		if t.Last != nil {
			rv.seen(*t.Last)
		}
	}
	for i := range v.Recipients {
		rv := &v.Recipients[i]
		st := &v.Stats
		st.Events += rv.EventsTotal
		st.Opens += rv.Opens
		st.Clicks += rv.Clicks
		if rv.Opened {
			st.UniqueOpens++
			if st.FirstOpenedAt == nil || rv.FirstOpenedAt.Before(*st.FirstOpenedAt) {
				st.FirstOpenedAt = rv.FirstOpenedAt
			}
			if st.LastOpenedAt == nil || rv.LastOpenedAt.After(*st.LastOpenedAt) {
				st.LastOpenedAt = rv.LastOpenedAt
			}
		}
		if rv.Clicks > 0 {
			st.UniqueClicks++
		}
		for l := range clicked[i] {
			v.Links[l].UniqueClicks++
		}
	}
	return v
}

// seen records a counted open or click at at.
func (rv *RecipientView) seen(at time.Time) {
	at = at.UTC()
	rv.Opened = true
	if rv.FirstOpenedAt == nil || at.Before(*rv.FirstOpenedAt) {
		rv.FirstOpenedAt = &at
	}
	if rv.LastOpenedAt == nil || at.After(*rv.LastOpenedAt) {
		rv.LastOpenedAt = &at
	}
}
