package postgres

import (
	"regexp"
	"testing"
	"time"
)

// Hits' ids are version 7 UUIDs: valid for PostgreSQL's uuid, in the order
// of their minting across milliseconds, and distinct.
func TestNewUUIDTimeOrdered(t *testing.T) {
	form := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	prev := ""
	for i := range 2000 {
		u := newUUID()
		if !form.MatchString(u) {
			t.Fatalf("%q is not a version 7 UUID", u)
		}
		if seen[u] {
			t.Fatalf("%q minted twice", u)
		}
		seen[u] = true
		if i%500 == 0 {
			time.Sleep(2 * time.Millisecond)
			if u <= prev {
				t.Fatalf("%q minted after %q sorts before it", u, prev)
			}
			prev = newUUID()
		}
	}
	ms := time.Now().UnixMilli()
	u := newUUID()
	var got int64
	for _, c := range u[:8] + u[9:13] {
		got = got<<4 | int64(hexVal(c))
	}
	if got < ms || got > ms+1000 {
		t.Errorf("%q carries %d ms, want about %d", u, got, ms)
	}
}

func hexVal(c rune) int {
	if c <= '9' {
		return int(c - '0')
	}
	return int(c-'a') + 10
}
