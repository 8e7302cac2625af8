// Package console is the web console served under /ui/ on the http
// listener: a person logs in with an account's API key or SMTP password and
// sees the account's sent messages, who opened and clicked them (people
// only: machine hits are shown and explained, never counted), each
// message's timeline with every verdict explained in plain words, and the
// account's totals over a period.
//
// Pages are made on the server with html/template (every value escaped:
// subjects, user agents and URLs come from strangers), from templates and
// a stylesheet embedded in the binary. There is no JavaScript at all, and
// the Content-Security-Policy forbids it; the charts are inline SVG.
//
// Sessions are stateless, so that every node of a fleet serves them: a
// cookie signed with HMAC-SHA256 under a key derived from the tracking
// secrets (with a purpose label, so it is never the token key). State
// changes are POST forms carrying a CSRF token bound to the session.
//
// The console reads and erases through the store (Store); it never writes
// events or messages, and it never serves a page of another account.
package console
