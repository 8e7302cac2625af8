package console

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Overview periods: the default, and the longest one asked at once.
const (
	defaultPeriodDays = 30
	maxPeriodDays     = 366
)

// The dates the overview reads: the stores keep times as nanoseconds
// since 1970 in 64 bits, which end in 2262.
var (
	firstDate = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	lastDate  = time.Date(2200, 12, 31, 0, 0, 0, 0, time.UTC)
)

// periodChoices are the quick choices offered above the overview.
var periodChoices = []int{7, 30, 90, 365}

// overviewData is the overview page's data.
type overviewData struct {
	From, To  string // the form's dates (To inclusive)
	Days      int
	Choices   []periodChoice
	Period    string // the period in words
	O         *store.Overview
	Filtered  []filteredRow
	FilterSum int
	Chart     chart
	Notice    string
}

type periodChoice struct {
	Days    int
	URL     string
	Current bool
}

type filteredRow struct {
	Kind  string
	Count int
}

// overviewPage shows the account's totals over a period: the last
// ?days= days, or ?from= to ?to= (dates, both included).
func (h *Handler) overviewPage(w http.ResponseWriter, r *http.Request, rq *request) {
	from, to, days, notice := period(r, h.now())
	o, err := h.store.Overview(r.Context(), rq.account, from, to)
	if err != nil {
		h.storeFailed(w, r, "overview", err)
		return
	}
	d := overviewData{From: from.Format(time.DateOnly), To: to.Add(-24 * time.Hour).Format(time.DateOnly), Days: days, O: o, Notice: notice,
		Period: from.Format("2 Jan 2006") + " to " + to.Add(-24*time.Hour).Format("2 Jan 2006") + " (UTC)"}
	for _, n := range periodChoices {
		d.Choices = append(d.Choices, periodChoice{Days: n, URL: Prefix + "overview?days=" + strconv.Itoa(n), Current: n == days})
	}
	for _, class := range []string{classify.Prefetch, classify.Scanner, classify.Self} {
		d.Filtered = append(d.Filtered, filteredRow{Kind: filteredWords(class), Count: o.Filtered[class]})
		d.FilterSum += o.Filtered[class]
	}
	for class, n := range o.Filtered {
		if !slices.Contains([]string{classify.Prefetch, classify.Scanner, classify.Self}, class) && n > 0 {
			d.Filtered = append(d.Filtered, filteredRow{Kind: filteredWords(class), Count: n})
			d.FilterSum += n
		}
	}
	d.Chart = overviewChart(o)
	h.render(w, http.StatusOK, "overview", &page{Title: "Overview", Account: rq.account, CSRF: rq.csrf, Nav: "overview", Data: d})
}

// period reads the overview's period from the query: [from, to) in whole
// UTC days, days is the length when it is one of the quick choices.
func period(r *http.Request, now time.Time) (from, to time.Time, days int, notice string) {
	q := r.URL.Query()
	today := now.UTC().Truncate(24 * time.Hour)
	to = today.Add(24 * time.Hour)
	days = defaultPeriodDays
	if f, t := q.Get("from"), q.Get("to"); f != "" || t != "" {
		ft, err1 := time.Parse(time.DateOnly, f)
		tt, err2 := time.Parse(time.DateOnly, t)
		if err1 != nil || err2 != nil || tt.Before(ft) || ft.Before(firstDate) || tt.After(lastDate) {
			notice = "Those dates could not be read; showing the last " + strconv.Itoa(days) + " days."
		} else {
			to = tt.Add(24 * time.Hour)
			from = ft
			if to.Sub(from) > maxPeriodDays*24*time.Hour {
				from = to.Add(-maxPeriodDays * 24 * time.Hour)
				notice = "A period is at most " + strconv.Itoa(maxPeriodDays) + " days; showing the last " + strconv.Itoa(maxPeriodDays) + " days of it."
			}
			return from, to, int(to.Sub(from) / (24 * time.Hour)), notice
		}
	} else if n, err := strconv.Atoi(q.Get("days")); err == nil && n > 0 {
		days = min(n, maxPeriodDays)
	}
	return to.Add(-time.Duration(days) * 24 * time.Hour), to, days, notice
}

// overviewChart draws the period's days: people's opens and clicks, and
// the machine hits filtered out.
func overviewChart(o *store.Overview) chart {
	ss := []series{{Name: "opens", Class: "s-open"}, {Name: "clicks", Class: "s-click"}, {Name: "machine hits filtered out", Class: "s-filtered"}}
	// Long periods are drawn by week or month: a bar per day would be too
	// thin to see.
	var buckets []bucket
	size := 24 * time.Hour
	if len(o.Days) > 0 {
		if len(o.Days) <= 31 {
			buckets = dayBuckets(o.Days[0].Day, len(o.Days), len(ss))
		} else {
			buckets, size = timeBuckets(o.Days[0].Day, o.Days[len(o.Days)-1].Day, len(ss))
		}
		for _, d := range o.Days {
			i := int(d.Day.Sub(buckets[0].start) / size)
			if i < 0 || i >= len(buckets) {
				continue
			}
			buckets[i].counts[0] += d.Opens
			buckets[i].counts[1] += d.Clicks
			buckets[i].counts[2] += d.Filtered
		}
	}
	title := "People's opens and clicks, and machine hits filtered out, " + periodWords(size) + "."
	return barChart(title, ss, buckets, "2 Jan 2006")
}

// dayBuckets is one column per day for n days from first.
func dayBuckets(first time.Time, n, nseries int) []bucket {
	out := make([]bucket, n)
	for i := range out {
		out[i] = bucket{start: first.UTC().Add(time.Duration(i) * 24 * time.Hour), counts: make([]int, nseries)}
	}
	return out
}

// periodWords says how the chart's columns group the days.
func periodWords(size time.Duration) string {
	if size <= 24*time.Hour {
		return "by day"
	}
	return "by " + strconv.Itoa(int(size/(24*time.Hour))) + " days"
}
