package bolt

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Every hit stores an event and a feed entry, and encoding them with
// encoding/json's reflection was a tenth of a recording server's CPU. These
// appenders write the very bytes json.Marshal writes for the two types
// (the tests compare them on every kind of field), so that the store keeps
// one format, read back with json.Unmarshal.

// encodeEvent returns the JSON of e, as json.Marshal does.
func encodeEvent(e *storedEvent) ([]byte, error) {
	if !jsonTimeOK(e.At) {
		return json.Marshal(e)
	}
	b := make([]byte, 0, 160+len(e.URL)+len(e.UserAgent))
	b = append(b, `{"t":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"at":"`...)
	b = e.At.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","r":`...)
	b = strconv.AppendInt(b, int64(e.Recipient), 10)
	b = append(b, `,"l":`...)
	b = strconv.AppendInt(b, int64(e.Link), 10)
	b = appendOptString(b, `,"u":`, e.URL)
	b = appendOptString(b, `,"ip":`, e.IP)
	b = appendOptString(b, `,"ua":`, e.UserAgent)
	b = appendOptString(b, `,"cl":`, e.Client)
	b = appendOptString(b, `,"cc":`, e.Country)
	b = appendOptString(b, `,"ci":`, e.City)
	b = append(b, `,"c":`...)
	b = appendJSONString(b, e.Class)
	b = appendOptStrings(b, `,"why":`, e.Reasons)
	return append(b, '}'), nil
}

// encodeFeedEntry returns the JSON of fe, as json.Marshal does.
func encodeFeedEntry(fe *storedFeedEntry) ([]byte, error) {
	if fe.Delivery != nil || !jsonTimeOK(fe.At) {
		return json.Marshal(fe)
	}
	b := make([]byte, 0, 96+len(fe.Message))
	b = append(b, `{"k":`...)
	b = appendJSONString(b, fe.Kind)
	b = append(b, `,"m":`...)
	b = appendJSONString(b, fe.Message)
	b = append(b, `,"r":`...)
	b = strconv.AppendInt(b, int64(fe.Recipient), 10)
	if fe.Event != 0 {
		b = append(b, `,"e":`...)
		b = strconv.AppendUint(b, fe.Event, 10)
	}
	b = append(b, `,"at":"`...)
	b = fe.At.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendOptString(b, `,"c":`, fe.Class)
	b = appendOptString(b, `,"p":`, fe.Prev)
	b = appendOptStrings(b, `,"why":`, fe.Reasons)
	return append(b, '}'), nil
}

// jsonTimeOK reports whether t is a time json.Marshal writes as
// RFC3339Nano: years 0 to 9999 and a zone offset within ±24h.
func jsonTimeOK(t time.Time) bool {
	if y := t.Year(); y < 0 || y > 9999 {
		return false
	}
	_, off := t.Zone()
	return off > -24*3600 && off < 24*3600
}

func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendJSONString(append(b, key...), s)
}

func appendOptStrings(b []byte, key string, ss []string) []byte {
	if len(ss) == 0 {
		return b
	}
	b = append(b, key...)
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string the way encoding/json does
// by default: HTML-safe (<, >, & escaped), invalid UTF-8 as U+FFFD, and
// U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
