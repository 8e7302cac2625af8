// Package classify owns the classification of tracking hits: who, most
// likely, caused an open or a click (Human, Proxy, Prefetch, Scanner,
// Self), with the reasons that say why and a readable client name.
//
// It holds every signal and rule: user agents of mail clients, browsers,
// scanners and image proxies; the prefetch headers; web mail named by the
// Referer; the IP ranges of image proxies, of Apple's Mail Privacy
// Protection (Apple's network and iCloud Private Relay's egress) and of
// security gateways, graded by how certain they are, kept as data with
// their sources in ipranges/ and loaded once (LoadTables, Use); the click
// within the scanner window of delivery; and the evidence only a copy's
// sequence of events shows: whether an open came before a click, and the
// burst rule (Burst), which the store applies when it commits a click,
// given the copy's clicks within BurstWindow of it; the gateway pair rule
// (InGatewayPair); the multi-recipient rule (MultiRecipient), given the
// message's clicks soon after their copies' delivery; and the honeypot
// rule (OnHoneypot, NearHoneypot).
//
// Everything here is a pure function of a hit and its message's history,
// as the caller hands them in.
//
// What the package must never do:
//   - read or write storage, or wait: a store passes in what a rule needs;
//   - import any other trackrelay package (the tracker's handler and its
//     stores import it).
package classify
