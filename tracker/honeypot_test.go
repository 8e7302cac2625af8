package tracker

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// A hit on a copy's honeypot link is answered without a redirect and
// recorded as a scanner's; the copy's pixel fetch from the same address
// just before it is reclassified (with a feed entry) and a click just
// after it is a scanner's too. The honeypot is no link of the message.
func TestHoneypotHit(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	ctx := context.Background()
	if err := e.store.SetLinks(ctx, e.msg.ID, []string{"https://example.com/quote?id=1&x=2"}); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.do(t, http.MethodGet, e.mint.OpenURL(), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("pixel: %d", resp.StatusCode)
	}
	if v := e.view(t); len(v.Events) != 1 || v.Events[0].Class != classify.Human {
		t.Fatalf("pixel alone: %+v", v.Events)
	}
	resp, body := e.do(t, http.MethodGet, e.mint.HoneypotURL(), nil)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Location") != "" || len(body) != 0 {
		t.Fatalf("honeypot: %d %q %q", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if resp, _ := e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/quote?id=1&x=2"), nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("click: %d", resp.StatusCode)
	}
	v := e.view(t)
	if len(v.Events) != 3 {
		t.Fatalf("%d events: %+v", len(v.Events), v.Events)
	}
	want := [][]string{{classify.ReasonNearHoneypot}, {classify.ReasonHoneypot}, {classify.ReasonNearHoneypot}}
	for i, ev := range v.Events {
		if ev.Class != classify.Scanner || !slices.Contains(ev.Reasons, want[i][0]) {
			t.Errorf("event %d: %+v", i, ev)
		}
	}
	if len(v.Links) != 1 || v.Links[0].Clicks != 0 {
		t.Errorf("links %+v", v.Links)
	}
	if r := v.Recipients[0]; r.Opened || r.Opens != 0 || r.Clicks != 0 {
		t.Errorf("recipient counted %+v", r)
	}
	p, err := e.store.Feed(ctx, "alice", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	recls := 0
	for _, fe := range p.Events {
		if fe.Type == store.EventReclassified {
			recls++
			if fe.EventID != v.Events[0].ID || fe.Class != classify.Scanner || fe.PreviousClass != classify.Human {
				t.Errorf("reclassified %+v", fe)
			}
		}
	}
	if recls != 1 {
		t.Errorf("%d reclassified entries, want 1", recls)
	}
}
