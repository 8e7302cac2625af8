package classify

import (
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// Burst judges one click against its copy's other clicks within 5 s: three
// distinct links in a window of 5 s (5 s included) that holds the click.
func TestBurst(t *testing.T) {
	base := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name    string
		click   Click
		history []Click
		burst   bool
		joined  []int
	}{
		{name: "alone", click: Click{0, at(0)}},
		{name: "two links", click: Click{1, at(300)}, history: []Click{{0, at(0)}, {0, at(600)}}},
		{name: "three links in 5 s", click: Click{2, at(5000)}, history: []Click{{0, at(0)}, {1, at(2500)}},
			burst: true, joined: []int{0, 1}},
		{name: "three links in 5.001 s", click: Click{2, at(5001)}, history: []Click{{0, at(0)}, {1, at(2500)}}},
		{name: "the first click completes a later burst", click: Click{0, at(0)}, history: []Click{{2, at(4000)}, {1, at(1000)}},
			burst: true, joined: []int{0, 1}},
		{name: "a click outside the burst's window", click: Click{3, at(6500)}, history: []Click{{0, at(0)}, {1, at(5500)}, {2, at(6000)}},
			burst: true, joined: []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			burst, joined := Burst(tc.click, tc.history)
			slices.Sort(joined)
			if burst != tc.burst || !slices.Equal(joined, tc.joined) {
				t.Errorf("Burst = %v %v, want %v %v", burst, joined, tc.burst, tc.joined)
			}
		})
	}
}

// InSequence records the order of open and click, and turns a click in a
// burst into a scanner's, its reasons saying why; self clicks are left
// alone, and the caller's reasons are never written to.
func TestInSequence(t *testing.T) {
	base := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	history := []Click{{0, base}, {1, base.Add(time.Second)}}
	reasons := make([]string, 1, 4)
	reasons[0] = ReasonNoMachineSignals
	human := Verdict{Class: Human, Client: "Chrome", Reasons: reasons}

	v, joined := InSequence(human, Click{0, base.Add(10 * time.Second)}, true, history)
	if v.Class != Human || !slices.Equal(v.Reasons, []string{ReasonNoMachineSignals, ReasonOpenedBeforeClick}) || joined != nil {
		t.Errorf("lone click: %+v %v", v, joined)
	}
	v, joined = InSequence(human, Click{2, base.Add(2 * time.Second)}, false, history)
	if v.Class != Scanner || !slices.Equal(v.Reasons, []string{ReasonClickBeforeOpen, ReasonClickBurst}) || len(joined) != 2 {
		t.Errorf("burst: %+v %v", v, joined)
	}
	if !slices.Equal(reasons[:cap(reasons)], []string{ReasonNoMachineSignals, "", "", ""}) {
		t.Errorf("the caller's reasons were written to: %q", reasons[:cap(reasons)])
	}
	self := Verdict{Class: Self, Reasons: []string{ReasonSubmitterIP}}
	if v, joined = InSequence(self, Click{2, base.Add(2 * time.Second)}, false, history); v.Class != Self || len(v.Reasons) != 1 || joined != nil {
		t.Errorf("self: %+v %v", v, joined)
	}
	if c, r := InBurst([]string{ReasonScannerUA, ReasonClickBurst}); c != Scanner || len(r) != 2 {
		t.Errorf("InBurst of a burst's click: %s %v", c, r)
	}
}

// A pixel and a click from one gateway address seconds apart are the
// gateway; timing alone, from an address in no gateway list, is nobody's
// proof: a person on an office NAT opens and clicks within seconds.
func TestInGatewayPair(t *testing.T) {
	base := time.Date(2026, 8, 20, 9, 0, 0, 0, time.UTC)
	click := func(ip, ua string) Verdict {
		return Classify(Hit{Click: true, Method: http.MethodGet, IP: netip.MustParseAddr(ip), Header: http.Header{}, UserAgent: ua, At: base})
	}
	proofpoint := click("67.231.153.30", uaChrome)
	office := click("203.0.113.9", uaChrome)
	for _, tc := range []struct {
		name  string
		v     Verdict
		ip    string
		at    time.Duration // of the click, after the pixel
		open  GatewayOpen
		class string
	}{
		{"proofpoint pixel then click 3s later", proofpoint, "67.231.153.30", 3 * time.Second, GatewayOpen{"67.231.153.30", base}, Scanner},
		{"30s later", proofpoint, "67.231.153.30", 30 * time.Second, GatewayOpen{"67.231.153.30", base}, Scanner},
		{"31s later", proofpoint, "67.231.153.30", 31 * time.Second, GatewayOpen{"67.231.153.30", base}, Human},
		{"click 2s before the pixel", proofpoint, "67.231.153.30", -2 * time.Second, GatewayOpen{"67.231.153.30", base}, Scanner},
		{"click 31s before the pixel", proofpoint, "67.231.153.30", -31 * time.Second, GatewayOpen{"67.231.153.30", base}, Human},
		{"another proofpoint address", proofpoint, "67.231.153.30", time.Second, GatewayOpen{"67.231.153.31", base}, Human},
		{"address not recorded", proofpoint, "", time.Second, GatewayOpen{"", base}, Human},
		{"office nat, same address, seconds apart", office, "203.0.113.9", time.Second, GatewayOpen{"203.0.113.9", base}, Human},
		{"self", Verdict{Class: Self, Reasons: []string{ReasonSubmitterIP, ReasonGatewayNetwork + "proofpoint"}}, "67.231.153.30", time.Second, GatewayOpen{"67.231.153.30", base}, Self},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.v.Reasons)
			v := InGatewayPair(tc.v, tc.ip, base.Add(tc.at), tc.open)
			if v.Class != tc.class {
				t.Errorf("class %s (%v), want %s", v.Class, v.Reasons, tc.class)
			}
			if tc.class == Scanner && (!slices.Contains(v.Reasons, ReasonGatewayPair) || slices.Contains(v.Reasons, ReasonNoMachineSignals)) {
				t.Errorf("reasons %v", v.Reasons)
			}
			if !slices.Equal(tc.v.Reasons, before) {
				t.Errorf("the caller's reasons were written to: %v", tc.v.Reasons)
			}
		})
	}
	if !FromGateway([]string{ReasonGatewayRange + "eop"}) || FromGateway([]string{ReasonNoMachineSignals}) {
		t.Error("FromGateway")
	}
}
