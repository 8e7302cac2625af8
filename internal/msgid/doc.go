// Package msgid normalises RFC 5322 Message-IDs the one way the relay and
// the tracking store both key messages by, so that a message is found by
// its Message-ID with or without the angle brackets around it.
//
// msgid imports nothing of trackrelay.
package msgid
