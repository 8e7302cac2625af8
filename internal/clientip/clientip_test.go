package clientip

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestOf(t *testing.T) {
	trusted := Normalize([]netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("::ffff:192.168.1.0/120"), // an IPv4 proxy net written mapped
		netip.MustParsePrefix("fd00::1/64"),             // host bits set
	})
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy", "203.0.113.9:4711", nil, "203.0.113.9"},
		{"untrusted peer's header ignored", "203.0.113.9:4711", []string{"198.51.100.1"}, "203.0.113.9"},
		{"trusted peer", "10.1.2.3:80", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client spoofs the left entries", "10.1.2.3:80", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", "10.1.2.3:80", []string{"198.51.100.1, 10.9.9.9", "10.8.8.8"}, "198.51.100.1"},
		{"mapped proxy net", "[::ffff:192.168.1.7]:80", []string{"198.51.100.1"}, "198.51.100.1"},
		{"IPv6 proxy, host bits of the prefix ignored", "[fd00::42]:80", []string{"[2001:db8::5]:1234"}, "2001:db8::5"},
		{"mapped client unmapped", "10.1.2.3:80", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},
		{"garbage stops at the last trusted hop", "10.1.2.3:80", []string{"198.51.100.1, junk, 10.9.9.9"}, "10.9.9.9"},
		{"trusted peer without a header", "10.1.2.3:80", nil, "10.1.2.3"},
		{"zone dropped", "[fe80::1%eth0]:80", nil, "fe80::1"},
		{"unparsable peer", "nonsense", []string{"198.51.100.1"}, "invalid IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.peer, Header: http.Header{}}
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := Of(r, trusted).String(); got != tc.want {
				t.Errorf("Of = %s, want %s", got, tc.want)
			}
		})
	}
}
