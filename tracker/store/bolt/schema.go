package bolt

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
	bbolt "go.etcd.io/bbolt"
)

// Bucket names of the bbolt layout.
//
//	messages    queue id                        -> JSON storedMessage
//	msgids      account NUL Message-ID          -> queue id
//	links       queue id                        -> JSON []string
//	deliveries  queue id NUL uint32 recipient   -> JSON storedDelivery
//	events      queue id NUL uint64 sequence    -> JSON storedEvent
//	recipients  queue id NUL uint32 recipient   -> JSON storedRcpt (counters, clicks past the cap)
//	recipients  queue id NUL                    -> JSON storedMsgClicks (clicks soon after delivery: multi.go)
//	clicks      queue id NUL uint32 recipient, uint64 time, uint64 event sequence -> link, burst (clicks.go)
//	feed        account NUL uint64 sequence     -> JSON storedFeedEntry
//	msgfeed     queue id NUL uint64 feed seq    -> account (delivery entries, for Erase)
//	outbox      uint64 due unix ns, uint64 feed seq -> JSON storedOutbox
//	erased      queue id                        -> erase time (RFC 3339)
//	marks       uint64 unix seconds             -> uint64 event seq, uint64 feed seq
//	meta        "id"                            -> 8 random bytes naming this store
//	browse      account NUL uint64 time, queue id -> search text (browse.go)
//
// Integers in keys are big-endian, so a message's deliveries and events,
// an account's feed and the outbox by due time are ordered prefix scans.
var (
	bucketMessages   = []byte("messages")
	bucketMsgIDs     = []byte("msgids")
	bucketLinks      = []byte("links")
	bucketDeliveries = []byte("deliveries")
	bucketEvents     = []byte("events")
	bucketRecipients = []byte("recipients")
	bucketClicks     = []byte("clicks")
	bucketFeed       = []byte("feed")
	bucketMsgFeed    = []byte("msgfeed")
	bucketOutbox     = []byte("outbox")
	bucketErased     = []byte("erased")
	bucketMarks      = []byte("marks")
	bucketMeta       = []byte("meta")

	allBuckets = [][]byte{bucketMessages, bucketMsgIDs, bucketLinks, bucketDeliveries, bucketEvents,
		bucketRecipients, bucketClicks, bucketFeed, bucketMsgFeed, bucketOutbox, bucketErased, bucketMarks, bucketMeta, bucketBrowse}
)

// maxIDLen bounds queue ids and Message-IDs used as keys.
const maxIDLen = 998

// Stored record types: the on-disk schema, kept apart from the API types.
type storedMessage struct {
	ID         string            `json:"id"`
	MessageID  string            `json:"mid,omitempty"`
	Account    string            `json:"acct"`
	From       string            `json:"from"`
	Subject    string            `json:"subj,omitempty"`
	SubmitIP   string            `json:"ip,omitempty"`
	AcceptedAt time.Time         `json:"at"`
	Mode       string            `json:"mode"`
	Recipients []storedRecipient `json:"rcpt"`
}

type storedRecipient struct {
	Address string `json:"addr"`
	Tracked bool   `json:"tr,omitempty"`
}

type storedDelivery struct {
	Status       delivery.Status `json:"st"`
	Attempts     int             `json:"n,omitempty"`
	LastResponse string          `json:"resp,omitempty"`
	UpdatedAt    time.Time       `json:"at"`
}

type storedEvent struct {
	Type      string    `json:"t"`
	At        time.Time `json:"at"`
	Recipient int       `json:"r"`
	Link      int       `json:"l"`
	URL       string    `json:"u,omitempty"`
	IP        string    `json:"ip,omitempty"`
	UserAgent string    `json:"ua,omitempty"`
	Client    string    `json:"cl,omitempty"`
	Country   string    `json:"cc,omitempty"`
	City      string    `json:"ci,omitempty"`
	Class     string    `json:"c"`
	Reasons   []string  `json:"why,omitempty"`
}

// storedRcpt is the running state of one recipient's copy: how many events
// are kept in detail, the counters of those that are not (over the cap, or
// expired), and its latest clicks past the cap, for burst detection (the
// clicks kept in detail are in the clicks bucket).
type storedRcpt struct {
	Kept    int            `json:"k,omitempty"`
	Opened  bool           `json:"o,omitempty"` // a counted open was seen
	OverCap []overCapClick `json:"oc,omitempty"`
	Tally   *tally         `json:"t,omitempty"`
	// Gateway is the copy's latest pixel fetch by a security gateway, for
	// classify.InGatewayPair with the clicks after it.
	Gateway *gatewayOpen `json:"gw,omitempty"`
	// GatewayClicks are the copy's latest clicks kept in detail that came
	// from a gateway's network and are not scanner's, for
	// classify.InGatewayPair with a gateway pixel fetch after them; at most
	// maxGatewayClicks, none older than classify.GatewayPairWindow before
	// the newest.
	GatewayClicks []gatewayClick `json:"gwc,omitempty"`
	// Honeypot is the copy's latest hit on its honeypot link, for
	// classify.NearHoneypot with the hits after it.
	Honeypot *gatewayOpen `json:"hp,omitempty"`
	// Recent are the copy's latest hits kept in detail, with an address,
	// that are neither scanner's nor self's, for classify.NearHoneypot with
	// a honeypot hit after them; at most maxRecentHits, none older than
	// classify.HoneypotWindow before the newest.
	Recent []gatewayClick `json:"rh,omitempty"`
}

// gatewayOpen is a classify.GatewayOpen as stored.
type gatewayOpen struct {
	IP string    `json:"ip"`
	At time.Time `json:"at"`
}

// gatewayClick is a click of GatewayClicks: its address, time and
// sequence in the events bucket.
type gatewayClick struct {
	IP  string    `json:"ip"`
	At  time.Time `json:"at"`
	Seq uint64    `json:"s"`
}

// maxGatewayClicks bounds storedRcpt.GatewayClicks: a gateway follows a
// message's links within seconds, far fewer than this many.
const maxGatewayClicks = 16

// maxRecentHits bounds storedRcpt.Recent: a machine that follows the
// honeypot link fetches the rest of the copy within seconds.
const maxRecentHits = 16

// tally counts events that are not kept in detail. Opens, Clicks, Links,
// First and Last count only what a person did.
type tally struct {
	Events int         `json:"n"`
	Opens  int         `json:"o,omitempty"`
	Clicks int         `json:"c,omitempty"`
	Links  map[int]int `json:"l,omitempty"`
	First  *time.Time  `json:"f,omitempty"`
	Last   *time.Time  `json:"z,omitempty"`
}

func (t *tally) add(typ, class string, link int, at time.Time) {
	t.Events++
	if !classify.Counted(class) {
		return
	}
	switch typ {
	case store.EventOpen:
		t.Opens++
	case store.EventClick:
		t.Clicks++
		if t.Links == nil {
			t.Links = map[int]int{}
		}
		t.Links[link]++
	}
	at = at.UTC()
	if t.First == nil || at.Before(*t.First) {
		t.First = &at
	}
	if t.Last == nil || at.After(*t.Last) {
		t.Last = &at
	}
}

func validID(id string) error {
	if id == "" || len(id) > maxIDLen || strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("tracker: invalid queue id %q", id)
	}
	return nil
}

func prefixKey(id string) []byte {
	k := make([]byte, 0, len(id)+1+8)
	k = append(k, id...)
	return append(k, 0)
}

func msgIDKey(account, messageID string) []byte {
	k := make([]byte, 0, len(account)+1+len(messageID))
	k = append(k, account...)
	k = append(k, 0)
	return append(k, messageID...)
}

func deliveryKey(id string, recipient int) []byte {
	return binary.BigEndian.AppendUint32(prefixKey(id), uint32(recipient))
}

func eventKey(id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefixKey(id), seq)
}

func feedKey(account string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefixKey(account), seq)
}

// keySeq returns the big-endian integer that ends key k.
func keySeq(k []byte) uint64 {
	if len(k) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(k)-8:])
}

// eventID and entryID name events and feed entries; the store's random id
// makes them unique across stores, as webhook receivers dedupe on them.
func (s *Store) eventID(seq uint64) string {
	return "ev_" + s.storeID + fmt.Sprintf("%016x", seq)
}

func (s *Store) entryID(prefix string, seq uint64) string {
	return prefix + s.storeID + fmt.Sprintf("%016x", seq)
}

func isErased(tx *bbolt.Tx, id string) bool {
	return tx.Bucket(bucketErased).Get([]byte(id)) != nil
}
