package tracker

import (
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// Real user agents.
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
		uaIOSMail:         "Apple Mail",
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
		kind      Kind
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
		{name: "chrome click an hour later", kind: KindClick, ua: uaChrome, class: ClassHuman},
		{name: "chrome click 2s after delivery", kind: KindClick, ua: uaChrome, at: delivered.Add(2 * time.Second), class: ClassScanner, reason: "click-2s-after-delivery"},
		{name: "click 300ms after delivery", kind: KindClick, ua: uaEdge, at: delivered.Add(300 * time.Millisecond), class: ClassScanner, reason: "click-300ms-after-delivery"},
		{name: "open 2s after delivery is not a scanner", ua: uaAppleMail, at: delivered.Add(2 * time.Second), class: ClassHuman},
		{name: "head request", method: http.MethodHead, ua: uaChrome, class: ClassScanner, reason: ReasonHeadRequest},
		{name: "headless chrome", kind: KindClick, ua: uaHeadless, class: ClassScanner, reason: ReasonScannerUA},
		{name: "barracuda", kind: KindClick, ua: uaBarracuda, class: ClassScanner, reason: ReasonScannerUA},
		{name: "curl", ua: uaCurl, class: ClassScanner, reason: ReasonScannerUA},
		{name: "no user agent", ua: "", class: ClassScanner, reason: ReasonEmptyUA},
		{name: "chrome prefetch header", kind: KindClick, ua: uaChrome, header: http.Header{"Sec-Purpose": {"prefetch;prerender"}}, class: ClassPrefetch, reason: ReasonPrefetchHeader},
		{name: "firefox x-moz prefetch", kind: KindClick, ua: uaFirefox, header: http.Header{"X-Moz": {"prefetch"}}, class: ClassPrefetch, reason: ReasonPrefetchHeader},
		{name: "sender's own ip", ua: uaOutlookDesktop, ip: "192.0.2.10", class: ClassSelf, reason: ReasonSubmitterIP},
		{name: "sender's ip beats apple", ua: uaAppleMail, ip: "192.0.2.10", method: http.MethodHead, class: ClassSelf, reason: ReasonSubmitterIP},
		{name: "sender's own copy", ua: uaChrome, recipient: 1, class: ClassSelf, reason: ReasonUntrackedCopy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hit{kind: KindOpen, method: http.MethodGet, ip: home, header: http.Header{}, userAgent: tc.ua,
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
			if tc.class == ClassHuman && len(v.reasons) != 0 {
				t.Errorf("human with reasons %v", v.reasons)
			}
		})
	}
}

func TestClassify_unknownMessage(t *testing.T) {
	v := classify(hit{kind: KindClick, method: http.MethodGet, ip: netip.MustParseAddr("203.0.113.9"), header: http.Header{}, userAgent: uaChrome, at: time.Now(), window: 10 * time.Second})
	if v.class != ClassHuman || v.client != "Chrome" {
		t.Errorf("got %+v", v)
	}
}
