package relay

import (
	"crypto/subtle"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
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

// isSelf reports whether addr is one of the account's own addresses.
func (a *Account) isSelf(addr string) bool {
	for _, s := range a.SelfAddresses {
		if strings.EqualFold(s, addr) {
			return true
		}
	}
	return false
}

// errBadCredentials is the one failure every wrong login gets, whatever was
// wrong, so that nothing tells a guesser which user names exist.
var errBadCredentials = errors.New("bad credentials")

// dummyHash is compared against when the user is unknown, so that unknown
// users cost the same bcrypt time as known ones.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("trackrelay-dummy-password"), 10)

// accounts is the account table with its lookups.
type accounts struct {
	list []Account
}

func (as *accounts) authenticate(user, pass string) (*Account, error) {
	var acct *Account
	for i := range as.list {
		if subtle.ConstantTimeCompare([]byte(as.list[i].Name), []byte(user)) == 1 {
			acct = &as.list[i]
		}
	}
	hash := dummyHash
	if acct != nil && len(acct.PasswordHash) > 0 {
		hash = acct.PasswordHash
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
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

// authLimiter rate-limits failed logins per client IP: a burst of attempts,
// then one every interval. Entries are forgotten once idle.
type authLimiter struct {
	mu       sync.Mutex
	perIP    map[netip.Addr]*limiterEntry
	every    time.Duration
	burst    int
	lastScan time.Time
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newAuthLimiter(burst int, every time.Duration) *authLimiter {
	return &authLimiter{perIP: map[netip.Addr]*limiterEntry{}, every: every, burst: burst}
}

// blocked reports whether ip has used up its failed attempts.
func (l *authLimiter) blocked(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.perIP[ip]
	return e != nil && e.lim.Tokens() < 1
}

// failed records a failed attempt from ip.
func (l *authLimiter) failed(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	e := l.perIP[ip]
	if e == nil {
		e = &limiterEntry{lim: rate.NewLimiter(rate.Every(l.every), l.burst)}
		l.perIP[ip] = e
	}
	e.seen = now
	e.lim.AllowN(now, 1)
	if now.Sub(l.lastScan) > time.Minute {
		l.lastScan = now
		idle := l.every * time.Duration(l.burst+1)
		for k, v := range l.perIP {
			if now.Sub(v.seen) > idle {
				delete(l.perIP, k)
			}
		}
	}
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
