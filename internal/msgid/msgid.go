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
