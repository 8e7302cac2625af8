package relay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// With DeliveryConfig.Honeypot, a tracked copy carries its minter's
// honeypot link once, and the message's links are only its own; without
// it, or when only opens are tracked, there is none.
func TestDelivery_honeypot(t *testing.T) {
	for _, tc := range []struct {
		name     string
		honeypot bool
		mode     string
		want     bool
	}{
		{"on", true, "all", true},
		{"off", false, "all", false},
		{"on, opens only", true, "opens", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ledger := newMemLedger()
			d, spool := captureDeliverer(t, ledger, DeliveryConfig{Honeypot: tc.honeypot})
			env := &Envelope{From: "s@example.com", Mode: tc.mode, AcceptedAt: time.Now().UTC(),
				Recipients: []Recipient{{Address: "bob@example.net", Tracked: true, Status: StatusQueued}}}
			if err := spool.Enqueue(env, []byte(crlf(htmlMsg))); err != nil {
				t.Fatal(err)
			}
			d.Submit(env, true)
			startDeliverer(t, d)
			ledger.waitStatus(t, env.ID, 0, StatusDelivered)
			files, _ := filepath.Glob(filepath.Join(d.cfg.CaptureDir, "*.eml"))
			if len(files) != 1 {
				t.Fatalf("%d captured copies", len(files))
			}
			b, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			hp := "http://t.test/c/" + env.ID + "-0-honeypot"
			if n := strings.Count(string(b), hp); n != map[bool]int{true: 1}[tc.want] {
				t.Errorf("%d honeypot links in\n%s", n, b)
			}
			if tc.want && !strings.Contains(string(b), `aria-hidden="true" tabindex="-1"`) {
				t.Errorf("honeypot markup:\n%s", b)
			}
		})
	}
}
