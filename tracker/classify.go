package tracker

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Reasons recorded with an event's class. Besides these, a click within the
// scanner window of delivery is recorded with the reason
// "click-<elapsed>-after-delivery", e.g. "click-2s-after-delivery".
const (
	ReasonSubmitterIP    = "submitter-ip"          // hit from the IP that submitted the message
	ReasonUntrackedCopy  = "untracked-copy"        // hit on a copy that was not to be tracked (sender's own)
	ReasonAppleMPPIP     = "apple-mpp-ip"          // Apple's 17.0.0.0/8 (Mail Privacy Protection)
	ReasonPrefetchHeader = "prefetch-header"       // Sec-Purpose / Purpose / X-Moz / X-Purpose prefetch
	ReasonGoogleProxyUA  = "google-image-proxy-ua" // Gmail's image proxy
	ReasonYahooProxyUA   = "yahoo-image-proxy-ua"  // Yahoo Mail's image proxy
	ReasonHeadRequest    = "head-request"          // browsers and mail clients GET; robots HEAD
	ReasonScannerUA      = "scanner-ua"            // a known scanner, robot or HTTP library
	ReasonEmptyUA        = "empty-user-agent"      // no user agent at all
	ReasonClickBurst     = "click-burst"           // several links clicked at once (set when reading)
)

// hit is what classification looks at.
type hit struct {
	kind        Kind
	method      string
	ip          netip.Addr
	header      http.Header
	userAgent   string
	at          time.Time
	message     *Message  // nil when unknown
	recipient   int       // index in message.Recipients
	deliveredAt time.Time // zero when not (known to be) delivered
	window      time.Duration
}

// verdict is the result of classify.
type verdict struct {
	class   string
	client  string
	reasons []string
}

var appleMPP = netip.MustParsePrefix("17.0.0.0/8")

// scannerAgents are lower-case substrings of the user agents of security
// scanners, link checkers and HTTP libraries: robots, not people.
var scannerAgents = []struct{ sub, name string }{
	{"barracuda", "Barracuda"},
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

// classify decides the class, reasons and readable client of a hit.
// Evidence is collected first; the class is the strongest one found, in the
// order self, scanner, prefetch, proxy, human.
func classify(h hit) verdict {
	v := verdict{client: clientName(h.userAgent)}
	var self, scanner, prefetch, proxy bool
	add := func(flag *bool, reason string) {
		*flag = true
		v.reasons = append(v.reasons, reason)
	}
	if m := h.message; m != nil {
		if m.SubmitIP != "" && h.ip.IsValid() {
			if sip, err := netip.ParseAddr(m.SubmitIP); err == nil && sip.Unmap() == h.ip.Unmap() {
				add(&self, ReasonSubmitterIP)
			}
		}
		if h.recipient >= 0 && h.recipient < len(m.Recipients) && !m.Recipients[h.recipient].Tracked {
			add(&self, ReasonUntrackedCopy)
		}
	}
	if h.method == http.MethodHead {
		add(&scanner, ReasonHeadRequest)
	}
	ua := strings.ToLower(h.userAgent)
	switch {
	case strings.TrimSpace(ua) == "":
		add(&scanner, ReasonEmptyUA)
	default:
		for _, s := range scannerAgents {
			if strings.Contains(ua, s.sub) {
				add(&scanner, ReasonScannerUA)
				break
			}
		}
	}
	if h.kind == KindClick && !h.deliveredAt.IsZero() && h.window > 0 {
		if d := h.at.Sub(h.deliveredAt); d >= 0 && d < h.window {
			add(&scanner, "click-"+shortDuration(d)+"-after-delivery")
		}
	}
	if h.ip.IsValid() && appleMPP.Contains(h.ip.Unmap()) {
		add(&prefetch, ReasonAppleMPPIP)
	}
	if isPrefetchRequest(h.header) {
		add(&prefetch, ReasonPrefetchHeader)
	}
	switch {
	case strings.Contains(ua, "googleimageproxy"):
		add(&proxy, ReasonGoogleProxyUA)
	case strings.Contains(ua, "yahoomailproxy"):
		add(&proxy, ReasonYahooProxyUA)
	}
	switch {
	case self:
		v.class = ClassSelf
	case scanner:
		v.class = ClassScanner
	case prefetch:
		v.class = ClassPrefetch
	case proxy:
		v.class = ClassProxy
	default:
		v.class = ClassHuman
	}
	return v
}

// isPrefetchRequest reports whether a request announces itself as a
// prefetch or preview rather than a navigation.
func isPrefetchRequest(h http.Header) bool {
	for _, name := range []string{"Sec-Purpose", "Purpose", "X-Moz", "X-Purpose"} {
		for _, v := range h.Values(name) {
			v = strings.ToLower(v)
			if strings.Contains(v, "prefetch") || strings.Contains(v, "preview") || strings.Contains(v, "prerender") {
				return true
			}
		}
	}
	return false
}

// shortDuration renders d in whole seconds ("0s", "2s") or, under one
// second, milliseconds ("350ms"), for reasons.
func shortDuration(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
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
	case apple && has("applewebkit/") && !has("safari/"):
		// Mail on macOS and iOS embeds WebKit without Safari's tokens.
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
