package tracker

import (
	"bufio"
	"embed"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/tracker/token"
)

// Reasons recorded with an event's class. Every event has at least one.
// Besides these, a click within the scanner window of delivery is recorded
// with the reason "click-<elapsed>-after-delivery", e.g.
// "click-2s-after-delivery", and a click records the order of pixel and
// click: "opened-before-click" or "click-before-open".
const (
	ReasonNoMachineSignals = "no-machine-signals"  // human: nothing points at a machine
	ReasonGoogleProxyIP    = "google-proxy-ip"     // from Gmail's image proxy networks (ipranges/)
	ReasonYahooProxyIP     = "yahoo-proxy-ip"      // from Yahoo Mail's image proxy networks (ipranges/)
	ReasonClickFromProxyIP = "click-from-proxy-ip" // a click from a mail provider's fetcher network

	ReasonSubmitterIP    = "submitter-ip"          // hit from the IP that submitted the message
	ReasonUntrackedCopy  = "untracked-copy"        // hit on a copy that was not to be tracked (sender's own)
	ReasonAppleMPPIP     = "apple-mpp-ip"          // Apple's 17.0.0.0/8 (Mail Privacy Protection)
	ReasonPrefetchHeader = "prefetch-header"       // Sec-Purpose / Purpose / X-Moz / X-Purpose prefetch
	ReasonGoogleProxyUA  = "google-image-proxy-ua" // Gmail's image proxy
	ReasonYahooProxyUA   = "yahoo-image-proxy-ua"  // Yahoo Mail's image proxy
	ReasonHeadRequest    = "head-request"          // browsers and mail clients GET; robots HEAD
	ReasonScannerUA      = "scanner-ua"            // a known scanner, robot or HTTP library
	ReasonEmptyUA        = "empty-user-agent"      // no user agent at all
	ReasonClickBurst     = "click-burst"           // 3+ links of the copy clicked within 5 s (see clickBurst)
)

// hit is what classification looks at.
type hit struct {
	kind        token.Kind
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

// The IP ranges of prefetchers and image proxies are data, kept with
// their sources in ipranges/.
//
//go:embed ipranges/*.txt
var ipRangeFiles embed.FS

var (
	appleMPP     = mustRanges("ipranges/apple-mpp.txt")
	googleProxy  = mustRanges("ipranges/google-image-proxy.txt")
	yahooProxy   = mustRanges("ipranges/yahoo-mail-proxy.txt")
	prefetchHdrs = []string{"Sec-Purpose", "Purpose", "X-Moz", "X-Purpose"}
)

// parseRanges reads one CIDR prefix per line; '#' starts a comment.
func parseRanges(text string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		p, err := netip.ParsePrefix(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, p.Masked())
	}
	return out, sc.Err()
}

func mustRanges(name string) []netip.Prefix {
	b, err := ipRangeFiles.ReadFile(name)
	if err != nil {
		panic(err)
	}
	p, err := parseRanges(string(b))
	if err != nil {
		panic(fmt.Sprintf("tracker: %s: %v", name, err))
	}
	return p
}

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

// classify decides the class, reasons and readable client of a hit.
// Evidence is collected first; the class is the strongest one found, in the
// order self, scanner, prefetch, proxy, human.
func classify(h hit) verdict {
	ui := lookupUA(h.userAgent)
	v := verdict{client: ui.client}
	if name := webmailClient(h.header); name != "" && !ui.googleProxy && !ui.yahooProxy {
		v.client = name
	}
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
	switch {
	case ui.empty:
		add(&scanner, ReasonEmptyUA)
	case ui.scanner:
		add(&scanner, ReasonScannerUA)
	}
	if h.kind == token.KindClick && !h.deliveredAt.IsZero() && h.window > 0 {
		if d := h.at.Sub(h.deliveredAt); d >= 0 && d < h.window {
			add(&scanner, "click-"+shortDuration(d)+"-after-delivery")
		}
	}
	ip := h.ip.Unmap()
	if h.ip.IsValid() && inPrefixes(ip, appleMPP) {
		add(&prefetch, ReasonAppleMPPIP)
	}
	if isPrefetchRequest(h.header) {
		add(&prefetch, ReasonPrefetchHeader)
	}
	googleUA, yahooUA := ui.googleProxy, ui.yahooProxy
	googleIP := h.ip.IsValid() && inPrefixes(ip, googleProxy)
	yahooIP := h.ip.IsValid() && inPrefixes(ip, yahooProxy)
	switch {
	case h.kind == token.KindClick && (googleUA || yahooUA || googleIP || yahooIP):
		// The proxies fetch images; a person's click comes from their
		// browser, not from the proxy.
		add(&scanner, ReasonClickFromProxyIP)
	case googleUA || googleIP:
		if googleUA {
			add(&proxy, ReasonGoogleProxyUA)
		}
		if googleIP {
			add(&proxy, ReasonGoogleProxyIP)
		}
	case yahooUA || yahooIP:
		if yahooUA {
			add(&proxy, ReasonYahooProxyUA)
		}
		if yahooIP {
			add(&proxy, ReasonYahooProxyIP)
		}
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
		v.reasons = append(v.reasons, ReasonNoMachineSignals)
	}
	return v
}

// The burst rule: clicks on burstLinks or more distinct links of one copy
// within burstWindow, from the first to the last (a window of exactly
// burstWindow included), are a scanner following every link, whatever each
// click looked like on its own. Every click in such a window is part of
// the burst, repeated clicks on one link included. Self clicks take no
// part. Times are compared to the nanosecond.
const (
	burstLinks  = 3
	burstWindow = 5 * time.Second
)

// burstClick is a click of one copy, as the burst rule sees it.
type burstClick struct {
	link int
	at   time.Time
}

// clickBurst applies the burst rule to a copy's new click c. history is
// the copy's other clicks within burstWindow of c, before or after it (the
// only ones that can share a window with it), in any order; clicks beyond
// that are ignored. It reports whether c is part of a burst, and the
// indexes in history of the clicks that share a burst with it.
//
// Only windows holding c are looked at: the others were judged when their
// own last click arrived. So a copy's clicks end up marked the same,
// whatever order they arrive in: exactly those of every window of
// burstWindow that holds burstLinks distinct links.
func clickBurst(c burstClick, history []burstClick) (bool, []int) {
	if len(history)+1 < burstLinks {
		return false, nil
	}
	all := append(slices.Clip(history), c)
	self := len(history) // c's index in all
	order := make([]int, len(all))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return all[a].at.Compare(all[b].at) })
	// For each click in time order, the window that starts with it: a
	// window with burstLinks links that holds c marks its span in cover.
	cover := make([]int, len(all)+1)
	links := map[int]int{} // clicks per link in order[lo:hi]
	hi := 0
	for lo := 0; lo < len(order); lo++ {
		start := all[order[lo]].at
		if start.After(c.at) {
			break
		}
		end := start.Add(burstWindow)
		for hi < len(order) && !all[order[hi]].at.After(end) {
			links[all[order[hi]].link]++
			hi++
		}
		if len(links) >= burstLinks && !end.Before(c.at) {
			cover[lo]++
			cover[hi]--
		}
		l := all[order[lo]].link
		if links[l]--; links[l] == 0 {
			delete(links, l)
		}
	}
	burst := false
	var joined []int
	n := 0
	for p, i := range order {
		if n += cover[p]; n == 0 {
			continue
		}
		if i == self {
			burst = true
		} else {
			joined = append(joined, i)
		}
	}
	return burst, joined
}

// uaInfo is what classification reads from a user agent.
type uaInfo struct {
	client                  string
	empty, scanner          bool
	googleProxy, yahooProxy bool
}

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

// isPrefetchRequest reports whether a request announces itself as a
// prefetch or preview rather than a navigation.
func isPrefetchRequest(h http.Header) bool {
	for _, name := range prefetchHdrs {
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
