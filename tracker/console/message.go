package console

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// messageData is the message page's data.
type messageData struct {
	V          *store.MessageView
	Subject    string
	Summary    string
	Recipients []recipientRow
	Events     []eventRow
	Links      []store.LinkView
	Chart      chart
	EraseURL   string
}

type recipientRow struct {
	store.RecipientView
	Status  string
	Meaning string // what the status means, in a sentence
	Tone    string
}

type eventRow struct {
	store.EventView
	What    string // "Opened" | "Clicked"
	Who     string // the class in words
	Counted bool
	Reasons []string // sentences
}

// messagePage shows one message of the session's account; another
// account's, or one that does not exist, is not found.
func (h *Handler) messagePage(w http.ResponseWriter, r *http.Request, rq *request) {
	id := r.PathValue("id")
	v, err := h.store.Lookup(r.Context(), rq.account, id)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrErased) || (err == nil && v.ID != id) {
		h.renderError(w, r, http.StatusNotFound, "There is no message with this number in your account. It may have been erased.")
		return
	}
	if err != nil {
		h.storeFailed(w, r, "lookup", err)
		return
	}
	d := messageData{V: v, Subject: v.Subject, Links: v.Links, EraseURL: Prefix + "messages/" + url.PathEscape(v.ID) + "/erase"}
	d.Summary = messageSummary(v)
	for _, rv := range v.Recipients {
		d.Recipients = append(d.Recipients, recipientRow{RecipientView: rv, Status: statusWords(rv.Delivery.Status),
			Meaning: statusMeaning(rv.Delivery.Status), Tone: tone(rv.Delivery.Status)})
	}
	for _, e := range v.Events {
		row := eventRow{EventView: e, What: "Opened", Who: classWords(e.Class), Counted: classify.Counted(e.Class)}
		if e.Type == store.EventClick {
			row.What = "Clicked"
		}
		for _, reason := range e.Reasons {
			s, _ := explainReason(reason)
			row.Reasons = append(row.Reasons, s)
		}
		d.Events = append(d.Events, row)
	}
	d.Chart = eventChart(v)
	h.render(w, http.StatusOK, "message", &page{Title: subjectOr(v.Subject), Account: rq.account, CSRF: rq.csrf, Nav: "list", Data: d})
}

func subjectOr(s string) string {
	if s == "" {
		return "(no subject)"
	}
	return s
}

// messageSummary is the one sentence at the top of the page.
func messageSummary(v *store.MessageView) string {
	n := len(v.Recipients)
	tracked := 0
	for _, r := range v.Recipients {
		if r.Tracked {
			tracked++
		}
	}
	if tracked == 0 {
		return "Sent to " + plural(n, "recipient", "recipients") + "; no copy is tracked."
	}
	s := "Opened by " + itoa(v.Stats.UniqueOpens) + " of " + plural(tracked, "tracked recipient", "tracked recipients")
	switch v.Stats.UniqueClicks {
	case 0:
		s += "; no one clicked a link."
	case 1:
		s += "; 1 clicked a link."
	default:
		s += "; " + itoa(v.Stats.UniqueClicks) + " clicked a link."
	}
	return s
}

// eventChart counts people's opens and clicks over time, from the sending
// to the last event.
func eventChart(v *store.MessageView) chart {
	ss := []series{{Name: "opens", Class: "s-open"}, {Name: "clicks", Class: "s-click"}}
	end := v.AcceptedAt
	for _, e := range v.Events {
		if e.At.After(end) {
			end = e.At
		}
	}
	buckets, size := timeBuckets(v.AcceptedAt, end, len(ss))
	for _, e := range v.Events {
		if !classify.Counted(e.Class) {
			continue
		}
		i := int(e.At.Sub(buckets[0].start) / size)
		if i < 0 || i >= len(buckets) {
			continue
		}
		if e.Type == store.EventClick {
			buckets[i].counts[1]++
		} else {
			buckets[i].counts[0]++
		}
	}
	title := "Opens and clicks by people over time: " + plural(v.Stats.Opens, "open", "opens") + ", " + plural(v.Stats.Clicks, "click", "clicks") + "."
	return barChart(title, ss, buckets, labelFormatFor(size))
}

// erase erases the tracking data of one message of the session's account
// (as DELETE /api/v1/messages/{ref} does), then shows the list.
func (h *Handler) erase(w http.ResponseWriter, r *http.Request, rq *request) {
	id := r.PathValue("id")
	err := h.store.Erase(r.Context(), rq.account, id)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrErased) {
		h.renderError(w, r, http.StatusNotFound, "There is no message with this number in your account. It may have been erased already.")
		return
	}
	if err != nil {
		h.storeFailed(w, r, "erase", err)
		return
	}
	http.Redirect(w, r, Prefix+"?erased=1", http.StatusSeeOther)
}
