package token

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func testSecret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func testKeyring(t testing.TB) *Keyring {
	t.Helper()
	kr, err := NewKeyring(Key{ID: 1, Secret: testSecret('a')})
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestNewKeyring_errors(t *testing.T) {
	for name, keys := range map[string][]Key{
		"none":      nil,
		"short":     {{ID: 1, Secret: make([]byte, 31)}},
		"duplicate": {{ID: 1, Secret: testSecret('a')}, {ID: 1, Secret: testSecret('b')}},
	} {
		if _, err := NewKeyring(keys...); err == nil {
			t.Errorf("%s: NewKeyring succeeded", name)
		}
	}
}

func TestToken_roundTrip(t *testing.T) {
	kr := testKeyring(t)
	ot := kr.OpenToken("Q1abc", 3)
	got, err := kr.Verify(ot)
	if err != nil {
		t.Fatal(err)
	}
	want := Token{Kind: KindOpen, KeyID: 1, Message: "Q1abc", Recipient: 3, Link: -1}
	if got != want {
		t.Errorf("open: got %+v, want %+v", got, want)
	}
	if _, err := kr.Verify(ot + ".gif"); err != nil {
		t.Errorf("open with .gif suffix: %v", err)
	}
	dest := "https://example.com/a?b=1&c=%20+d@e[0]"
	ct := kr.ClickToken("Q1abc", 0, 7, dest)
	got, err = kr.Verify(ct)
	if err != nil {
		t.Fatal(err)
	}
	want = Token{Kind: KindClick, KeyID: 1, Message: "Q1abc", Recipient: 0, Link: 7, Dest: dest}
	if got != want {
		t.Errorf("click: got %+v, want %+v", got, want)
	}
	for _, tok := range []string{ot, ct} {
		if strings.ContainsAny(tok, "+/=.") {
			t.Errorf("token %q is not URL-safe unpadded base64", tok)
		}
	}
	if len(ot) > 64 {
		t.Errorf("open token is %d chars long", len(ot))
	}
}

func TestToken_tamperEveryByte(t *testing.T) {
	kr := testKeyring(t)
	for _, tok := range []string{kr.OpenToken("Q1", 0), kr.ClickToken("Q1", 1, 2, "https://example.com/")} {
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		for i := range len(tok) {
			for _, c := range []byte(alphabet) {
				if c == tok[i] {
					continue
				}
				bad := tok[:i] + string(c) + tok[i+1:]
				if _, err := kr.Verify(bad); !errors.Is(err, ErrInvalid) {
					t.Fatalf("byte %d set to %q: err = %v, want ErrInvalid", i, c, err)
				}
			}
		}
		// Truncated, extended, and decoded-then-modified.
		for i := range len(tok) {
			if _, err := kr.Verify(tok[:i]); !errors.Is(err, ErrInvalid) {
				t.Fatalf("truncated to %d: err = %v", i, err)
			}
		}
		raw, err := tokenEncoding.DecodeString(tok)
		if err != nil {
			t.Fatal(err)
		}
		for i := range raw {
			for bit := range 8 {
				b := bytes.Clone(raw)
				b[i] ^= 1 << bit
				if _, err := kr.Verify(tokenEncoding.EncodeToString(b)); !errors.Is(err, ErrInvalid) {
					t.Fatalf("flip bit %d of byte %d: err = %v", bit, i, err)
				}
			}
		}
		if _, err := kr.Verify(tok + "A"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("extended: err = %v", err)
		}
	}
}

func TestToken_malformed(t *testing.T) {
	kr := testKeyring(t)
	for _, tok := range []string{"", ".gif", "!!!!", "AAAA", strings.Repeat("A", MaxLen+4), "a b", "%41"} {
		if _, err := kr.Verify(tok); !errors.Is(err, ErrInvalid) {
			t.Errorf("Verify(%.20q) = %v, want ErrInvalid", tok, err)
		}
	}
}

func TestToken_keyRotation(t *testing.T) {
	oldKR, err := NewKeyring(Key{ID: 1, Secret: testSecret('a')})
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := NewKeyring(Key{ID: 1, Secret: testSecret('a')}, Key{ID: 2, Secret: testSecret('b')})
	if err != nil {
		t.Fatal(err)
	}
	oldTok := oldKR.OpenToken("Q1", 0)
	got, err := rotated.Verify(oldTok)
	if err != nil || got.KeyID != 1 {
		t.Fatalf("old token after rotation: %+v, %v", got, err)
	}
	newTok := rotated.ClickToken("Q1", 0, 0, "https://example.com/")
	got, err = rotated.Verify(newTok)
	if err != nil || got.KeyID != 2 {
		t.Fatalf("new token: %+v, %v", got, err)
	}
	// A keyring that lost key 2 (or never had it) rejects it.
	if _, err := oldKR.Verify(newTok); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown key id: err = %v", err)
	}
}

func TestToken_wrongKey(t *testing.T) {
	a, _ := NewKeyring(Key{ID: 1, Secret: testSecret('a')})
	b, _ := NewKeyring(Key{ID: 1, Secret: testSecret('b')})
	if _, err := b.Verify(a.OpenToken("Q1", 0)); !errors.Is(err, ErrInvalid) {
		t.Errorf("same id, other secret: err = %v", err)
	}
}

func TestMinter(t *testing.T) {
	kr := testKeyring(t)
	m := kr.Minter("https://t.example.com/", "Q9", 2)
	open := m.OpenURL()
	tok, ok := strings.CutPrefix(open, "https://t.example.com/o/")
	if !ok || !strings.HasSuffix(tok, ".gif") {
		t.Fatalf("OpenURL = %q", open)
	}
	if got, err := kr.Verify(tok); err != nil || got.Message != "Q9" || got.Recipient != 2 || got.Kind != KindOpen {
		t.Errorf("open token: %+v, %v", got, err)
	}
	click := m.ClickURL(4, "http://example.org/x")
	tok, ok = strings.CutPrefix(click, "https://t.example.com/c/")
	if !ok {
		t.Fatalf("ClickURL = %q", click)
	}
	if got, err := kr.Verify(tok); err != nil || got.Link != 4 || got.Dest != "http://example.org/x" || got.Kind != KindClick {
		t.Errorf("click token: %+v, %v", got, err)
	}
}

func FuzzVerify(f *testing.F) {
	kr, _ := NewKeyring(Key{ID: 1, Secret: testSecret('a')})
	f.Add(kr.OpenToken("Q1", 0) + ".gif")
	f.Add(kr.ClickToken("Q1", 1, 2, "https://example.com/"))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := kr.Verify(s)
		if err != nil {
			return
		}
		var again string
		if tok.Kind == KindOpen {
			again = kr.OpenToken(tok.Message, tok.Recipient)
		} else {
			again = kr.ClickToken(tok.Message, tok.Recipient, tok.Link, tok.Dest)
		}
		if i := strings.LastIndexByte(s, '.'); i >= 0 {
			s = s[:i]
		}
		if again != s {
			t.Errorf("verified token %q re-signs as %q", s, again)
		}
	})
}

// The minter tells the tracking server's URLs from others: rewrite leaves
// links on the base alone and removes its open pixels from quoted history.
func TestMinter_ours(t *testing.T) {
	kr, err := NewKeyring(Key{ID: 1, Secret: bytes.Repeat([]byte("k"), 32)})
	if err != nil {
		t.Fatal(err)
	}
	m := kr.Minter("https://t.example.com/", "Q1", 0)
	for _, c := range []struct {
		url       string
		ours, pix bool
	}{
		{"https://t.example.com", true, false},
		{"https://t.example.com/", true, false},
		{"https://t.example.com/c/abc", true, false},
		{"HTTPS://T.Example.COM/o/abc.gif", true, true},
		{"https://t.example.com/o/", true, true},
		{"https://t.example.com?x", true, false},
		{"https://t.example.com#f", true, false},
		{"https://t.example.com.evil.example/o/x", false, false},
		{"https://t.example.comx/", false, false},
		{"http://t.example.com/o/x", false, false},
		{"https://example.com/o/x", false, false},
		{m.OpenURL(), true, true},
		{m.ClickURL(0, "https://example.com/"), true, false},
	} {
		if got := m.Ours(c.url); got != c.ours {
			t.Errorf("Ours(%q) = %v, want %v", c.url, got, c.ours)
		}
		if got := m.IsOpenURL(c.url); got != c.pix {
			t.Errorf("IsOpenURL(%q) = %v, want %v", c.url, got, c.pix)
		}
	}
	if none := kr.Minter("", "Q1", 0); none.Ours("https://t.example.com/") || none.IsOpenURL("/o/x") {
		t.Error("a minter without a base claims URLs")
	}
}

// A copy's honeypot URL is a click token of its own message and copy for
// HoneypotLink, with no destination, under ClickPath and on the tracker.
func TestMinter_honeypotURL(t *testing.T) {
	kr := testKeyring(t)
	m := kr.Minter("https://t.example.com/", "Q1abc", 4)
	u := m.HoneypotURL()
	if !strings.HasPrefix(u, "https://t.example.com"+ClickPath) || !m.Ours(u) || m.IsOpenURL(u) {
		t.Fatalf("HoneypotURL = %q", u)
	}
	got, err := kr.Verify(strings.TrimPrefix(u, "https://t.example.com"+ClickPath))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Token{Kind: KindClick, KeyID: 1, Message: "Q1abc", Recipient: 4, Link: HoneypotLink}); got != want {
		t.Errorf("token %+v, want %+v", got, want)
	}
}
