package console

import (
	"go/ast"
	"go/parser"
	"go/token"
	"html"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// TestEveryReasonExplained reads package classify's source: every Reason
// constant it declares has a sentence (those that are prefixes, with a
// name after them), and so does the click-<elapsed>-after-delivery reason.
func TestEveryReasonExplained(t *testing.T) {
	files, err := filepath.Glob("../classify/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("classify sources: %v", err)
	}
	fset := token.NewFileSet()
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range file.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Reason") {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Errorf("%s is not a string literal", name.Name)
						continue
					}
					value, _ := strconv.Unquote(lit.Value)
					found++
					r := value
					if strings.HasSuffix(value, ":") {
						r += "eop"
					}
					if s, ok := explainReason(r); !ok || s == "" {
						t.Errorf("classify.%s (%q) has no sentence", name.Name, value)
					}
				}
			}
		}
	}
	if found < 20 {
		t.Fatalf("found only %d Reason constants in package classify", found)
	}
	for _, r := range []string{"click-2s-after-delivery", "click-850ms-after-delivery", "gateway-range:newvendor"} {
		if _, ok := explainReason(r); !ok {
			t.Errorf("%q has no sentence", r)
		}
	}
	if _, ok := explainReason("some-future-reason"); ok {
		t.Error("an unknown reason is said to be known")
	}
	if s, _ := explainReason(classify.ReasonAppleMPPIP); !strings.Contains(s, "Apple Mail Privacy Protection") {
		t.Errorf("apple-mpp-ip: %q", s)
	}
}

// TestMessagePage: per recipient the delivery with the last reply, first
// and last open and the counts; every event with time, address, program,
// country, who in plain words and why; the links with their clicks; a
// chart; the erase form.
func TestMessagePage(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	resp, body := get(t, c, tc.srv.URL+"/ui/messages/Q1QUOTE")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d", resp.StatusCode)
	}
	text := html.UnescapeString(body)
	mustContain(t, text,
		"<h1>Your quote for the kitchen</h1>",
		"Opened by 1 of 2 tracked recipients; 1 clicked a link.",
		"client@example.net", "partner@example.org",
		"Delivered", "250 2.0.0 Ok: queued as 4F2A",
		"Delayed, trying again", "after 2 attempts", "451 4.7.1 Greylisted, try again later",
		"First opened", "Mon 2 Mar 2026, 11:15 UTC", "Last opened", "Tue 3 Mar 2026, 11:15 UTC",
		"2 opens, 1 click", // human + proxy opens; the human click
		"Not yet, as far as we can tell",
		// The timeline.
		"Apple Mail Privacy Protection loaded the images from Apple's network; this is not a person reading.",
		"Not a person: images loaded in advance for privacy",
		"It came from Microsoft Exchange Online Protection, a security gateway",
		"The link was clicked 3s after delivery",
		"Not a person: a security scanner or robot",
		"Lyon, FR", "198.51.100.7", "Safari", "A person · counted",
		"A person, through their mail provider's image proxy",
		"Mon 2 Mar 2026, 09:15 UTC", // the prefetch, 3 s after sending
		// The links: the scanner's click is not counted.
		"https://example.com/quote/42?x=1&y=2", "1 click by 1 person", "https://example.com/terms", "0 clicks",
		`action="/ui/messages/Q1QUOTE/erase"`, "Erase tracking data",
		// What each delivery status means for the sender.
		"Their mail server accepted it.", "It is tried again by itself",
	)
	_, bounced := get(t, c, tc.srv.URL+"/ui/messages/Q2INVOICE")
	mustContain(t, html.UnescapeString(bounced), "Not delivered (bounced)", "will not be tried again", "550 5.1.1 No such user")
	if n := strings.Count(body, "<li class=\"event "); n != 5 {
		t.Errorf("%d events in the timeline, want 5", n)
	}
	if n := strings.Count(body, "<rect "); n != 3 {
		// Three columns with people's hits: the open and click at 11:15,
		// the proxy's open the next day (hourly columns are too many for
		// 26 hours: 3-hour columns).
		t.Errorf("%d bars in the chart, want 3", n)
	}
	if !strings.Contains(body, `<svg viewBox="0 0 600 180" role="img" aria-label="Opens and clicks by people over time: 2 opens, 1 click."`) {
		t.Error("no labelled chart")
	}
}

// TestEveryStatusExplained: each delivery status has its words and a
// sentence saying what it means for the sender.
func TestEveryStatusExplained(t *testing.T) {
	for _, s := range []delivery.Status{delivery.Queued, delivery.Deferred, delivery.Delivered, delivery.Bounced, delivery.Held} {
		if statusWords(s) == string(s) || statusMeaning(s) == "" {
			t.Errorf("%s: words %q, meaning %q", s, statusWords(s), statusMeaning(s))
		}
	}
}

// TestListPage: newest first, subject, recipients, time, delivery in
// words, people's opens and clicks; search; keyset paging links.
func TestListPage(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	_, body := get(t, c, tc.srv.URL+"/ui/")
	text := html.UnescapeString(body)
	quote, invoice := strings.Index(text, "Your quote for the kitchen"), strings.Index(text, "Invoice 7")
	if quote < 0 || invoice < 0 || quote > invoice {
		t.Fatalf("not newest first (quote at %d, invoice at %d)", quote, invoice)
	}
	mustContain(t, text, "To client@example.net, partner@example.org", "Mon 2 Mar 2026, 09:15 UTC",
		"1 delivered, 1 delayed", "Opened by 1 of 2", "Clicked by 1",
		"Not delivered (bounced)", "Not opened yet", "No clicks", `href="/ui/messages/Q1QUOTE"`,
		"count people only")

	_, body = get(t, c, tc.srv.URL+"/ui/?q=GONE%40")
	if tc.store.lastSearch != "GONE@" {
		t.Errorf("searched %q", tc.store.lastSearch)
	}
	if strings.Contains(body, "kitchen") || !strings.Contains(body, "Invoice 7") {
		t.Error("search by recipient")
	}
	// A search longer than maxSearch is cut at a character, never inside one.
	long := "a" + strings.Repeat("é", maxSearch)
	get(t, c, tc.srv.URL+"/ui/?"+url.Values{"q": {long}}.Encode())
	if want := "a" + strings.Repeat("é", (maxSearch-1)/2); tc.store.lastSearch != want {
		t.Errorf("a long search was cut to %q, want %q", tc.store.lastSearch, want)
	}
	_, body = get(t, c, tc.srv.URL+"/ui/?q=nothing+like+it")
	mustContain(t, html.UnescapeString(body), "No message matches “nothing like it”.")

	// Paging: 120 more messages make three pages of 50.
	for i := range 120 {
		id := "P" + strconv.Itoa(1000+i)
		tc.store.put(store.Message{ID: id, Account: "alice", Subject: "Bulk " + id, AcceptedAt: t0.Add(time.Duration(i+1) * time.Hour),
			Recipients: []store.Recipient{{Address: "r@example.net", Tracked: true}}}, nil, nil)
	}
	seen := map[string]bool{}
	next := "/ui/"
	for pages := 0; next != ""; pages++ {
		if pages > 3 {
			t.Fatal("more than 3 pages")
		}
		_, body := get(t, c, tc.srv.URL+html.UnescapeString(next))
		for _, m := range regexp.MustCompile(`href="/ui/messages/([^"]+)"`).FindAllStringSubmatch(body, -1) {
			if seen[m[1]] {
				t.Errorf("%s on two pages", m[1])
			}
			seen[m[1]] = true
		}
		next = ""
		if m := regexp.MustCompile(`<a href="([^"]+)" rel="next">`).FindStringSubmatch(body); m != nil {
			next = m[1]
		}
	}
	if len(seen) != 122 {
		t.Errorf("%d messages over the pages, want 122", len(seen))
	}
	// A cursor the store cannot read starts over, keeping the search.
	resp, _ := get(t, c, tc.srv.URL+"/ui/?after=garbage&q=Bulk")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/?q=Bulk" {
		t.Errorf("bad cursor: %d %q, want 303 to /ui/?q=Bulk", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestOverviewPage: the period's totals, the filtered hits by kind, the
// chart; the period from the query.
func TestOverviewPage(t *testing.T) {
	tc := newTestConsole(t, nil)
	c := tc.client(t)
	tc.login(t, c, "alice", aliceKey)
	_, body := get(t, c, tc.srv.URL+"/ui/overview")
	text := html.UnescapeString(body)
	mustContain(t, text, "<span class=\"n\">2</span> messages sent, to 3 recipients", // the quote's two, the invoice's one
		"<span class=\"n\">1</span> person opened them", "<span class=\"n\">1</span> person clicked a link",
		"<span class=\"n\">2</span> machine hits filtered out",
		"<tr><td>Images loaded in advance (Apple Mail Privacy Protection and others)</td><td>1</td></tr>",
		"<tr><td>Security scanners and robots</td><td>1</td></tr>",
		"<tr><td>Your own opens and clicks</td><td>0</td></tr>",
		`aria-current="page">Last 30 days`, "<rect ")

	_, body = get(t, c, tc.srv.URL+"/ui/overview?from=2026-03-02&to=2026-03-02")
	text = html.UnescapeString(body)
	mustContain(t, text, "Messages sent from 2 Mar 2026 to 2 Mar 2026 (UTC).", "<span class=\"n\">1</span> message sent")
	_, body = get(t, c, tc.srv.URL+"/ui/overview?from=garbage&to=2026-03-02")
	mustContain(t, html.UnescapeString(body), "Those dates could not be read")
	// Dates a store cannot hold (its times end in 2262) are not asked for.
	for _, q := range []string{"from=9998-01-01&to=9998-12-31", "from=1600-01-01&to=1600-02-01"} {
		_, body = get(t, c, tc.srv.URL+"/ui/overview?"+q)
		mustContain(t, html.UnescapeString(body), "Those dates could not be read", `aria-current="page">Last 30 days`)
	}
}

// TestDeliverySummary puts mixed states in words, the worst tone winning.
func TestDeliverySummary(t *testing.T) {
	for _, tt := range []struct {
		in         []delivery.Status
		text, tone string
	}{
		{nil, "Waiting to be sent", "warn"},
		{[]delivery.Status{delivery.Delivered, delivery.Delivered}, "Delivered", "ok"},
		{[]delivery.Status{delivery.Delivered, delivery.Bounced, delivery.Deferred}, "1 delivered, 1 delayed, 1 bounced", "bad"},
		{[]delivery.Status{delivery.Queued, delivery.Delivered}, "1 delivered, 1 waiting", "warn"},
	} {
		text, tone := deliverySummary(tt.in)
		if text != tt.text || tone != tt.tone {
			t.Errorf("%v: %q %q, want %q %q", tt.in, text, tone, tt.text, tt.tone)
		}
	}
}
