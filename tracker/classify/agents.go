package classify

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// scannerAgents are lower-case substrings of the user agents of security
// scanners, link checkers and HTTP libraries: robots, not people.
var scannerAgents = []struct{ sub, name string }{
	{"barracuda", "Barracuda"},
	{"ms-safelinks", "Microsoft Defender"},
	{"microsoft office protocol discovery", "Microsoft Office"},
	{"symantec messagelabs", "Symantec"},
	{"appengine-google", "Google App Engine"},
	{"google-safety", "Google"},
	{"mimecast", "Mimecast"},
	{"proofpoint", "Proofpoint"},
	{"urldefense", "Proofpoint"},
	{"messagelabs", "Symantec"},
	{"symantec", "Symantec"},
	{"forcepoint", "Forcepoint"},
	{"trendmicro", "Trend Micro"},
	{"trend micro", "Trend Micro"},
	{"sophos", "Sophos"},
	{"fireeye", "FireEye"},
	{"ironport", "Cisco"},
	{"zscaler", "Zscaler"},
	{"safelinks", "Microsoft Defender"},
	{"bingpreview", "Microsoft"},
	{"headlesschrome", "Headless Chrome"},
	{"phantomjs", "PhantomJS"},
	{"python-requests", "python-requests"},
	{"python-urllib", "Python"},
	{"aiohttp", "Python"},
	{"go-http-client", "Go"},
	{"curl/", "curl"},
	{"wget/", "Wget"},
	{"libwww-perl", "Perl"},
	{"java/", "Java"},
	{"okhttp", "OkHttp"},
	{"apache-httpclient", "Java"},
	{"node-fetch", "Node.js"},
	{"axios/", "Node.js"},
	{"scrapy", "Scrapy"},
	{"slackbot", "Slack"},
	{"twitterbot", "Twitter"},
	{"facebookexternalhit", "Facebook"},
	{"linkedinbot", "LinkedIn"},
	{"whatsapp", "WhatsApp"},
	{"skypeuripreview", "Skype"},
	{"googlebot", "Googlebot"},
	{"bot/", "Bot"},
	{"spider", "Bot"},
	{"crawler", "Bot"},
}

// uaInfo is what classification reads from a user agent.
type uaInfo struct {
	client                  string
	empty, scanner          bool
	googleProxy, yahooProxy bool
	// bare is an agent of exactly "Mozilla/5.0", as Mail Privacy
	// Protection sends.
	bare bool
	// gmailPrefetch is Gmail's image prefetcher (GmailPrefetchUA).
	gmailPrefetch bool
}

// GmailPrefetchUA is the agent of Gmail's image prefetcher, which loads a
// message's images seconds after delivery while its user has Gmail open,
// whether or not the message is read: not the GoogleImageProxy fetch of
// a real open (gmass.co/blog/false-opens-in-gmail/,
// bird.com/en-us/blog/gmail-prefetching-images).
const GmailPrefetchUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/42.0.2311.135 Safari/537.36 Edge/12.246 Mozilla/5.0"

// uaCache remembers the uaInfo of recent user agents: hits come from few
// distinct ones, and matching each against every table entry is the
// costliest part of classifying a hit.
var uaCache = struct {
	sync.Mutex
	m map[string]uaInfo
}{m: map[string]uaInfo{}}

const uaCacheSize = 4096

func lookupUA(userAgent string) uaInfo {
	uaCache.Lock()
	ui, ok := uaCache.m[userAgent]
	uaCache.Unlock()
	if ok {
		return ui
	}
	ua := strings.ToLower(userAgent)
	ui = uaInfo{
		client:      clientName(userAgent),
		empty:       strings.TrimSpace(ua) == "",
		googleProxy: strings.Contains(ua, "googleimageproxy"),
		yahooProxy:  strings.Contains(ua, "yahoomailproxy"),
		bare:        strings.TrimSpace(userAgent) == "Mozilla/5.0",
	}
	if strings.TrimSpace(userAgent) == GmailPrefetchUA {
		ui.gmailPrefetch, ui.client = true, "Gmail"
	}
	for _, s := range scannerAgents {
		if strings.Contains(ua, s.sub) {
			ui.scanner = true
			break
		}
	}
	uaCache.Lock()
	if len(uaCache.m) >= uaCacheSize {
		clear(uaCache.m)
	}
	uaCache.m[userAgent] = ui
	uaCache.Unlock()
	return ui
}

// webmailHosts names the web mail apps by the hosts their pages are served
// from. A browser showing a message in one of them sends that host in the
// Referer of the pixel's request and of a click's (the origin at least,
// under browsers' default referrer policy), while its user agent only names
// the browser. From the "email" section of Snowplow's referer-parser table
// (referers.yml: mail.google.*, mail.live.*, mail.yahoo.*, webmail.aol.*,
// and outlook.live.com from its pull request #142), with Outlook on the
// web's hosts for work and school accounts (outlook.office.com,
// outlook.office365.com, outlook.cloud.microsoft). A host matches itself
// and its subdomains; one ending in "." matches any top-level domain.
var webmailHosts = []struct{ host, name string }{
	{"outlook.live.com", "Outlook.com"},
	{"mail.live.com", "Outlook.com"},
	{"outlook.office.com", "Outlook on the web"},
	{"outlook.office365.com", "Outlook on the web"},
	{"outlook.cloud.microsoft", "Outlook on the web"},
	{"mail.google.", "Gmail"},
	{"mail.yahoo.", "Yahoo Mail"},
	{"mail.yahoo.com", "Yahoo Mail"},
	{"mail.aol.com", "AOL Mail"},
	{"webmail.aol.", "AOL Mail"},
}

// webmailClient returns the web mail app named by a request's Referer, or
// "".
func webmailClient(h http.Header) string {
	ref := h.Get("Referer")
	if ref == "" {
		return ""
	}
	u, err := url.Parse(ref)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return ""
	}
	host := strings.ToLower(u.Hostname())
	for _, w := range webmailHosts {
		if strings.HasSuffix(w.host, ".") {
			if tld, ok := strings.CutPrefix(host, w.host); ok && isTopLevel(tld) {
				return w.name
			}
			continue
		}
		if host == w.host || strings.HasSuffix(host, "."+w.host) {
			return w.name
		}
	}
	return ""
}

// isTopLevel reports whether s is a top-level domain ("com", "de") or a
// country's second-level one ("co.uk", "com.br"), as in mail.google.co.uk.
func isTopLevel(s string) bool {
	sld, cc, two := strings.Cut(s, ".")
	if !two {
		return s != ""
	}
	return len(cc) == 2 && !strings.Contains(cc, ".") && (sld == "co" || sld == "com" || sld == "ne" || sld == "or")
}

// clientName returns a readable name of the client behind a user agent, or
// "Unknown".
func clientName(userAgent string) string {
	ua := strings.ToLower(userAgent)
	has := func(s string) bool { return strings.Contains(ua, s) }
	switch {
	case strings.TrimSpace(ua) == "":
		return "Unknown"
	case has("googleimageproxy"):
		return "Gmail"
	case has("yahoomailproxy"):
		return "Yahoo Mail"
	case has("thunderbird/"):
		return "Thunderbird"
	case has("outlook-ios"), has("outlook-android"), has("microsoft outlook"), has("ms-office"),
		has("msoffice"), has("microsoft office"):
		return "Outlook"
	case has("airmail"):
		return "Airmail"
	case has("spark/") || has("readdle"):
		return "Spark"
	case has("superhuman"):
		return "Superhuman"
	case has("samsungbrowser/"):
		return "Samsung Internet"
	case has("edg/"), has("edge/"), has("edga/"), has("edgios/"):
		return "Edge"
	case has("opr/"), has("opera"):
		return "Opera"
	case has("firefox/"), has("fxios/"):
		return "Firefox"
	case has("crios/"), has("chrome/") && !has("headlesschrome"):
		return "Chrome"
	}
	for _, s := range scannerAgents {
		if strings.Contains(ua, s.sub) {
			return s.name
		}
	}
	apple := has("macintosh") || has("iphone") || has("ipad") || has("ipod")
	switch {
	case apple && has("applewebkit/") && has("version/") && has("safari/"):
		return "Safari"
	case apple && has("applewebkit/") && !has("safari/") && (has("iphone") || has("ipad") || has("ipod")):
		// Mail on iOS and iPadOS embeds WebKit without Safari's tokens.
		return "iOS Mail"
	case apple && has("applewebkit/") && !has("safari/"):
		// So does Mail on macOS.
		return "Apple Mail"
	case has("safari/") && has("version/"):
		return "Safari"
	case has("trident/"), has("msie "):
		return "Internet Explorer"
	case has("android"):
		return "Android"
	}
	return "Unknown"
}
