package console

import (
	"html/template"
	"strconv"
	"time"
)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"when":   when,
	"iso":    func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"plural": plural,
	"axisY":  func(c chart) int { return c.Height - chartBottom },
	"deref": func(t *time.Time) time.Time {
		if t == nil {
			return time.Time{}
		}
		return *t
	},
}

// when formats a time for people: day, date and minute, in UTC (said so).
func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("Mon 2 Jan 2006, 15:04 UTC")
}

// plural returns "1 open", "2 opens".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func itoa(n int) string { return strconv.Itoa(n) }
