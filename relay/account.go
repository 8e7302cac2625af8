package relay

import (
	"crypto/subtle"
	"errors"
	"net/netip"
	"sync"

	"github.com/emersion/go-sasl"
	"golang.org/x/crypto/bcrypt"
)

// Tracking modes: what a recipient's copy gets.
const (
	ModeNone   = "none"
	ModeOpens  = "opens"
	ModeClicks = "clicks"
	ModeAll    = "all"
)

// ValidMode reports whether m names a tracking mode.
func ValidMode(m string) bool {
	switch m {
	case ModeNone, ModeOpens, ModeClicks, ModeAll:
		return true
	}
	return false
}

// ModeFlags says whether mode m tracks opens and clicks.
func ModeFlags(m string) (opens, clicks bool) {
	switch m {
	case ModeOpens:
		return true, false
	case ModeClicks:
		return false, true
	case ModeAll:
		return true, true
	}
	return false, false
}

// Account is a sender of the app: it authenticates with a name and password,
// or sends without AUTH from one of its networks.
type Account struct {
	Name          string
	PasswordHash  []byte // bcrypt; empty: this account cannot AUTH
	Networks      []netip.Prefix
	Mode          string   // tracking mode of its messages
	SelfAddresses []string // copies to these are never tracked
}

// isSelf reports whether addr is one of the account's own addresses (an
// internationalized domain matches in U-label or A-label form).
func (a *Account) isSelf(addr string) bool {
	for _, s := range a.SelfAddresses {
		if sameAddress(s, addr) {
			return true
		}
	}
	return false
}

// errBadCredentials is the one failure every wrong login gets, whatever was
// wrong, so that nothing tells a guesser which user names exist.
var errBadCredentials = errors.New("bad credentials")

// bcrypt's hashing, through variables so that a test can see which hash
// each login is checked against without paying for the hashing.
var (
	compareHash  = bcrypt.CompareHashAndPassword
	generateHash = bcrypt.GenerateFromPassword
)

// accounts is the account table with its lookups.
type accounts struct {
	list []Account

	dummyOnce sync.Once
	dummy     []byte
}

// dummyHash is compared against when the user is unknown or has no
// password, so that such logins cost the same bcrypt time as known ones: it
// has the highest cost of the accounts' hashes (at least 10), since a
// cheaper one would tell a guesser which user names exist.
func (as *accounts) dummyHash() []byte {
	as.dummyOnce.Do(func() {
		cost := 10
		for _, a := range as.list {
			if c, err := bcrypt.Cost(a.PasswordHash); err == nil && c > cost {
				cost = c
			}
		}
		as.dummy, _ = generateHash([]byte("trackrelay-dummy-password"), cost)
	})
	return as.dummy
}

func (as *accounts) authenticate(user, pass string) (*Account, error) {
	var acct *Account
	for i := range as.list {
		if subtle.ConstantTimeCompare([]byte(as.list[i].Name), []byte(user)) == 1 {
			acct = &as.list[i]
		}
	}
	hash := as.dummyHash()
	if acct != nil && len(acct.PasswordHash) > 0 {
		hash = acct.PasswordHash
	}
	err := compareHash(hash, []byte(pass))
	if acct == nil || len(acct.PasswordHash) == 0 || err != nil {
		return nil, errBadCredentials
	}
	return acct, nil
}

// byNetwork returns the account whose networks hold ip, the most specific
// prefix winning.
func (as *accounts) byNetwork(ip netip.Addr) *Account {
	var best *Account
	bits := -1
	for i := range as.list {
		for _, p := range as.list[i].Networks {
			if p.Contains(ip) && p.Bits() > bits {
				best, bits = &as.list[i], p.Bits()
			}
		}
	}
	return best
}

// loginServer is the server side of SASL LOGIN (draft-murchison-sasl-login),
// which desktop mail clients still use and go-sasl no longer provides.
type loginServer struct {
	step         int
	user         string
	authenticate func(user, pass string) error
}

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step++
		if len(response) > 0 { // initial response carries the user name
			s.user = string(response)
			s.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		s.user = string(response)
		s.step++
		return []byte("Password:"), false, nil
	case 2:
		s.step++
		return nil, true, s.authenticate(s.user, string(response))
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}
