package classify

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Classes: who, most likely, caused a hit.
const (
	// Human is a person opening or clicking.
	Human = "human"
	// Proxy is a real open through a mail provider's image proxy
	// (Gmail, Yahoo): IP and user agent are the proxy's.
	Proxy = "proxy"
	// Prefetch is a privacy prefetch such as Apple Mail Privacy Protection.
	Prefetch = "prefetch"
	// Scanner is a security scanner or other robot.
	Scanner = "scanner"
	// Self is the sender itself (its submitting IP, or its own copy).
	Self = "self"
)

// Classes lists every class, strongest first.
var Classes = []string{Self, Scanner, Prefetch, Proxy, Human}

// Counted reports whether an event of class counts as a person's open or
// click: a human's, or one through an image proxy.
func Counted(class string) bool { return class == Human || class == Proxy }

// Reasons recorded with an event's class. Every event has at least one.
// Besides these, a click within the scanner window of delivery is recorded
// with the reason "click-<elapsed>-after-delivery", e.g.
// "click-2s-after-delivery".
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
	ReasonClickBurst     = "click-burst"           // 3+ links of the copy clicked within 5 s (see Burst)

	// Apple's Mail Privacy Protection fetches with the agent exactly
	// "Mozilla/5.0" through iCloud Private Relay's egress addresses
	// (ipranges/icloud-private-relay.txt).
	ReasonPrivateRelayEgress = "private-relay-egress"
	// Gmail's image prefetcher, by its own agent (GmailPrefetchUA).
	ReasonGmailPrefetchUA = "gmail-prefetch-ua"
	// A click whose agent is exactly "Mozilla/5.0": no browser sends that
	// alone, and Mail Privacy Protection never follows links.
	ReasonClickBareUA = "click-bare-ua"
	// ReasonGatewayRange, followed by the gateway's name (e.g.
	// "gateway-range:eop"), is a hit from a security gateway's range
	// (ipranges/gateway-*.txt): scanner.
	ReasonGatewayRange = "gateway-range:"
	// ReasonGatewayNetwork, followed by the gateway's name, is a click from
	// a gateway's service network, where a person may browse through the
	// vendor's isolation: supporting evidence only, recorded on any class.
	ReasonGatewayNetwork = "gateway-network:"
	// ReasonGatewayPair: a click from the address whose pixel fetch was a
	// gateway's seconds before (see InGatewayPair).
	ReasonGatewayPair = "open-and-click-from-gateway"
	// ReasonMultiRecipient: the same address and agent clicked the copies
	// of 3+ recipients of the message, each within 30 s of its delivery
	// (see MultiRecipient).
	ReasonMultiRecipient = "multi-recipient-burst"
	// ReasonHoneypot: a hit on the copy's honeypot link, which no person
	// sees (tracking.honeypot; see OnHoneypot).
	ReasonHoneypot = "honeypot"
	// ReasonNearHoneypot: a hit from the address that followed the copy's
	// honeypot link within the scanner window of it (see NearHoneypot).
	ReasonNearHoneypot = "near-honeypot"

	// A click records the order of its copy's pixel and clicks (see Click).
	ReasonOpenedBeforeClick = "opened-before-click" // a counted open came before it
	ReasonClickBeforeOpen   = "click-before-open"   // none did (images blocked, or a robot)
)

// Hit is what classification looks at: one request for a pixel or a
// redirect, and what is known of its message.
type Hit struct {
	// Click is true for a click, false for an open.
	Click bool
	// Method is the request's HTTP method.
	Method string
	// IP is the client's full address (invalid when unknown).
	IP netip.Addr
	// Header is the request's header.
	Header http.Header
	// UserAgent is the request's user agent.
	UserAgent string
	// At is when the hit arrived.
	At time.Time
	// SubmitIP is the address that submitted the message; "" when unknown.
	SubmitIP string
	// Untracked is true for a hit on a copy that was not to be tracked
	// (the sender's own).
	Untracked bool
	// DeliveredAt is when the copy was delivered; zero when not (known to
	// be) delivered.
	DeliveredAt time.Time
	// ScannerWindow is how soon after delivery a click is a link
	// scanner's; zero or negative disables the rule.
	ScannerWindow time.Duration
}

// Verdict is the result of Classify.
type Verdict struct {
	// Class is one of the classes (Human, Proxy, Prefetch, Scanner, Self).
	Class string
	// Client is a readable name of the client, e.g. "Apple Mail".
	Client string
	// Reasons are the evidence for Class; there is at least one.
	Reasons []string
}

// Classify decides the class, reasons and readable client of a hit on its
// own; what the copy's other events show is Click's.
// Evidence is collected first; the class is the strongest one found, in the
// order self, scanner, prefetch, proxy, human.
func Classify(h Hit) Verdict {
	ui := lookupUA(h.UserAgent)
	v := Verdict{Client: ui.client}
	if name := webmailClient(h.Header); name != "" && !ui.googleProxy && !ui.yahooProxy {
		v.Client = name
	}
	var self, scanner, prefetch, proxy bool
	add := func(flag *bool, reason string) {
		*flag = true
		v.Reasons = append(v.Reasons, reason)
	}
	if h.SubmitIP != "" && h.IP.IsValid() {
		if sip, err := netip.ParseAddr(h.SubmitIP); err == nil && sip.Unmap() == h.IP.Unmap() {
			add(&self, ReasonSubmitterIP)
		}
	}
	if h.Untracked {
		add(&self, ReasonUntrackedCopy)
	}
	if h.Method == http.MethodHead {
		add(&scanner, ReasonHeadRequest)
	}
	switch {
	case ui.empty:
		add(&scanner, ReasonEmptyUA)
	case ui.scanner:
		add(&scanner, ReasonScannerUA)
	}
	if h.Click && !h.DeliveredAt.IsZero() && h.ScannerWindow > 0 {
		if d := h.At.Sub(h.DeliveredAt); d >= 0 && d < h.ScannerWindow {
			add(&scanner, "click-"+shortDuration(d)+"-after-delivery")
		}
	}
	t := tables()
	ip := h.IP.Unmap()
	valid := h.IP.IsValid()
	if valid && t.appleMPP.Contains(ip) {
		add(&prefetch, ReasonAppleMPPIP)
	}
	if ui.bare && valid && t.privateRelay.Contains(ip) {
		// Mail Privacy Protection's fetches, which leave through Private
		// Relay: Safari's users share the addresses, never the agent.
		add(&prefetch, ReasonPrivateRelayEgress)
	}
	if ui.gmailPrefetch {
		add(&prefetch, ReasonGmailPrefetchUA)
	}
	if isPrefetchRequest(h.Header) {
		add(&prefetch, ReasonPrefetchHeader)
	}
	var evidence string
	if g, ok := t.gateway(ip); ok {
		if g.grade == mailScanning || !h.Click {
			add(&scanner, ReasonGatewayRange+g.name)
		} else {
			// A person may click through the vendor's browser isolation:
			// recorded, deciding nothing alone (see InGatewayPair).
			evidence = ReasonGatewayNetwork + g.name
		}
	}
	if h.Click && ui.bare {
		add(&scanner, ReasonClickBareUA)
	}
	googleUA, yahooUA := ui.googleProxy, ui.yahooProxy
	googleIP := valid && t.googleProxy.Contains(ip)
	yahooIP := valid && t.yahooProxy.Contains(ip)
	switch {
	case h.Click && (googleUA || yahooUA || googleIP || yahooIP):
		// The proxies fetch images; a person's click comes from their
		// browser, not from the proxy.
		add(&scanner, ReasonClickFromProxyIP)
	case ui.gmailPrefetch:
		// Gmail's prefetcher comes from Google's network too; its agent
		// says it is no open.
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
	if evidence != "" {
		v.Reasons = append(v.Reasons, evidence)
	}
	switch {
	case self:
		v.Class = Self
	case scanner:
		v.Class = Scanner
	case prefetch:
		v.Class = Prefetch
	case proxy:
		v.Class = Proxy
	default:
		v.Class = Human
		v.Reasons = append(v.Reasons, ReasonNoMachineSignals)
	}
	return v
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
