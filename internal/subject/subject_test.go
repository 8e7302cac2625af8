package subject

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecode(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"plain", "Your quote", "Your quote"},
		{"UTF-8 B", "=?UTF-8?B?RGV2aXMgbsKwIDQyIOKAlCDDqXTDqQ==?=", "Devis n° 42 — été"},
		{"UTF-8 Q", "=?utf-8?q?Devis_n=C2=B0_42_=E2=80=94_=C3=A9t=C3=A9?=", "Devis n° 42 — été"},
		{"ISO-8859-1", "=?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=", "Grüße aus Köln"},
		{"Windows-1252", "=?windows-1252?Q?=93Quoted=94_=80?=", "“Quoted” €"},
		{"adjacent words join", "=?UTF-8?Q?Rapport_?= \r\n =?UTF-8?Q?annuel?= 2025", "Rapport annuel 2025"},
		{"a character split across words", "=?UTF-8?B?w6k=?= =?UTF-8?B?dMOp?=", "été"},
		{"folded", "A long subject\r\n that was folded", "A long subject that was folded"},
		{"folded with LF", "A long subject\n\tfolded with a tab", "A long subject folded with a tab"},
		{"unknown charset stays", "Hello =?x-unknown?Q?w=F6rld?= and =?UTF-8?Q?caf=C3=A9?=", "Hello =?x-unknown?Q?w=F6rld?= and café"},
		{"broken base64 stays", "=?UTF-8?B?not*base64?= ok", "=?UTF-8?B?not*base64?= ok"},
		{"raw UTF-8 (SMTPUTF8)", "Réunion à 10 h", "Réunion à 10 h"},
		{"invalid UTF-8", "caf\xe9", "caf\uFFFD"},
		{"control characters", "a\x00b\x1bc", "a b c"},
		{"none", "", ""},
	} {
		if got := Decode(c.in); got != c.want {
			t.Errorf("%s: Decode(%q) = %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", MaxBytes) // 2 bytes a rune
	got := Decode(long + "x")
	if len(got) > MaxBytes || !utf8.ValidString(got) || got != long[:MaxBytes] {
		t.Errorf("cut to %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	odd := "a" + long // a rune straddles the limit
	if got := Truncate(odd); len(got) != MaxBytes-1 || !utf8.ValidString(got) {
		t.Errorf("Truncate cut at %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if got := Truncate("short"); got != "short" {
		t.Errorf("Truncate(short) = %q", got)
	}
}
