package tracker

import (
	"net/http"
	"net/netip"

	"github.com/trackrelay/trackrelay/internal/clientip"
)

// clientIP returns the address of the client behind r (clientip.Of): the
// console limits failed logins by the same address the tracker records.
func clientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	return clientip.Of(r, trusted)
}

// parseHostAddr parses "ip", "ip:port", "[ipv6]:port" or "[ipv6]".
func parseHostAddr(s string) netip.Addr { return clientip.ParseHost(s) }
