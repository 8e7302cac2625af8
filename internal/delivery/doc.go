// Package delivery names the states of one recipient's copy of a message.
// The relay keeps them in its spool and the tracking store in its records
// and API, under the same strings, so that the one set serves both.
//
// delivery imports nothing of trackrelay: the relay's spool, the tracking
// stores and cmd share it, so that the strings never drift apart.
package delivery
