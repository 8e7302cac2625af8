package classify

import (
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"
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
// the cases below, burst_test.go and the tracker's TestReclassifiedBurst
// cover.
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
	later := delivered.Add(time.Hour)
	home := netip.MustParseAddr("203.0.113.9")
	for _, tc := range []struct {
		name      string
		click     bool
		method    string
		ip        string
		ua        string
		header    http.Header
		untracked bool
		at        time.Time
		class     string
		reason    string
	}{
		{name: "apple mail open from home", ua: uaAppleMail, class: Human},
		{name: "apple mpp prefetch", ua: uaAppleMail, ip: "17.58.101.4", class: Prefetch, reason: ReasonAppleMPPIP},
		{name: "apple mpp over ipv4-mapped ipv6", ua: uaAppleMail, ip: "::ffff:17.1.2.3", class: Prefetch, reason: ReasonAppleMPPIP},
		{name: "gmail image proxy", ua: uaGmailProxy, ip: "66.249.84.1", class: Proxy, reason: ReasonGoogleProxyUA},
		{name: "yahoo image proxy", ua: uaYahooProxy, class: Proxy, reason: ReasonYahooProxyUA},
		{name: "outlook desktop", ua: uaOutlookDesktop, class: Human},
		{name: "outlook word engine", ua: uaOutlookWord, class: Human},
		{name: "thunderbird", ua: uaThunderbird, class: Human},
		{name: "chrome click an hour later", click: true, ua: uaChrome, class: Human},
		{name: "chrome click 2s after delivery", click: true, ua: uaChrome, at: delivered.Add(2 * time.Second), class: Scanner, reason: "click-2s-after-delivery"},
		{name: "click 300ms after delivery", click: true, ua: uaEdge, at: delivered.Add(300 * time.Millisecond), class: Scanner, reason: "click-300ms-after-delivery"},
		{name: "open 2s after delivery is not a scanner", ua: uaAppleMail, at: delivered.Add(2 * time.Second), class: Human},
		{name: "head request", method: http.MethodHead, ua: uaChrome, class: Scanner, reason: ReasonHeadRequest},
		{name: "headless chrome", click: true, ua: uaHeadless, class: Scanner, reason: ReasonScannerUA},
		{name: "barracuda", click: true, ua: uaBarracuda, class: Scanner, reason: ReasonScannerUA},
		{name: "curl", ua: uaCurl, class: Scanner, reason: ReasonScannerUA},
		{name: "no user agent", ua: "", class: Scanner, reason: ReasonEmptyUA},
		{name: "chrome prefetch header", click: true, ua: uaChrome, header: http.Header{"Sec-Purpose": {"prefetch;prerender"}}, class: Prefetch, reason: ReasonPrefetchHeader},
		{name: "firefox x-moz prefetch", click: true, ua: uaFirefox, header: http.Header{"X-Moz": {"prefetch"}}, class: Prefetch, reason: ReasonPrefetchHeader},
		{name: "sender's own ip", ua: uaOutlookDesktop, ip: "192.0.2.10", class: Self, reason: ReasonSubmitterIP},
		{name: "sender's ip beats apple", ua: uaAppleMail, ip: "192.0.2.10", method: http.MethodHead, class: Self, reason: ReasonSubmitterIP},
		{name: "sender's own copy", ua: uaChrome, untracked: true, class: Self, reason: ReasonUntrackedCopy},
		{name: "gmail proxy from google's network", ua: uaGmailProxy, ip: "66.249.84.17", class: Proxy, reason: ReasonGoogleProxyIP},
		{name: "yahoo proxy from yahoo's network", ua: uaYahooProxy, ip: "98.137.10.1", class: Proxy, reason: ReasonYahooProxyIP},
		{name: "click through gmail's proxy network", click: true, ua: uaChrome, ip: "66.249.84.17", class: Scanner, reason: ReasonClickFromProxyIP},
		{name: "click with the proxy's agent", click: true, ua: uaGmailProxy, class: Scanner, reason: ReasonClickFromProxyIP},
		{name: "apple mpp prefetch of a click", click: true, ua: uaIOSMail, ip: "17.120.3.4", class: Prefetch, reason: ReasonAppleMPPIP},
		// Chrome's speculation rules send "Sec-Purpose: prefetch"
		// (https://wicg.github.io/nav-speculation/prefetch.html); older
		// Chrome and Safari send "Purpose: prefetch"; Firefox's link
		// prefetching sends "X-Moz: prefetch" (MDN, Link prefetching FAQ).
		{name: "purpose prefetch", click: true, ua: uaSafari, header: http.Header{"Purpose": {"prefetch"}}, class: Prefetch, reason: ReasonPrefetchHeader},
		{name: "safari top sites preview", ua: uaSafari, header: http.Header{"X-Purpose": {"preview"}}, class: Prefetch, reason: ReasonPrefetchHeader},
		{name: "curl HEAD link check", click: true, method: http.MethodHead, ua: uaCurl, class: Scanner, reason: ReasonHeadRequest},
		{name: "ios mail open", ua: uaIOSMail, class: Human},
		{name: "samsung internet click", click: true, ua: uaSamsungInternet, class: Human},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := Hit{Click: tc.click, Method: http.MethodGet, IP: home, Header: http.Header{}, UserAgent: tc.ua,
				At: later, SubmitIP: "192.0.2.10", Untracked: tc.untracked, DeliveredAt: delivered, ScannerWindow: 10 * time.Second}
			if tc.method != "" {
				h.Method = tc.method
			}
			if tc.ip != "" {
				h.IP = netip.MustParseAddr(tc.ip)
			}
			if tc.header != nil {
				h.Header = tc.header
			}
			if !tc.at.IsZero() {
				h.At = tc.at
			}
			v := Classify(h)
			if v.Class != tc.class {
				t.Errorf("class %s (reasons %v), want %s", v.Class, v.Reasons, tc.class)
			}
			if tc.reason != "" && !slices.Contains(v.Reasons, tc.reason) {
				t.Errorf("reasons %v lack %s", v.Reasons, tc.reason)
			}
			if len(v.Reasons) == 0 {
				t.Errorf("no reasons")
			}
			if tc.class == Human && !slices.Equal(v.Reasons, []string{ReasonNoMachineSignals}) {
				t.Errorf("human with reasons %v", v.Reasons)
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

// A hit on a message the store does not know has no submitter address
// and no delivery time: only the request speaks.
func TestClassify_unknownMessage(t *testing.T) {
	v := Classify(Hit{Click: true, Method: http.MethodGet, IP: netip.MustParseAddr("203.0.113.9"), Header: http.Header{}, UserAgent: uaChrome, At: time.Now(), ScannerWindow: 10 * time.Second})
	if v.Class != Human || v.Client != "Chrome" {
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
		v := Classify(Hit{Method: http.MethodGet, Header: h, UserAgent: tc.ua,
			IP: netip.MustParseAddr("203.0.113.9"), At: time.Now()})
		if v.Client != tc.want {
			t.Errorf("%s with Referer %q: client %q, want %q", clientName(tc.ua), tc.referer, v.Client, tc.want)
		}
		if v.Class != Human && tc.ua != uaGmailProxy {
			t.Errorf("Referer %q: class %s; the Referer names the client only", tc.referer, v.Class)
		}
	}
}
