// Package clientip finds the address of the client behind an HTTP request:
// the TCP peer, or what X-Forwarded-For says when the peer is a trusted
// proxy. The tracker records it with each hit and the console limits failed
// logins by it; both must agree, so there is one implementation.
//
// It never trusts X-Forwarded-For from a peer that is not a trusted proxy.
package clientip
