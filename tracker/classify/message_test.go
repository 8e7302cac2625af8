package classify

import (
	"net/http"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// A hit classified without its message, then given the message's facts,
// has the verdict Classify gives with the message known, for every
// combination of request and facts; applying the facts again changes
// nothing.
func TestWithMessageIsClassify(t *testing.T) {
	submit := "203.0.113.9"
	delivered := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ips := []netip.Addr{netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("198.51.100.7"),
		netip.MustParseAddr("::ffff:203.0.113.9"), {}}
	uas := []string{uaChrome, uaAppleMail, uaCurl, "", uaGmailProxy, "Mozilla/5.0"}
	prefetch := http.Header{"Purpose": {"prefetch"}}
	n := 0
	for _, click := range []bool{false, true} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			for _, ip := range ips {
				for _, ua := range uas {
					for _, h := range []http.Header{{}, prefetch} {
						for _, untracked := range []bool{false, true} {
							for _, after := range []time.Duration{-time.Second, 0, 2 * time.Second, time.Minute} {
								for _, withDelivery := range []bool{false, true} {
									hit := Hit{Click: click, Method: method, IP: ip, Header: h, UserAgent: ua,
										At: delivered.Add(after), ScannerWindow: 10 * time.Second}
									without := Classify(hit)
									hit.SubmitIP, hit.Untracked = submit, untracked
									if withDelivery {
										hit.DeliveredAt = delivered
									}
									want := Classify(hit)
									f := MessageFacts{Submitter: SameAddress(ip, submit), Untracked: untracked, Click: click,
										At: hit.At, DeliveredAt: hit.DeliveredAt, ScannerWindow: hit.ScannerWindow}
									got := WithMessage(without, f)
									if !reflect.DeepEqual(got, want) {
										t.Fatalf("click %v %s %v %q %v untracked %v after %v delivered %v:\n got %+v\nwant %+v",
											click, method, ip, ua, h, untracked, after, withDelivery, got, want)
									}
									if again := WithMessage(got, f); !reflect.DeepEqual(again, want) {
										t.Fatalf("applied twice: %+v, want %+v", again, want)
									}
									n++
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d cases", n)
}

// Reasons a sequence rule appended after Classify's stay after the
// message's evidence, and the human's "no machine signals" goes.
func TestWithMessageAfterSequence(t *testing.T) {
	v := Verdict{Class: Human, Client: "Chrome", Reasons: []string{ReasonNoMachineSignals, ReasonClickBeforeOpen}}
	at := time.Date(2026, 3, 1, 12, 0, 3, 0, time.UTC)
	got := WithMessage(v, MessageFacts{Click: true, At: at, DeliveredAt: at.Add(-3 * time.Second), ScannerWindow: 10 * time.Second})
	want := Verdict{Class: Scanner, Client: "Chrome", Reasons: []string{"click-3s-after-delivery", ReasonClickBeforeOpen}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if v.Reasons[0] != ReasonNoMachineSignals {
		t.Error("the verdict given was modified")
	}
}
