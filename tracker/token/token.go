package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// ErrInvalid is returned by Keyring.Verify for any token that is malformed,
// too long, signed with an unknown key or tampered with. Callers answer it
// with a 404 and never say which of these it was.
var ErrInvalid = errors.New("token: invalid token")

// MinSecretLen is the smallest accepted key secret, in bytes.
const MinSecretLen = 32

// MaxLen bounds the length of an encoded token (without any ".gif"
// suffix). Verify rejects longer input before decoding it; a link whose
// click token would be longer should be left untracked by the rewriter.
const MaxLen = 64 << 10

// tagLen is the length of the truncated HMAC-SHA256 tag (128 bits).
const tagLen = 16

// tokenEncoding is URL-safe base64 without padding. Strict decoding rejects
// non-canonical trailing bits, so a token has exactly one spelling.
var tokenEncoding = base64.RawURLEncoding.Strict()

// Key is one signing key of a Keyring.
type Key struct {
	// ID names the key inside every token it signs, so that tokens minted
	// before a rotation still verify.
	ID byte
	// Secret is the HMAC-SHA256 key; at least MinSecretLen bytes.
	Secret []byte
}

// Keyring signs tracking tokens with its newest key and verifies them with
// any of its keys. It is safe for concurrent use.
type Keyring struct {
	signerID byte
	signer   *macKey
	keys     map[byte]*macKey
}

// macKey is one key's secret with a pool of its HMAC states: keying an
// HMAC hashes the secret twice, which every hit and every minted link
// would otherwise pay for.
type macKey struct {
	pool sync.Pool // of hash.Hash
}

func newMACKey(secret []byte) *macKey {
	secret = append([]byte(nil), secret...)
	return &macKey{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}}
}

// appendTag appends the truncated tag of data to dst.
func (k *macKey) appendTag(dst, data []byte) []byte {
	m := k.pool.Get().(hash.Hash)
	m.Reset()
	m.Write(data)
	var sum [sha256.Size]byte
	dst = append(dst, m.Sum(sum[:0])[:tagLen]...)
	k.pool.Put(m)
	return dst
}

// NewKeyring returns a keyring over keys. The last key signs new tokens; all
// of them verify. It fails when no key is given, when a secret is shorter
// than MinSecretLen or when two keys share an ID. The secrets are copied.
func NewKeyring(keys ...Key) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("token: keyring needs at least one key")
	}
	kr := &Keyring{keys: make(map[byte]*macKey, len(keys))}
	for _, k := range keys {
		if len(k.Secret) < MinSecretLen {
			return nil, fmt.Errorf("token: key %d: secret is %d bytes, need at least %d", k.ID, len(k.Secret), MinSecretLen)
		}
		if _, dup := kr.keys[k.ID]; dup {
			return nil, fmt.Errorf("token: key id %d given twice", k.ID)
		}
		kr.keys[k.ID] = newMACKey(k.Secret)
	}
	kr.signerID = keys[len(keys)-1].ID
	kr.signer = kr.keys[kr.signerID]
	return kr, nil
}

// Kind says what a token is for. Its byte is also the first byte of an
// encoded token and names the token format version: a future format will use
// new kind bytes.
type Kind byte

const (
	// KindOpen is the kind of open-pixel tokens.
	KindOpen Kind = 'o'
	// KindClick is the kind of click-redirect tokens.
	KindClick Kind = 'c'
)

// String returns "open", "click" or "unknown".
func (k Kind) String() string {
	switch k {
	case KindOpen:
		return "open"
	case KindClick:
		return "click"
	}
	return "unknown"
}

// Token is the verified content of a tracking token.
type Token struct {
	// Kind is KindOpen or KindClick.
	Kind Kind
	// KeyID is the ID of the key that signed the token.
	KeyID byte
	// Message is the queue id of the message.
	Message string
	// Recipient is the index of the recipient's copy in the message.
	Recipient int
	// Link is the index of the link in the message; -1 for open tokens.
	Link int
	// Dest is the link's destination; empty for open tokens.
	Dest string
}

// OpenToken returns the signed open-pixel token of one recipient's copy.
func (k *Keyring) OpenToken(message string, recipient int) string {
	return k.sign(Token{Kind: KindOpen, Message: message, Recipient: recipient})
}

// ClickToken returns the signed click token of one link of one recipient's
// copy. The destination travels inside the token, so redirects need no store.
func (k *Keyring) ClickToken(message string, recipient, link int, dest string) string {
	return k.sign(Token{Kind: KindClick, Message: message, Recipient: recipient, Link: link, Dest: dest})
}

// sign encodes t as
//
//	kind | key id | uvarint len(message) | message | varint recipient
//	[click: varint link | uvarint len(dest) | dest] | HMAC-SHA256[:16]
//
// with the tag computed over everything before it, and returns it in
// URL-safe base64 without padding.
func (k *Keyring) sign(t Token) string {
	n := 2 + 2*binary.MaxVarintLen64 + len(t.Message) + tagLen
	if t.Kind == KindClick {
		n += 2*binary.MaxVarintLen64 + len(t.Dest)
	}
	b := make([]byte, 0, n)
	b = append(b, byte(t.Kind), k.signerID)
	b = binary.AppendUvarint(b, uint64(len(t.Message)))
	b = append(b, t.Message...)
	b = binary.AppendVarint(b, int64(t.Recipient))
	if t.Kind == KindClick {
		b = binary.AppendVarint(b, int64(t.Link))
		b = binary.AppendUvarint(b, uint64(len(t.Dest)))
		b = append(b, t.Dest...)
	}
	b = k.signer.appendTag(b, b)
	return tokenEncoding.EncodeToString(b)
}

// HoneypotLink is the link index of a copy's honeypot link (see
// Minter.HoneypotURL): no link of the message has it, so the message's
// links never list it, and a click token that carries it is the
// honeypot's.
const HoneypotLink = -2

// Verify decodes and authenticates a token. One extension-like suffix after
// the last '.' (such as ".gif") is ignored, since the token alphabet has no
// '.'. Anything malformed, over MaxLen, signed by an unknown key or
// tampered with yields ErrInvalid.
func (k *Keyring) Verify(token string) (Token, error) {
	if i := strings.LastIndexByte(token, '.'); i >= 0 {
		token = token[:i]
	}
	if len(token) == 0 || len(token) > MaxLen || !isTokenAlphabet(token) {
		return Token{}, ErrInvalid
	}
	b, err := tokenEncoding.DecodeString(token)
	if err != nil || len(b) < 2+tagLen {
		return Token{}, ErrInvalid
	}
	body, tag := b[:len(b)-tagLen], b[len(b)-tagLen:]
	kind, keyID := Kind(body[0]), body[1]
	if kind != KindOpen && kind != KindClick {
		return Token{}, ErrInvalid
	}
	key, ok := k.keys[keyID]
	if !ok {
		return Token{}, ErrInvalid
	}
	var buf [tagLen]byte
	if !hmac.Equal(key.appendTag(buf[:0], body), tag) {
		return Token{}, ErrInvalid
	}
	t := Token{Kind: kind, KeyID: keyID, Link: -1}
	p := body[2:]
	var ok2 bool
	if t.Message, p, ok2 = readString(p); !ok2 {
		return Token{}, ErrInvalid
	}
	if t.Recipient, p, ok2 = readInt(p); !ok2 {
		return Token{}, ErrInvalid
	}
	if kind == KindClick {
		if t.Link, p, ok2 = readInt(p); !ok2 {
			return Token{}, ErrInvalid
		}
		if t.Dest, p, ok2 = readString(p); !ok2 {
			return Token{}, ErrInvalid
		}
	}
	if len(p) != 0 {
		return Token{}, ErrInvalid
	}
	return t, nil
}

// isTokenAlphabet reports whether s has only URL-safe base64 characters (the
// decoder itself would skip line breaks, giving one token many spellings).
func isTokenAlphabet(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func readString(p []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return "", nil, false
	}
	p = p[w:]
	return string(p[:n]), p[n:], true
}

func readInt(p []byte) (int, []byte, bool) {
	v, w := binary.Varint(p)
	if w <= 0 || int64(int(v)) != v {
		return 0, nil, false
	}
	return int(v), p[w:], true
}

// The URL layout of the tracking server. This package is the one place that
// knows it: Minter builds URLs with it and the HTTP handler routes by it.
const (
	// OpenPath is the path prefix of open pixels: OpenPath + token + PixelSuffix.
	OpenPath = "/o/"
	// ClickPath is the path prefix of click redirects: ClickPath + token.
	ClickPath = "/c/"
	// PixelSuffix ends an open pixel's URL, so that it looks like an image
	// to mail clients; Verify ignores it.
	PixelSuffix = ".gif"
)

// Minter mints the tracking URLs of one recipient's copy of a message.
type Minter struct {
	keys      *Keyring
	base      string
	message   string
	recipient int
}

// Minter returns the URL minter of one recipient's copy. baseURL is the
// public URL of the tracking server; a trailing '/' is ignored.
func (k *Keyring) Minter(baseURL, message string, recipient int) *Minter {
	return &Minter{keys: k, base: strings.TrimRight(baseURL, "/"), message: message, recipient: recipient}
}

// OpenURL returns the URL of the copy's open pixel: base + OpenPath + token + PixelSuffix.
func (m *Minter) OpenURL() string {
	return m.base + OpenPath + m.keys.OpenToken(m.message, m.recipient) + PixelSuffix
}

// ClickURL returns the click-redirect URL of link number index of the copy,
// which redirects to dest: base + ClickPath + token.
func (m *Minter) ClickURL(index int, dest string) string {
	return m.base + ClickPath + m.keys.ClickToken(m.message, m.recipient, index, dest)
}

// HoneypotURL returns the URL of the copy's honeypot link, which no
// person sees or follows: a click token for HoneypotLink with no
// destination, base + ClickPath + token. The tracker answers it without a
// redirect.
func (m *Minter) HoneypotURL() string {
	return m.base + ClickPath + m.keys.ClickToken(m.message, m.recipient, HoneypotLink, "")
}

// Ours reports whether the absolute URL u is on the tracking server: the
// base URL itself, or the base followed by '/', '?' or '#'. The base
// compares case-insensitively, as a browser's scheme and host do.
func (m *Minter) Ours(u string) bool {
	if m.base == "" || !hasPrefixFold(u, m.base) {
		return false
	}
	tail := u[len(m.base):]
	return tail == "" || tail[0] == '/' || tail[0] == '?' || tail[0] == '#'
}

// IsOpenURL reports whether u is an open pixel of the tracking server, of
// any message and copy.
func (m *Minter) IsOpenURL(u string) bool {
	return m.base != "" && hasPrefixFold(u, m.base) && hasPrefixFold(u[len(m.base):], OpenPath)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
