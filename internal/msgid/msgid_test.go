package msgid

import "testing"

func TestNormalize(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a@b", "a@b"},
		{"<a@b>", "a@b"},
		{"  <a@b>\t", "a@b"},
		{" a@b ", "a@b"},
		{"<<a@b>>", "<a@b>"}, // one pair only
		{"<a@b", "<a@b"},     // unmatched: kept
		{"a@b>", "a@b>"},
		{"<>", ""},
		{"<", "<"},
		{"", ""},
		{"< a@b >", " a@b "}, // spaces inside the brackets are part of the id
	} {
		if got := Normalize(c.in); got != c.want {
			t.Errorf("Normalize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
