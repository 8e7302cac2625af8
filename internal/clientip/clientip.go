package clientip

import (
	"net/http"
	"net/netip"
	"strings"
)

// Of returns the address of the client behind r: the TCP peer, or, when
// the peer is one of the trusted proxies, the rightmost address of
// X-Forwarded-For that is not itself a trusted proxy. Addresses are
// unmapped (an IPv4 peer seen over IPv6 is IPv4). An unparsable entry stops
// the walk, and the last trusted hop is returned. trusted should be in the
// form Normalize returns.
func Of(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := ParseHost(r.RemoteAddr)
	if !peer.IsValid() || !inPrefixes(peer, trusted) {
		return peer
	}
	values := r.Header.Values("X-Forwarded-For")
	client := peer
	for i := len(values) - 1; i >= 0; i-- {
		parts := strings.Split(values[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a := ParseHost(strings.TrimSpace(parts[j]))
			if !a.IsValid() {
				return client
			}
			client = a
			if !inPrefixes(a, trusted) {
				return a
			}
		}
	}
	return client
}

// Normalize returns the trusted proxies as Of compares them: IPv4-mapped
// prefixes as IPv4 ones (Of unmaps every address), host bits cleared.
func Normalize(trusted []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(trusted))
	for _, p := range trusted {
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		out = append(out, p.Masked())
	}
	return out
}

// ParseHost parses "ip", "ip:port", "[ipv6]:port" or "[ipv6]", unmapped
// and without zone; the zero Addr when s is none of them.
func ParseHost(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
