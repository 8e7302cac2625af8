package delivery

import (
	"encoding/json"
	"testing"
)

// The strings are the spool's, the store's and the API's: they must not
// change.
func TestStatus_strings(t *testing.T) {
	for s, want := range map[Status]string{
		Queued: "queued", Deferred: "deferred", Delivered: "delivered", Bounced: "bounced", Held: "held",
	} {
		b, err := json.Marshal(struct {
			S Status `json:"s"`
		}{s})
		if err != nil || string(b) != `{"s":"`+want+`"}` {
			t.Errorf("%v encodes as %s (%v), want %q", s, b, err, want)
		}
	}
}

func TestStatus_Final(t *testing.T) {
	for s, want := range map[Status]bool{
		Queued: false, Deferred: false, Held: false, Delivered: true, Bounced: true, "": false,
	} {
		if got := s.Final(); got != want {
			t.Errorf("%q.Final() = %v, want %v", s, got, want)
		}
	}
}
