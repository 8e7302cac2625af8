package classify

import (
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
