package tracker

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/token"
)

// Real user agents, and where their shape is documented:
//   - Gmail's proxy: "... (via ggpht.com GoogleImageProxy)", as Google's
//     proxy announces itself (https://support.google.com/a/answer/3299041
//     describes the proxy; the string is the one logged by every sender).
//   - Yahoo's proxy: the user agent names its own help page,
//     https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html.
//   - Apple Mail (macOS, iOS): WebKit's user agent without the "Version/"
//     and "Safari/" tokens that only Safari adds (WebKit's
//     Source/WebCore/platform/cocoa/UserAgentCocoa.mm builds both).
//   - Outlook for Windows: "Microsoft Office/16.0 (...; Microsoft Outlook
//     16.0.x; Pro)" and, rendering with Word, the MSIE 7 compatible agent
//     with "ms-office; MSOffice 16".
//   - Browsers: the formats of https://www.chromium.org/updates/ua-reduction/
//     (Chrome, Edge "Edg/", Samsung "SamsungBrowser/") and MDN's
//     https://developer.mozilla.org/docs/Web/HTTP/Headers/User-Agent/Firefox.
//   - Headless Chrome: "HeadlessChrome/" replaces "Chrome/" (Chromium's
//     headless mode); link scanners that render pages use it.
//   - curl: "curl/VERSION" (curl's --user-agent default).
//
// Scanners such as Microsoft Defender Safe Links, Mimecast and Proofpoint
// mostly fetch with ordinary browser agents; what gives them away is timing
// (seconds after delivery), bursts over every link and HEAD requests, which
// the cases below and TestReclassifiedBurst cover.
const (
	uaAppleMail       = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
	uaIOSMail         = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
	uaGmailProxy      = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
	uaYahooProxy      = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
	uaOutlookDesktop  = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
	uaOutlookWord     = "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; Microsoft Outlook 16.0.5422; ms-office; MSOffice 16)"
	uaChrome          = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	uaEdge            = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"
	uaFirefox         = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
	uaSafari          = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
	uaThunderbird     = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.10.1"
	uaHeadless        = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"
	uaCurl            = "curl/8.5.0"
	uaBarracuda       = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
	uaAndroidChrome   = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36"
	uaOutlookIOS      = "Outlook-iOS/723.4027091.prod.iphone (4.2419.0)"
	uaSamsungInternet = "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"
)

func TestClientName(t *testing.T) {
	for ua, want := range map[string]string{
		uaAppleMail:       "Apple Mail",
		uaIOSMail:         "iOS Mail",
		uaGmailProxy:      "Gmail",
		uaYahooProxy:      "Yahoo Mail",
		uaOutlookDesktop:  "Outlook",
		uaOutlookWord:     "Outlook",
		uaOutlookIOS:      "Outlook",
		uaChrome:          "Chrome",
		uaAndroidChrome:   "Chrome",
		uaEdge:            "Edge",
		uaFirefox:         "Firefox",
		uaSafari:          "Safari",
		uaThunderbird:     "Thunderbird",
		uaSamsungInternet: "Samsung Internet",
		uaHeadless:        "Headless Chrome",
		uaCurl:            "curl",
		uaBarracuda:       "Barracuda",
		"":                "Unknown",
		"Mozilla/5.0":     "Unknown",
	} {
		if got := clientName(ua); got != want {
			t.Errorf("clientName(%q) = %q, want %q", ua, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	delivered := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	msg := &Message{ID: "Q1", SubmitIP: "192.0.2.10", Recipients: []Recipient{{Address: "bob@example.net", Tracked: true}, {Address: "alice@example.com"}}}
	later := delivered.Add(time.Hour)
	home := netip.MustParseAddr("203.0.113.9")
	for _, tc := range []struct {
		name      string
		kind      token.Kind
		method    string
		ip        string
		ua        string
		header    http.Header
		recipient int
		at        time.Time
		class     string
		reason    string
	}{
		{name: "apple mail open from home", ua: uaAppleMail, class: ClassHuman},
		{name: "apple mpp prefetch", ua: uaAppleMail, ip: "17.58.101.4", class: ClassPrefetch, reason: ReasonAppleMPPIP},
		{name: "apple mpp over ipv4-mapped ipv6", ua: uaAppleMail, ip: "::ffff:17.1.2.3", class: ClassPrefetch, reason: ReasonAppleMPPIP},
		{name: "gmail image proxy", ua: uaGmailProxy, ip: "66.249.84.1", class: ClassProxy, reason: ReasonGoogleProxyUA},
		{name: "yahoo image proxy", ua: uaYahooProxy, class: ClassProxy, reason: ReasonYahooProxyUA},
		{name: "outlook desktop", ua: uaOutlookDesktop, class: ClassHuman},
		{name: "outlook word engine", ua: uaOutlookWord, class: ClassHuman},
		{name: "thunderbird", ua: uaThunderbird, class: ClassHuman},
		{name: "chrome click an hour later", kind: token.KindClick, ua: uaChrome, class: ClassHuman},
		{name: "chrome click 2s after delivery", kind: token.KindClick, ua: uaChrome, at: delivered.Add(2 * time.Second), class: ClassScanner, reason: "click-2s-after-delivery"},
		{name: "click 300ms after delivery", kind: token.KindClick, ua: uaEdge, at: delivered.Add(300 * time.Millisecond), class: ClassScanner, reason: "click-300ms-after-delivery"},
		{name: "open 2s after delivery is not a scanner", ua: uaAppleMail, at: delivered.Add(2 * time.Second), class: ClassHuman},
		{name: "head request", method: http.MethodHead, ua: uaChrome, class: ClassScanner, reason: ReasonHeadRequest},
		{name: "headless chrome", kind: token.KindClick, ua: uaHeadless, class: ClassScanner, reason: ReasonScannerUA},
		{name: "barracuda", kind: token.KindClick, ua: uaBarracuda, class: ClassScanner, reason: ReasonScannerUA},
		{name: "curl", ua: uaCurl, class: ClassScanner, reason: ReasonScannerUA},
		{name: "no user agent", ua: "", class: ClassScanner, reason: ReasonEmptyUA},
		{name: "chrome prefetch header", kind: token.KindClick, ua: uaChrome, header: http.Header{"Sec-Purpose": {"prefetch;prerender"}}, class: ClassPrefetch, reason: ReasonPrefetchHeader},
		{name: "firefox x-moz prefetch", kind: token.KindClick, ua: uaFirefox, header: http.Header{"X-Moz": {"prefetch"}}, class: ClassPrefetch, reason: ReasonPrefetchHeader},
		{name: "sender's own ip", ua: uaOutlookDesktop, ip: "192.0.2.10", class: ClassSelf, reason: ReasonSubmitterIP},
		{name: "sender's ip beats apple", ua: uaAppleMail, ip: "192.0.2.10", method: http.MethodHead, class: ClassSelf, reason: ReasonSubmitterIP},
		{name: "sender's own copy", ua: uaChrome, recipient: 1, class: ClassSelf, reason: ReasonUntrackedCopy},
		{name: "gmail proxy from google's network", ua: uaGmailProxy, ip: "66.249.84.17", class: ClassProxy, reason: ReasonGoogleProxyIP},
		{name: "yahoo proxy from yahoo's network", ua: uaYahooProxy, ip: "98.137.10.1", class: ClassProxy, reason: ReasonYahooProxyIP},
		{name: "click through gmail's proxy network", kind: token.KindClick, ua: uaChrome, ip: "66.249.84.17", class: ClassScanner, reason: ReasonClickFromProxyIP},
		{name: "click with the proxy's agent", kind: token.KindClick, ua: uaGmailProxy, class: ClassScanner, reason: ReasonClickFromProxyIP},
		{name: "apple mpp prefetch of a click", kind: token.KindClick, ua: uaIOSMail, ip: "17.120.3.4", class: ClassPrefetch, reason: ReasonAppleMPPIP},
		// Chrome's speculation rules send "Sec-Purpose: prefetch"
		// (https://wicg.github.io/nav-speculation/prefetch.html); older
		// Chrome and Safari send "Purpose: prefetch"; Firefox's link
		// prefetching sends "X-Moz: prefetch" (MDN, Link prefetching FAQ).
		{name: "purpose prefetch", kind: token.KindClick, ua: uaSafari, header: http.Header{"Purpose": {"prefetch"}}, class: ClassPrefetch, reason: ReasonPrefetchHeader},
		{name: "safari top sites preview", ua: uaSafari, header: http.Header{"X-Purpose": {"preview"}}, class: ClassPrefetch, reason: ReasonPrefetchHeader},
		{name: "curl HEAD link check", kind: token.KindClick, method: http.MethodHead, ua: uaCurl, class: ClassScanner, reason: ReasonHeadRequest},
		{name: "ios mail open", ua: uaIOSMail, class: ClassHuman},
		{name: "samsung internet click", kind: token.KindClick, ua: uaSamsungInternet, class: ClassHuman},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hit{kind: token.KindOpen, method: http.MethodGet, ip: home, header: http.Header{}, userAgent: tc.ua,
				at: later, message: msg, recipient: tc.recipient, deliveredAt: delivered, window: 10 * time.Second}
			if tc.kind != 0 {
				h.kind = tc.kind
			}
			if tc.method != "" {
				h.method = tc.method
			}
			if tc.ip != "" {
				h.ip = netip.MustParseAddr(tc.ip)
			}
			if tc.header != nil {
				h.header = tc.header
			}
			if !tc.at.IsZero() {
				h.at = tc.at
			}
			v := classify(h)
			if v.class != tc.class {
				t.Errorf("class %s (reasons %v), want %s", v.class, v.reasons, tc.class)
			}
			if tc.reason != "" && !slices.Contains(v.reasons, tc.reason) {
				t.Errorf("reasons %v lack %s", v.reasons, tc.reason)
			}
			if len(v.reasons) == 0 {
				t.Errorf("no reasons")
			}
			if tc.class == ClassHuman && !slices.Equal(v.reasons, []string{ReasonNoMachineSignals}) {
				t.Errorf("human with reasons %v", v.reasons)
			}
		})
	}
}

func TestIPRangeFiles(t *testing.T) {
	for name, want := range map[string]string{
		"ipranges/apple-mpp.txt":          "17.0.0.0/8",
		"ipranges/google-image-proxy.txt": "66.249.64.0/19",
		"ipranges/yahoo-mail-proxy.txt":   "98.136.0.0/14",
	} {
		b, err := ipRangeFiles.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := parseRanges(string(b))
		if err != nil || len(ps) == 0 || !slices.Contains(ps, netip.MustParsePrefix(want)) {
			t.Errorf("%s: %v %v", name, ps, err)
		}
	}
	if _, err := parseRanges("10.0.0.0/8\nnot-a-prefix\n"); err == nil {
		t.Error("bad line accepted")
	}
}

func TestClassify_unknownMessage(t *testing.T) {
	v := classify(hit{kind: token.KindClick, method: http.MethodGet, ip: netip.MustParseAddr("203.0.113.9"), header: http.Header{}, userAgent: uaChrome, at: time.Now(), window: 10 * time.Second})
	if v.class != ClassHuman || v.client != "Chrome" {
		t.Errorf("got %+v", v)
	}
}

// Web mail shows up in the Referer of the pixel and of clicks; the user
// agent names only the browser.
func TestWebmailClient(t *testing.T) {
	for _, tc := range []struct{ ua, referer, want string }{
		{uaChrome, "https://outlook.live.com/", "Outlook.com"},
		{uaEdge, "https://outlook.live.com/mail/0/inbox/id/AQMkADAwATY3ZmYAZS1", "Outlook.com"},
		{uaFirefox, "https://mail.live.com/", "Outlook.com"},
		{uaChrome, "https://outlook.office.com/", "Outlook on the web"},
		{uaSafari, "https://outlook.office365.com/mail/", "Outlook on the web"},
		{uaEdge, "https://outlook.cloud.microsoft/", "Outlook on the web"},
		{uaChrome, "https://mail.google.com/", "Gmail"},
		{uaFirefox, "https://mail.google.co.uk/mail/u/0/", "Gmail"},
		{uaChrome, "https://mail.yahoo.com/", "Yahoo Mail"},
		{uaSafari, "https://uk.mail.yahoo.com/d/folders/1", "Yahoo Mail"},
		{uaChrome, "https://mail.aol.com/webmail-std/en-us/suite", "AOL Mail"},
		// Anything else keeps the browser's name.
		{uaChrome, "", "Chrome"},
		{uaChrome, "https://example.com/", "Chrome"},
		{uaChrome, "https://outlook.live.com.evil.example/", "Chrome"},
		{uaChrome, "https://notoutlook.live.com.example/", "Chrome"},
		{uaChrome, "https://mail.google.evil.example/", "Chrome"},
		{uaChrome, "https://notmail.google.com/", "Chrome"},
		{uaChrome, "javascript:alert(1)//outlook.live.com", "Chrome"},
		{uaChrome, "outlook.live.com", "Chrome"},
		// An image proxy is itself the client.
		{uaGmailProxy, "https://outlook.live.com/", "Gmail"},
	} {
		h := http.Header{}
		if tc.referer != "" {
			h.Set("Referer", tc.referer)
		}
		v := classify(hit{kind: token.KindOpen, method: http.MethodGet, header: h, userAgent: tc.ua,
			ip: netip.MustParseAddr("203.0.113.9"), at: time.Now()})
		if v.client != tc.want {
			t.Errorf("%s with Referer %q: client %q, want %q", clientName(tc.ua), tc.referer, v.client, tc.want)
		}
		if v.class != ClassHuman && tc.ua != uaGmailProxy {
			t.Errorf("Referer %q: class %s; the Referer names the client only", tc.referer, v.class)
		}
	}
}

// The burst rule: clicks on three or more distinct links of one copy
// within 5 s, first to last, the 5 s included, are all a scanner's,
// whatever order their hits arrive in. Self clicks take no part. The feed
// last gives each event the class the message view shows.
func TestClickBurst_rule(t *testing.T) {
	type click struct {
		link  int
		at    time.Duration // after base; in the order the hits arrive
		class string        // as classified alone; "" is human
		want  string
	}
	const h, sc, self = ClassHuman, ClassScanner, ClassSelf
	ms := time.Millisecond
	for _, tc := range []struct {
		name   string
		cap    int  // MaxEventsPerRecipient; 0 is the default
		opened bool // an open comes first (it takes a place under the cap)
		clicks []click
	}{
		{name: "two links", clicks: []click{{0, 0, "", h}, {1, 300 * ms, "", h}, {0, 600 * ms, "", h}, {1, 900 * ms, "", h}}},
		{name: "one link three times", clicks: []click{{0, 0, "", h}, {0, 100 * ms, "", h}, {0, 200 * ms, "", h}}},
		{name: "three links in 5.0 s", clicks: []click{{0, 0, "", sc}, {1, 2500 * ms, "", sc}, {2, 5000 * ms, "", sc}}},
		{name: "three links in 5.0004 s", clicks: []click{{0, 0, "", h}, {1, 2500 * ms, "", h}, {2, 5000*ms + 400*time.Microsecond, "", h}}},
		{name: "three links in 5.1 s", clicks: []click{{0, 0, "", h}, {1, 2500 * ms, "", h}, {2, 5100 * ms, "", h}}},
		{name: "three links over 10 s, the middle one last", clicks: []click{{0, 0, "", h}, {1, 10 * time.Second, "", h}, {2, 5 * time.Second, "", h}}},
		{name: "out of order", clicks: []click{
			{0, 10 * time.Second, "", sc}, {1, 0, "", h}, {2, 7 * time.Second, "", sc}, {3, 9 * time.Second, "", sc}}},
		{name: "a click 0.5 s before the burst's 5 s", clicks: []click{
			{0, 0, "", h}, {1, 5500 * ms, "", sc}, {2, 6 * time.Second, "", sc}, {3, 6500 * ms, "", sc}}},
		{name: "a later click on a burst's link", clicks: []click{
			{0, 0, "", sc}, {1, time.Second, "", sc}, {2, 2 * time.Second, "", sc},
			{0, 4 * time.Second, "", sc}, // within 5 s of all three links
			{0, 8 * time.Second, "", h},  // within 5 s of the last two clicks only: links 2 and 0
		}},
		{name: "self clicks take no part", clicks: []click{{0, 0, self, self}, {1, time.Second, self, self}, {2, 2 * time.Second, "", h}}},
		{name: "a burst over the cap", cap: 2, clicks: []click{{0, 0, "", sc}, {1, time.Second, "", sc}, {2, 2 * time.Second, "", sc}}},
		{name: "a burst past the cap", cap: 1, opened: true, clicks: []click{{0, 0, "", sc}, {1, time.Second, "", sc}, {2, 2 * time.Second, "", sc}}},
		{name: "out of order past the cap", cap: 1, opened: true, clicks: []click{
			{0, 10 * time.Second, "", sc}, {1, 0, "", h}, {2, 7 * time.Second, "", sc}, {3, 9 * time.Second, "", sc}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testStore(t, BoltOptions{MaxEventsPerRecipient: tc.cap})
			ctx := context.Background()
			m := putTestMessage(t, s)
			base := testAccepted.Add(time.Hour)
			if tc.opened {
				if err := s.AddEvent(ctx, Event{Type: EventOpen, Message: m.ID, Link: -1, Class: ClassHuman, At: base.Add(-time.Minute)}); err != nil {
					t.Fatal(err)
				}
			}
			counted := 0
			for _, c := range tc.clicks {
				e := Event{Type: EventClick, Message: m.ID, Link: c.link, Class: c.class, At: base.Add(c.at)}
				if e.Class == "" {
					e.Class, e.Reasons = ClassHuman, []string{ReasonNoMachineSignals}
				}
				if err := s.AddEvent(ctx, e); err != nil {
					t.Fatal(err)
				}
				if c.want == ClassHuman {
					counted++
				}
			}
			v, err := s.Lookup(ctx, "alice", m.ID)
			if err != nil {
				t.Fatal(err)
			}
			p, err := s.Feed(ctx, "alice", "", MaxFeedLimit)
			if err != nil {
				t.Fatal(err)
			}
			fed := lastClasses(p.Events)
			listed := v.Events
			if tc.opened {
				listed = listed[1:]
			}
			for i, ev := range listed {
				c := tc.clicks[i]
				burst := slices.Contains(ev.Reasons, ReasonClickBurst)
				if ev.Class != c.want || burst != (c.want == ClassScanner) || (burst && slices.Contains(ev.Reasons, ReasonNoMachineSignals)) {
					t.Errorf("click %d (link %d at %v): %s %v, want %s", i, c.link, c.at, ev.Class, ev.Reasons, c.want)
				}
				if fed[ev.ID] != ev.Class {
					t.Errorf("click %d (link %d at %v): the feed last said %q, the view says %s", i, c.link, c.at, fed[ev.ID], ev.Class)
				}
			}
			if got := v.Recipients[0].Clicks; got != counted {
				t.Errorf("%d clicks counted, want %d", got, counted)
			}
		})
	}
}

// Whatever order a copy's clicks arrive in, each ends up with the class
// the burst rule gives it with all of them known, and the feed last gives
// it that class: random clicks on four links over 15 s, in random order,
// against the rule computed by brute force.
func TestClickBurst_anyOrder(t *testing.T) {
	s := testStore(t, BoltOptions{MaxEventsPerRecipient: 10000})
	ctx := context.Background()
	m := putTestMessage(t, s)
	rng := rand.New(rand.NewPCG(16, 6))
	type click struct {
		link int
		at   time.Time
	}
	var want []string // by arrival
	for round := range 40 {
		base := testAccepted.Add(time.Duration(round+1) * time.Hour)
		clicks := make([]click, 4+rng.IntN(9))
		for i := range clicks {
			// Whole 100 ms steps, so that windows of exactly 5 s occur.
			clicks[i] = click{rng.IntN(4), base.Add(time.Duration(rng.IntN(151)) * 100 * time.Millisecond)}
		}
		for _, c := range clicks {
			// In a burst: some window of 5 s from one click's time holds
			// c and clicks on three distinct links.
			burst := false
			for _, start := range clicks {
				end := start.at.Add(burstWindow)
				if c.at.Before(start.at) || c.at.After(end) {
					continue
				}
				links := map[int]bool{}
				for _, o := range clicks {
					if !o.at.Before(start.at) && !o.at.After(end) {
						links[o.link] = true
					}
				}
				burst = burst || len(links) >= burstLinks
			}
			if burst {
				want = append(want, ClassScanner)
			} else {
				want = append(want, ClassHuman)
			}
		}
		// Clicks were drawn in random order of time: they arrive so.
		for _, c := range clicks {
			e := Event{Type: EventClick, Message: m.ID, Link: c.link, Class: ClassHuman, Reasons: []string{ReasonNoMachineSignals}, At: c.at}
			if err := s.AddEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	var fed []FeedEntry
	for after := ""; ; {
		p, err := s.Feed(ctx, "alice", after, MaxFeedLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) == 0 {
			break
		}
		fed, after = append(fed, p.Events...), p.Next
	}
	last := lastClasses(fed)
	if len(v.Events) != len(want) {
		t.Fatalf("%d events, want %d", len(v.Events), len(want))
	}
	bursts := 0
	for i, ev := range v.Events {
		if ev.Class != want[i] {
			t.Errorf("click %d (%v): %s %v, want %s", i, ev.At, ev.Class, ev.Reasons, want[i])
		}
		if last[ev.ID] != ev.Class {
			t.Errorf("click %d (%v): the feed last said %q, the view says %s", i, ev.At, last[ev.ID], ev.Class)
		}
		if want[i] == ClassScanner {
			bursts++
		}
	}
	// Both verdicts are well represented.
	if bursts < len(want)/4 || bursts > len(want)*3/4 {
		t.Errorf("%d of %d clicks in bursts: change the seed", bursts, len(want))
	}
}
