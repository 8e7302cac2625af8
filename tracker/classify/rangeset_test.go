package classify

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"go4.org/netipx"
)

// rangeSet answers as the netipx.IPSet it is made from, on every shipped
// list: at each range's edges, just outside them, IPv4-mapped, and at
// random addresses.
func TestRangeSetIsIPSet(t *testing.T) {
	entries, err := ipRangeFiles.ReadDir("ipranges")
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, e := range entries {
		b, err := ipRangeFiles.ReadFile("ipranges/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		ps, err := parseRanges(string(b))
		if err != nil {
			t.Fatal(err)
		}
		set, err := prefixSet(ps)
		if err != nil {
			t.Fatal(err)
		}
		rs := newRangeSet(set)
		check := func(a netip.Addr) {
			t.Helper()
			if got, want := rs.Contains(a), set.Contains(a.Unmap()); got != want {
				t.Errorf("%s: Contains(%s) = %v, IPSet says %v", e.Name(), a, got, want)
			}
		}
		var probes []netip.Addr
		for _, r := range set.Ranges() {
			probes = append(probes, r.From(), r.To(), r.From().Prev(), r.To().Next())
		}
		for range 5000 {
			var b4 [4]byte
			var b16 [16]byte
			for i := range b4 {
				b4[i] = byte(rnd.UintN(256))
			}
			for i := range b16 {
				b16[i] = byte(rnd.UintN(256))
			}
			probes = append(probes, netip.AddrFrom4(b4), netip.AddrFrom16(b16))
		}
		n := 0
		for _, a := range probes {
			if !a.IsValid() {
				continue
			}
			check(a)
			if a.Is4() {
				check(netip.AddrFrom16(a.As16()))
			}
			if rs.Contains(a) {
				n++
			}
		}
		if len(set.Ranges()) > 0 && n == 0 {
			t.Errorf("%s: no probe in the set", e.Name())
		}
	}
	var empty netipx.IPSetBuilder
	es, _ := empty.IPSet()
	if newRangeSet(es).Contains(netip.MustParseAddr("192.0.2.1")) || newRangeSet(es).Contains(netip.Addr{}) {
		t.Error("the empty set contains something")
	}
}
