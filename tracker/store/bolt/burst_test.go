package bolt

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// The burst rule: clicks on three or more distinct links of one copy
// within 5 s, first to last, the 5 s included, are all a scanner's,
// whatever order their hits arrive in. Self clicks take no part. The feed
// last gives each event the class the message view shows.
func TestClickBurst_rule(t *testing.T) {
	type click struct {
		link  int
		at    time.Duration // after base; in the order the hits arrive
		class string        // as classified alone; "" is human
		want  string
	}
	const h, sc, self = classify.Human, classify.Scanner, classify.Self
	ms := time.Millisecond
	for _, tc := range []struct {
		name   string
		cap    int  // MaxEventsPerRecipient; 0 is the default
		opened bool // an open comes first (it takes a place under the cap)
		clicks []click
	}{
		{name: "two links", clicks: []click{{0, 0, "", h}, {1, 300 * ms, "", h}, {0, 600 * ms, "", h}, {1, 900 * ms, "", h}}},
		{name: "one link three times", clicks: []click{{0, 0, "", h}, {0, 100 * ms, "", h}, {0, 200 * ms, "", h}}},
		{name: "three links in 5.0 s", clicks: []click{{0, 0, "", sc}, {1, 2500 * ms, "", sc}, {2, 5000 * ms, "", sc}}},
		{name: "three links in 5.0004 s", clicks: []click{{0, 0, "", h}, {1, 2500 * ms, "", h}, {2, 5000*ms + 400*time.Microsecond, "", h}}},
		{name: "three links in 5.1 s", clicks: []click{{0, 0, "", h}, {1, 2500 * ms, "", h}, {2, 5100 * ms, "", h}}},
		{name: "three links over 10 s, the middle one last", clicks: []click{{0, 0, "", h}, {1, 10 * time.Second, "", h}, {2, 5 * time.Second, "", h}}},
		{name: "out of order", clicks: []click{
			{0, 10 * time.Second, "", sc}, {1, 0, "", h}, {2, 7 * time.Second, "", sc}, {3, 9 * time.Second, "", sc}}},
		{name: "a click 0.5 s before the burst's 5 s", clicks: []click{
			{0, 0, "", h}, {1, 5500 * ms, "", sc}, {2, 6 * time.Second, "", sc}, {3, 6500 * ms, "", sc}}},
		{name: "a later click on a burst's link", clicks: []click{
			{0, 0, "", sc}, {1, time.Second, "", sc}, {2, 2 * time.Second, "", sc},
			{0, 4 * time.Second, "", sc}, // within 5 s of all three links
			{0, 8 * time.Second, "", h},  // within 5 s of the last two clicks only: links 2 and 0
		}},
		{name: "self clicks take no part", clicks: []click{{0, 0, self, self}, {1, time.Second, self, self}, {2, 2 * time.Second, "", h}}},
		{name: "a burst over the cap", cap: 2, clicks: []click{{0, 0, "", sc}, {1, time.Second, "", sc}, {2, 2 * time.Second, "", sc}}},
		{name: "a burst past the cap", cap: 1, opened: true, clicks: []click{{0, 0, "", sc}, {1, time.Second, "", sc}, {2, 2 * time.Second, "", sc}}},
		{name: "out of order past the cap", cap: 1, opened: true, clicks: []click{
			{0, 10 * time.Second, "", sc}, {1, 0, "", h}, {2, 7 * time.Second, "", sc}, {3, 9 * time.Second, "", sc}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testStore(t, Options{MaxEventsPerRecipient: tc.cap})
			ctx := context.Background()
			m := putTestMessage(t, s)
			base := testAccepted.Add(time.Hour)
			if tc.opened {
				if err := s.AddEvent(ctx, store.Event{Type: store.EventOpen, Message: m.ID, Link: -1, Class: classify.Human, At: base.Add(-time.Minute)}); err != nil {
					t.Fatal(err)
				}
			}
			counted := 0
			for _, c := range tc.clicks {
				e := store.Event{Type: store.EventClick, Message: m.ID, Link: c.link, Class: c.class, At: base.Add(c.at)}
				if e.Class == "" {
					e.Class, e.Reasons = classify.Human, []string{classify.ReasonNoMachineSignals}
				}
				if err := s.AddEvent(ctx, e); err != nil {
					t.Fatal(err)
				}
				if c.want == classify.Human {
					counted++
				}
			}
			v, err := s.Lookup(ctx, "alice", m.ID)
			if err != nil {
				t.Fatal(err)
			}
			p, err := s.Feed(ctx, "alice", "", store.MaxFeedLimit)
			if err != nil {
				t.Fatal(err)
			}
			fed := lastClasses(p.Events)
			listed := v.Events
			if tc.opened {
				listed = listed[1:]
			}
			for i, ev := range listed {
				c := tc.clicks[i]
				burst := slices.Contains(ev.Reasons, classify.ReasonClickBurst)
				if ev.Class != c.want || burst != (c.want == classify.Scanner) || (burst && slices.Contains(ev.Reasons, classify.ReasonNoMachineSignals)) {
					t.Errorf("click %d (link %d at %v): %s %v, want %s", i, c.link, c.at, ev.Class, ev.Reasons, c.want)
				}
				if fed[ev.ID] != ev.Class {
					t.Errorf("click %d (link %d at %v): the feed last said %q, the view says %s", i, c.link, c.at, fed[ev.ID], ev.Class)
				}
			}
			if got := v.Recipients[0].Clicks; got != counted {
				t.Errorf("%d clicks counted, want %d", got, counted)
			}
		})
	}
}

// Whatever order a copy's clicks arrive in, each ends up with the class
// the burst rule gives it with all of them known, and the feed last gives
// it that class: random clicks on four links over 15 s, in random order,
// against the rule computed by brute force.
func TestClickBurst_anyOrder(t *testing.T) {
	s := testStore(t, Options{MaxEventsPerRecipient: 10000})
	ctx := context.Background()
	m := putTestMessage(t, s)
	rng := rand.New(rand.NewPCG(16, 6))
	type click struct {
		link int
		at   time.Time
	}
	var want []string // by arrival
	for round := range 40 {
		base := testAccepted.Add(time.Duration(round+1) * time.Hour)
		clicks := make([]click, 4+rng.IntN(9))
		for i := range clicks {
			// Whole 100 ms steps, so that windows of exactly 5 s occur.
			clicks[i] = click{rng.IntN(4), base.Add(time.Duration(rng.IntN(151)) * 100 * time.Millisecond)}
		}
		for _, c := range clicks {
			// In a burst: some window of 5 s from one click's time holds
			// c and clicks on three distinct links.
			burst := false
			for _, start := range clicks {
				end := start.at.Add(classify.BurstWindow)
				if c.at.Before(start.at) || c.at.After(end) {
					continue
				}
				links := map[int]bool{}
				for _, o := range clicks {
					if !o.at.Before(start.at) && !o.at.After(end) {
						links[o.link] = true
					}
				}
				burst = burst || len(links) >= classify.BurstLinks
			}
			if burst {
				want = append(want, classify.Scanner)
			} else {
				want = append(want, classify.Human)
			}
		}
		// Clicks were drawn in random order of time: they arrive so.
		for _, c := range clicks {
			e := store.Event{Type: store.EventClick, Message: m.ID, Link: c.link, Class: classify.Human, Reasons: []string{classify.ReasonNoMachineSignals}, At: c.at}
			if err := s.AddEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	v, err := s.Lookup(ctx, "alice", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	var fed []store.FeedEntry
	for after := ""; ; {
		p, err := s.Feed(ctx, "alice", after, store.MaxFeedLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) == 0 {
			break
		}
		fed, after = append(fed, p.Events...), p.Next
	}
	last := lastClasses(fed)
	if len(v.Events) != len(want) {
		t.Fatalf("%d events, want %d", len(v.Events), len(want))
	}
	bursts := 0
	for i, ev := range v.Events {
		if ev.Class != want[i] {
			t.Errorf("click %d (%v): %s %v, want %s", i, ev.At, ev.Class, ev.Reasons, want[i])
		}
		if last[ev.ID] != ev.Class {
			t.Errorf("click %d (%v): the feed last said %q, the view says %s", i, ev.At, last[ev.ID], ev.Class)
		}
		if want[i] == classify.Scanner {
			bursts++
		}
	}
	// Both verdicts are well represented.
	if bursts < len(want)/4 || bursts > len(want)*3/4 {
		t.Errorf("%d of %d clicks in bursts: change the seed", bursts, len(want))
	}
}
