package console

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Account is an account that may log in to the console.
type Account struct {
	// Name is the account's name, as its messages are recorded under.
	Name string
	// APIKeySHA256 is the hex SHA-256 of the account's API key; "" when it
	// has none.
	APIKeySHA256 string
	// PasswordHash is the bcrypt hash of its SMTP password; "" when it has
	// none.
	PasswordHash string
}

// account is an Account ready to check secrets against.
type account struct {
	name   string
	keySum [sha256.Size]byte
	hasKey bool
	hash   []byte // bcrypt; nil: none
	// cred fingerprints the credentials: a session made with other ones
	// (the key or password changed since) is refused.
	cred string
}

// loadAccounts prepares accounts, keyed by name. An API key hash that is
// not hex SHA-256 counts as no key.
func loadAccounts(accounts []Account) map[string]*account {
	m := make(map[string]*account, len(accounts))
	for _, a := range accounts {
		acc := &account{name: a.Name}
		if b, err := hex.DecodeString(strings.TrimSpace(a.APIKeySHA256)); err == nil && len(b) == sha256.Size {
			copy(acc.keySum[:], b)
			acc.hasKey = true
		}
		if a.PasswordHash != "" {
			acc.hash = []byte(a.PasswordHash)
		}
		sum := sha256.Sum256([]byte("trackrelay console credentials\x00" + hex.EncodeToString(acc.keySum[:]) + "\x00" + a.PasswordHash))
		acc.cred = b64.EncodeToString(sum[:12])
		m[a.Name] = acc
	}
	return m
}

// dummyHash is compared with when the account is unknown or has no
// password, so that a login takes about as long whether the account
// exists or not.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("trackrelay console: no such account"), bcrypt.MinCost+6)

// check reports whether secret is the account's API key or its SMTP
// password. acc may be nil (no such account): the answer is false, after
// as much work.
func check(acc *account, secret string) bool {
	if secret == "" {
		bcrypt.CompareHashAndPassword(dummyHash, []byte(secret))
		return false
	}
	sum := sha256.Sum256([]byte(secret))
	keyOK := acc != nil && acc.hasKey && subtle.ConstantTimeCompare(sum[:], acc.keySum[:]) == 1
	hash := dummyHash
	if acc != nil && acc.hash != nil {
		hash = acc.hash
	}
	passOK := bcrypt.CompareHashAndPassword(hash, []byte(secret)) == nil && acc != nil && acc.hash != nil
	return keyOK || passOK
}
