// Package msgid normalises RFC 5322 Message-IDs the one way the relay and
// the tracking store both key messages by, so that a message is found by
// its Message-ID with or without the angle brackets around it.
package msgid

import "strings"

// Normalize returns s without the white space around it and then without
// one pair of angle brackets enclosing it: "<a@b>", " <a@b> " and "a@b"
// all give "a@b". Anything else is kept as it is, so that a malformed id
// still matches itself.
func Normalize(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		return s[1 : len(s)-1]
	}
	return s
}
