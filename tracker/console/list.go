package console

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// maxSearch bounds the search text.
const maxSearch = 200

// listData is the messages page's data.
type listData struct {
	Search  string
	Rows    []listRow
	Next    string // URL of the next (older) page; "" on the last
	Deeper  bool   // not the first page: offer the newest
	Notice  string
	Summary string // e.g. "50 messages" for screen readers and people
}

// listRow is one message of the list.
type listRow struct {
	ID         string
	Subject    string
	Sent       time.Time
	To         string // the first recipients, and how many more
	Recipients int
	Delivery   string
	Tone       string // ok | warn | bad: the delivery's colour
	Opened     int
	Clicked    int
}

// listPage shows the account's messages, newest first, a page at a time.
func (h *Handler) listPage(w http.ResponseWriter, r *http.Request, rq *request) {
	q := r.URL.Query()
	search := strings.TrimSpace(q.Get("q"))
	if len(search) > maxSearch {
		// Cut at a rune boundary: half a character would match nothing.
		n := maxSearch
		for n > 0 && !utf8.RuneStart(search[n]) {
			n--
		}
		search = search[:n]
	}
	after := q.Get("after")
	res, err := h.store.Messages(r.Context(), rq.account, store.MessageQuery{Search: search, After: after})
	if errors.Is(err, store.ErrBadCursor) {
		// A paging link from another version or backend: start over.
		to := Prefix
		if search != "" {
			to += "?" + url.Values{"q": {search}}.Encode()
		}
		http.Redirect(w, r, to, http.StatusSeeOther)
		return
	}
	if err != nil {
		h.storeFailed(w, r, "messages", err)
		return
	}
	d := listData{Search: search, Deeper: after != ""}
	if q.Get("erased") == "1" {
		d.Notice = "The tracking data of that message was erased. Its links keep working for the recipients."
	}
	for _, m := range res.Messages {
		d.Rows = append(d.Rows, summaryRow(m))
	}
	if res.Next != "" {
		v := url.Values{"after": {res.Next}}
		if search != "" {
			v.Set("q", search)
		}
		d.Next = Prefix + "?" + v.Encode()
	}
	switch {
	case len(d.Rows) == 0 && search != "":
		d.Summary = "No message matches “" + search + "”."
	case len(d.Rows) == 0:
		d.Summary = "No messages yet. Send an email through trackrelay and it shows here."
	default:
		d.Summary = plural(len(d.Rows), "message", "messages") + " on this page, newest first."
	}
	h.render(w, http.StatusOK, "list", &page{Title: "Sent messages", Account: rq.account, CSRF: rq.csrf, Nav: "list", Data: d})
}

// summaryRow puts a message's summary in words.
func summaryRow(m store.MessageSummary) listRow {
	row := listRow{ID: m.ID, Subject: m.Subject, Sent: m.AcceptedAt, Recipients: len(m.Recipients),
		Opened: m.Opened, Clicked: m.Clicked}
	const shown = 3
	to := m.Recipients
	if len(to) > shown {
		to = to[:shown]
	}
	row.To = strings.Join(to, ", ")
	if more := len(m.Recipients) - len(to); more > 0 {
		row.To += " and " + strconv.Itoa(more) + " more"
	}
	row.Delivery, row.Tone = deliverySummary(m.Delivery)
	return row
}

// deliverySummary says in a few words where a message's copies are.
func deliverySummary(statuses []delivery.Status) (string, string) {
	counts := map[delivery.Status]int{}
	for _, s := range statuses {
		counts[s]++
	}
	if len(counts) == 0 {
		return statusWords(delivery.Queued), "warn"
	}
	if len(counts) == 1 {
		s := statuses[0]
		return statusWords(s), tone(s)
	}
	var parts []string
	worst := "ok"
	for _, s := range []delivery.Status{delivery.Delivered, delivery.Queued, delivery.Deferred, delivery.Held, delivery.Bounced} {
		if n := counts[s]; n > 0 {
			parts = append(parts, strconv.Itoa(n)+" "+strings.ToLower(statusShort(s)))
			if t := tone(s); t == "bad" || (t == "warn" && worst == "ok") {
				worst = t
			}
		}
	}
	return strings.Join(parts, ", "), worst
}

func statusShort(s delivery.Status) string {
	switch s {
	case delivery.Queued:
		return "waiting"
	case delivery.Deferred:
		return "delayed"
	case delivery.Bounced:
		return "bounced"
	}
	return string(s)
}

func tone(s delivery.Status) string {
	switch s {
	case delivery.Delivered:
		return "ok"
	case delivery.Bounced, delivery.Held:
		return "bad"
	}
	return "warn"
}
