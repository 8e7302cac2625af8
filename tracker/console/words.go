package console

import (
	"strings"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
)

// reasonSentences explains each reason of package classify in plain words.
// A test checks that every Reason constant of the package has one.
var reasonSentences = map[string]string{
	classify.ReasonNoMachineSignals:   "Nothing points at a machine: a normal mail client or browser, at a normal time.",
	classify.ReasonGoogleProxyIP:      "It came through Gmail's image proxy, which loads images when a Gmail user opens the email.",
	classify.ReasonYahooProxyIP:       "It came through Yahoo Mail's image proxy, which loads images when a Yahoo user opens the email.",
	classify.ReasonClickFromProxyIP:   "The click came from a mail provider's own network, where its link checkers run.",
	classify.ReasonSubmitterIP:        "It came from the same address that sent this email: most likely you, reading your own copy.",
	classify.ReasonUntrackedCopy:      "It was on a copy that is not tracked (your own copy, or tracking was off for it).",
	classify.ReasonAppleMPPIP:         "Apple Mail Privacy Protection loaded the images from Apple's network; this is not a person reading.",
	classify.ReasonPrefetchHeader:     "The request said it was a prefetch: loaded in advance, not by a person looking.",
	classify.ReasonGoogleProxyUA:      "Gmail's image proxy loaded the images for a Gmail user who opened the email.",
	classify.ReasonYahooProxyUA:       "Yahoo Mail's image proxy loaded the images for a Yahoo user who opened the email.",
	classify.ReasonHeadRequest:        "It only asked whether the page exists (a HEAD request): robots do that, people's browsers do not.",
	classify.ReasonScannerUA:          "The program identified itself as a scanner, a robot or a programming library.",
	classify.ReasonEmptyUA:            "The program did not say what it was: mail clients and browsers always do.",
	classify.ReasonClickBurst:         "Three or more links were clicked within a few seconds: a security scanner checking every link.",
	classify.ReasonPrivateRelayEgress: "Apple Mail Privacy Protection loaded the images through iCloud Private Relay; this is not a person reading.",
	classify.ReasonGmailPrefetchUA:    "Gmail fetched the images in advance, before anyone opened the email.",
	classify.ReasonClickBareUA:        "The click came from a program that gives no browser name: no person's browser does that.",
	classify.ReasonGatewayPair:        "A security gateway opened the email and then checked the link from the same address, seconds apart.",
	classify.ReasonMultiRecipient:     "The same program clicked the copies of three or more recipients right after delivery: a security gateway checking the links.",
	classify.ReasonHoneypot:           "It followed a hidden link that no person can see or click: only robots find it.",
	classify.ReasonNearHoneypot:       "It came from the address that followed the hidden robot-only link seconds earlier.",
	classify.ReasonOpenedBeforeClick:  "The email had been opened by a person before this click.",
	classify.ReasonClickBeforeOpen:    "Nobody had opened the email before this click (the reader may block images, or it is a robot).",
}

// gatewayNames names the security gateways of classify's range lists.
var gatewayNames = map[string]string{
	"eop":        "Microsoft Exchange Online Protection",
	"proofpoint": "Proofpoint",
}

// explainReason returns the sentence for a reason recorded with an event's
// class, and whether it is one the console knows.
func explainReason(r string) (string, bool) {
	if s, ok := reasonSentences[r]; ok {
		return s, true
	}
	if name, ok := strings.CutPrefix(r, classify.ReasonGatewayRange); ok {
		return "It came from " + gatewayName(name) + ", a security gateway that checks mail and links before people see them.", true
	}
	if name, ok := strings.CutPrefix(r, classify.ReasonGatewayNetwork); ok {
		return "The click came from " + gatewayName(name) + "'s network, where a person may browse through the gateway's protection.", true
	}
	if d, ok := strings.CutPrefix(r, "click-"); ok {
		if d, ok := strings.CutSuffix(d, "-after-delivery"); ok && d != "" {
			return "The link was clicked " + d + " after delivery: too fast for a person, a security gateway checked this link.", true
		}
	}
	return "Other evidence (" + r + ").", false
}

func gatewayName(name string) string {
	if n, ok := gatewayNames[name]; ok {
		return n
	}
	if name == "" {
		return "a security gateway"
	}
	return name
}

// classWords says who caused an event, in plain words.
func classWords(class string) string {
	switch class {
	case classify.Human:
		return "A person"
	case classify.Proxy:
		return "A person, through their mail provider's image proxy"
	case classify.Prefetch:
		return "Not a person: images loaded in advance for privacy"
	case classify.Scanner:
		return "Not a person: a security scanner or robot"
	case classify.Self:
		return "You, the sender"
	}
	return "Unknown"
}

// filteredWords names the kinds of machine hits the overview filters out.
func filteredWords(class string) string {
	switch class {
	case classify.Prefetch:
		return "Images loaded in advance (Apple Mail Privacy Protection and others)"
	case classify.Scanner:
		return "Security scanners and robots"
	case classify.Self:
		return "Your own opens and clicks"
	}
	return classWords(class)
}

// statusWords says where a copy is, in plain words.
func statusWords(s delivery.Status) string {
	switch s {
	case delivery.Queued:
		return "Waiting to be sent"
	case delivery.Deferred:
		return "Delayed, trying again"
	case delivery.Delivered:
		return "Delivered"
	case delivery.Bounced:
		return "Not delivered (bounced)"
	case delivery.Held:
		return "Held by the operator"
	}
	return string(s)
}

// statusMeaning says what a copy's delivery status means for the sender,
// and what happens next.
func statusMeaning(s delivery.Status) string {
	switch s {
	case delivery.Queued:
		return "Not sent yet: it is in line and leaves in a moment."
	case delivery.Deferred:
		return "Their mail server did not take it yet (it may be busy, or slowing down new senders). It is tried again by itself until it is delivered or given up on."
	case delivery.Delivered:
		return "Their mail server accepted it. Whether it went to the inbox or the spam folder, their server does not say."
	case delivery.Bounced:
		return "It could not be delivered and will not be tried again: their mail server refused it, or it kept failing. Check the address; their server's reply says why."
	case delivery.Held:
		return "Sending stopped because of a problem on the sending server. It waits until the person who runs trackrelay looks at it and sends it again."
	}
	return ""
}
