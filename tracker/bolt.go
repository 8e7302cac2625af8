package tracker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	bolt "go.etcd.io/bbolt"
)

// Bucket names of the bbolt layout.
//
//	messages    queue id                        -> JSON storedMessage
//	msgids      account NUL Message-ID          -> queue id
//	links       queue id                        -> JSON []string
//	deliveries  queue id NUL uint32 recipient   -> JSON storedDelivery
//	events      queue id NUL uint64 sequence    -> JSON storedEvent
//	recipients  queue id NUL uint32 recipient   -> JSON storedRcpt (counters, clicks past the cap)
//	clicks      queue id NUL uint32 recipient, uint64 time, uint64 event sequence -> link, burst (clicks.go)
//	feed        account NUL uint64 sequence     -> JSON storedFeedEntry
//	msgfeed     queue id NUL uint64 feed seq    -> account (delivery entries, for Erase)
//	outbox      uint64 due unix ns, uint64 feed seq -> JSON storedOutbox
//	erased      queue id                        -> erase time (RFC 3339)
//	marks       uint64 unix seconds             -> uint64 event seq, uint64 feed seq
//	meta        "id"                            -> 8 random bytes naming this store
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
		bucketRecipients, bucketClicks, bucketFeed, bucketMsgFeed, bucketOutbox, bucketErased, bucketMarks, bucketMeta}
)

// maxIDLen bounds queue ids and Message-IDs used as keys.
const maxIDLen = 998

// Defaults of BoltOptions.
const (
	DefaultMaxBatch                 = 1024
	DefaultLockTimeout              = 5 * time.Second
	DefaultReportDelay              = 10 * time.Millisecond
	DefaultMaxCommitDelay           = 2 * time.Millisecond
	commitSiblings                  = 4 // the last batch's size that means "under load"
	DefaultMaxEventsPerRecipient    = 100
	DefaultRetentionInterval        = time.Hour
	defaultQueueLen                 = 4096
	retentionChunk                  = 2000
	retentionScan                   = 50000
	feedKindOpen, feedKindClick     = EventOpen, EventClick
	feedKindDelivery, feedKindRecls = EventDelivery, EventReclassified
)

// BoltOptions tunes a BoltStore. Zero fields take the defaults.
type BoltOptions struct {
	// MaxBatch is the most events committed in one transaction.
	MaxBatch int
	// MaxCommitDelay bounds how long the collector, under load, waits for
	// hits to join a batch before it logs them: twice as long as the last
	// append took, at most this. It waits only when the last batch had
	// commitSiblings writes or more, so a lone hit is logged at once.
	// Negative: never.
	MaxCommitDelay time.Duration
	// ReportDelay is how long the relay's reports (PutMessage, SetLinks,
	// SetDelivery), when no hit is waiting, wait for more writes to share
	// their commit. Negative: none.
	ReportDelay time.Duration
	// MaxEventsPerRecipient is how many events are kept in detail per
	// recipient copy; later ones only increase its counters, so that a
	// script hammering one pixel cannot fill the disk.
	MaxEventsPerRecipient int
	// CacheSize is the number of messages kept in memory for classifying
	// hits without a read transaction.
	CacheSize int
	// Retention, when positive, deletes events (and feed entries) older
	// than this, checking every RetentionInterval. Counters stay.
	Retention         time.Duration
	RetentionInterval time.Duration
	// WebhookAccounts are the accounts whose feed entries are also queued
	// in the durable webhook outbox.
	WebhookAccounts []string
	// Metrics receives commit latency and batch size; nil records nothing.
	Metrics *Metrics
	// LockTimeout bounds the wait for the database file lock, held by any
	// other process that has the file open.
	LockTimeout time.Duration
	// Logger receives background errors (retention, the hit log, events
	// lost after they were answered, panics recovered with their stacks,
	// hits set aside in the quarantine file) and, at info level, how many
	// hits a start replayed from the hit log; nil discards. A Logger that
	// is not a *slog.Logger gets everything but the recovered panics, which
	// go to slog's default logger.
	Logger interface {
		Error(msg string, args ...any)
		Info(msg string, args ...any)
	}
}

// BoltStore is the embedded Store, in one bbolt file and its hit log
// (path + "-wal"). Events, and the relay's reports of messages and
// deliveries, are taken by one collector goroutine in batches (group
// commit): the events of a batch are appended to the log with one
// fdatasync and answered; the applier then commits batches to bbolt in
// order, events every 20 ms and reports at once (see apply). A hit whose
// commit panics is set aside in the quarantine file (path +
// QuarantineSuffix) and skipped.
type BoltStore struct {
	db       *bolt.DB
	opts     BoltOptions
	storeID  string // hex, in event and feed ids
	cache    *metaCache
	webhooks map[string]bool
	reqs     chan *eventReq
	closing  chan struct{}
	stopped  chan struct{}
	bg       sync.WaitGroup
	closeErr error
	once     sync.Once
	commits  atomic.Int64
	outboxN  atomic.Int64
	path     string
	alloc    int64         // bytes of the file known to be preallocated
	wake     chan struct{} // an outbox entry was added
	panicLog *slog.Logger  // where guard logs a recovered panic

	log         *hitLog         // the hit log, appended by the collector
	applyCh     chan applyBatch // collector -> applier, in order
	applierDone chan struct{}   // closed when the applier has committed everything
	kick        chan struct{}   // asks the applier to commit now
	logged      atomic.Uint64   // last log sequence appended and answered
	applied     atomic.Uint64   // last log sequence committed to bbolt
	appliedMu   sync.Mutex      // guards appliedCh
	appliedCh   chan struct{}   // closed, and replaced, when applied moves
}

var _ Store = (*BoltStore)(nil)
var _ DeliveryReader = (*BoltStore)(nil)

// OpenBolt opens (creating if needed) the bbolt store at path and starts its
// event collector. It fails if another process holds the file for longer
// than opts.LockTimeout.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.ReportDelay == 0 {
		opts.ReportDelay = DefaultReportDelay
	}
	if opts.MaxCommitDelay == 0 {
		opts.MaxCommitDelay = DefaultMaxCommitDelay
	}
	if opts.MaxEventsPerRecipient <= 0 {
		opts.MaxEventsPerRecipient = DefaultMaxEventsPerRecipient
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.RetentionInterval <= 0 {
		opts.RetentionInterval = DefaultRetentionInterval
	}
	// The freelist is rebuilt on open rather than written by every commit.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("tracker: open store %s: %w", path, err)
	}
	var storeID []byte
	var outboxN int
	var logApplied uint64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if storeID = bytes.Clone(meta.Get([]byte("id"))); storeID == nil {
			storeID = make([]byte, 8)
			if _, err := rand.Read(storeID); err != nil {
				return err
			}
			if err := meta.Put([]byte("id"), storeID); err != nil {
				return err
			}
		}
		outboxN = tx.Bucket(bucketOutbox).Stats().KeyN
		if v := meta.Get(metaLogKey); len(v) == 8 {
			logApplied = binary.BigEndian.Uint64(v)
		}
		return putMark(tx, time.Now())
	})
	if err != nil {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("tracker: init store %s: %w", path, err)
	}
	s := &BoltStore{
		db:       db,
		opts:     opts,
		storeID:  hex.EncodeToString(storeID),
		cache:    newMetaCache(opts.CacheSize),
		webhooks: map[string]bool{},
		reqs:     make(chan *eventReq, defaultQueueLen),
		closing:  make(chan struct{}),
		stopped:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
		path:     path,
		panicLog: panicLogger(opts.Logger),

		applyCh:     make(chan applyBatch, applyQueueLen),
		applierDone: make(chan struct{}),
		kick:        make(chan struct{}, 1),
		appliedCh:   make(chan struct{}),
	}
	s.preallocate(0)
	s.outboxN.Store(int64(outboxN))
	for _, a := range opts.WebhookAccounts {
		s.webhooks[a] = true
	}
	// After the webhooks: replayed hits go to the outbox like live ones.
	if err := s.openLog(path+"-wal", logApplied); err != nil {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("tracker: hit log of %s: %w", path, err)
	}
	if m := opts.Metrics; m != nil {
		m.setOutboxFunc(func() float64 { return float64(s.outboxN.Load()) })
	}
	go s.collect()
	go s.apply()
	if opts.Retention > 0 {
		s.bg.Add(1)
		go s.retentionLoop()
	}
	return s, nil
}

// Preallocation of the database file, ahead of its use.
const (
	preallocAhead = 64 << 20
	preallocMin   = 16 << 20
)

// preallocate keeps at least preallocMin bytes allocated past used; only
// the collector calls it after OpenBolt. Failing is harmless (commits are
// slower), so it is only logged.
func (s *BoltStore) preallocate(used int64) {
	if used+preallocMin <= s.alloc {
		return
	}
	want := used + preallocAhead
	if fi, err := os.Stat(s.path); err == nil && fi.Size() > want {
		want = fi.Size()
	}
	if err := preallocate(s.path, want); err != nil {
		if s.opts.Logger != nil {
			s.opts.Logger.Error("tracker: preallocate store file", "err", err)
		}
		s.alloc = 1 << 62 // do not retry
		return
	}
	s.alloc = want
}

// Close stops the collector, after committing the events it has been
// given, stops the background sweep and closes the database. Later calls
// return the first call's result.
func (s *BoltStore) Close() error {
	s.once.Do(func() {
		close(s.closing)
		<-s.stopped
		<-s.applierDone
		s.bg.Wait()
		s.closeErr = errors.Join(s.db.Close(), s.log.close())
	})
	return s.closeErr
}

// Stored record types: the on-disk schema, kept apart from the API types.
type storedMessage struct {
	ID         string            `json:"id"`
	MessageID  string            `json:"mid,omitempty"`
	Account    string            `json:"acct"`
	From       string            `json:"from"`
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
	Status       string    `json:"st"`
	Attempts     int       `json:"n,omitempty"`
	LastResponse string    `json:"resp,omitempty"`
	UpdatedAt    time.Time `json:"at"`
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
}

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
	case EventOpen:
		t.Opens++
	case EventClick:
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
func (s *BoltStore) eventID(seq uint64) string {
	return "ev_" + s.storeID + fmt.Sprintf("%016x", seq)
}

func (s *BoltStore) entryID(prefix string, seq uint64) string {
	return prefix + s.storeID + fmt.Sprintf("%016x", seq)
}

func isErased(tx *bolt.Tx, id string) bool {
	return tx.Bucket(bucketErased).Get([]byte(id)) != nil
}

// PutMessage implements Store. Putting the same message again replaces it;
// a message whose data was erased stays erased.
func (s *BoltStore) PutMessage(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validID(m.ID); err != nil {
		return err
	}
	m.MessageID = trimAngles(m.MessageID)
	if len(m.MessageID) > maxIDLen {
		return fmt.Errorf("tracker: message %s: Message-ID too long", m.ID)
	}
	rec := storedMessage{
		ID: m.ID, MessageID: m.MessageID, Account: m.Account, From: m.From,
		SubmitIP: m.SubmitIP, AcceptedAt: m.AcceptedAt.UTC(), Mode: m.Mode,
		Recipients: make([]storedRecipient, len(m.Recipients)),
	}
	for i, r := range m.Recipients {
		rec.Recipients[i] = storedRecipient{Address: r.Address, Tracked: r.Tracked}
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("tracker: encode message %s: %w", m.ID, err)
	}
	err = s.write(ctx, func(tx *bolt.Tx) error {
		if isErased(tx, m.ID) {
			return nil
		}
		mb := appendBucket(tx, bucketMessages)
		ib := tx.Bucket(bucketMsgIDs)
		if old := mb.Get([]byte(m.ID)); old != nil {
			var prev storedMessage
			if json.Unmarshal(old, &prev) == nil && prev.MessageID != "" &&
				(prev.MessageID != rec.MessageID || prev.Account != rec.Account) {
				k := msgIDKey(prev.Account, prev.MessageID)
				if bytes.Equal(ib.Get(k), []byte(m.ID)) {
					if err := ib.Delete(k); err != nil {
						return err
					}
				}
			}
		}
		if err := mb.Put([]byte(m.ID), val); err != nil {
			return err
		}
		if rec.MessageID != "" {
			return ib.Put(msgIDKey(rec.Account, rec.MessageID), []byte(m.ID))
		}
		return nil
	}, func(error) { s.cache.invalidate(m.ID) })
	if err != nil {
		return fmt.Errorf("tracker: put message %s: %w", m.ID, err)
	}
	return nil
}

// SetLinks implements Store.
func (s *BoltStore) SetLinks(ctx context.Context, message string, links []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validID(message); err != nil {
		return err
	}
	if links == nil {
		links = []string{}
	}
	val, err := json.Marshal(links)
	if err != nil {
		return fmt.Errorf("tracker: encode links of %s: %w", message, err)
	}
	err = s.write(ctx, func(tx *bolt.Tx) error {
		if isErased(tx, message) {
			return nil
		}
		return appendBucket(tx, bucketLinks).Put([]byte(message), val)
	}, nil)
	if err != nil {
		return fmt.Errorf("tracker: set links of %s: %w", message, err)
	}
	return nil
}

// SetDelivery implements Store. Once a copy is delivered, reporting it
// delivered again keeps the first delivery time, which is what scanner
// detection measures clicks against. A change of status or of the number
// of attempts is also an entry of the account's feed.
func (s *BoltStore) SetDelivery(ctx context.Context, message string, recipient int, d Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validID(message); err != nil {
		return err
	}
	if recipient < 0 || int64(recipient) > int64(^uint32(0)) {
		return fmt.Errorf("tracker: message %s: invalid recipient %d", message, recipient)
	}
	in := storedDelivery{Status: d.Status, Attempts: d.Attempts, LastResponse: d.LastResponse, UpdatedAt: d.UpdatedAt.UTC()}
	key := deliveryKey(message, recipient)
	outboxed := false // set and read by the collector only
	err := s.write(ctx, func(tx *bolt.Tx) error {
		rec := in
		outboxed = false
		if isErased(tx, message) {
			return nil
		}
		b := appendBucket(tx, bucketDeliveries)
		var prev storedDelivery
		old := b.Get(key)
		if old != nil {
			if err := json.Unmarshal(old, &prev); err != nil {
				old = nil
			}
		}
		if old != nil && rec.Status == StatusDelivered && prev.Status == StatusDelivered && prev.UpdatedAt.Before(rec.UpdatedAt) {
			rec.UpdatedAt = prev.UpdatedAt
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := b.Put(key, val); err != nil {
			return err
		}
		if old != nil && prev.Status == rec.Status && prev.Attempts == rec.Attempts {
			return nil
		}
		acct, ok, err := accountOf(tx, message)
		if err != nil || !ok {
			return err
		}
		seq, err := s.putFeed(tx, acct, storedFeedEntry{
			Kind: feedKindDelivery, Message: message, Recipient: recipient, At: rec.UpdatedAt, Delivery: &rec,
		})
		if err != nil {
			return err
		}
		outboxed = s.webhooks[acct]
		return tx.Bucket(bucketMsgFeed).Put(binary.BigEndian.AppendUint64(prefixKey(message), seq), []byte(acct))
	}, func(err error) {
		s.cache.invalidate(message)
		if err == nil && outboxed {
			s.outboxN.Add(1)
			s.wakeOutbox()
		}
	})
	if err != nil {
		return fmt.Errorf("tracker: set delivery of %s/%d: %w", message, recipient, err)
	}
	return nil
}

// accountOf returns the account of a stored message.
func accountOf(tx *bolt.Tx, id string) (string, bool, error) {
	v := tx.Bucket(bucketMessages).Get([]byte(id))
	if v == nil {
		return "", false, nil
	}
	var rec struct {
		Account string `json:"acct"`
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return "", false, err
	}
	return rec.Account, true, nil
}

// meta returns what classification needs about a message, from the cache
// or, on a miss, from one read transaction.
func (s *BoltStore) meta(id string) (*metaEntry, error) {
	if e, ok := s.cache.get(id); ok {
		return e, nil
	}
	gen := s.cache.begin()
	e := &metaEntry{id: id}
	err := s.db.View(func(tx *bolt.Tx) error {
		if isErased(tx, id) {
			e.erased = true
			return nil
		}
		v := tx.Bucket(bucketMessages).Get([]byte(id))
		if v == nil {
			return nil
		}
		var rec storedMessage
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		e.msg = rec.message()
		e.delivered = make([]time.Time, len(rec.Recipients))
		prefix := prefixKey(id)
		c := tx.Bucket(bucketDeliveries).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+4 {
				continue
			}
			i := int(binary.BigEndian.Uint32(k[len(prefix):]))
			var d storedDelivery
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			if i < len(e.delivered) && d.Status == StatusDelivered {
				e.delivered[i] = d.UpdatedAt
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.cache.add(gen, e)
	return e, nil
}

// Message implements Store. It is served from memory for recently seen
// messages.
func (s *BoltStore) Message(ctx context.Context, id string) (*Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if validID(id) != nil {
		return nil, ErrNotFound
	}
	e, err := s.meta(id)
	switch {
	case err != nil:
		return nil, err
	case e.erased:
		return nil, ErrErased
	case e.msg == nil:
		return nil, ErrNotFound
	}
	return e.msg, nil
}

// Delivery implements DeliveryReader. It only knows delivered copies (the
// time of delivery); other states are ErrNotFound.
func (s *BoltStore) Delivery(ctx context.Context, message string, recipient int) (Delivery, error) {
	if err := ctx.Err(); err != nil {
		return Delivery{}, err
	}
	if validID(message) != nil || recipient < 0 {
		return Delivery{}, ErrNotFound
	}
	e, err := s.meta(message)
	if err != nil {
		return Delivery{}, err
	}
	if recipient >= len(e.delivered) || e.delivered[recipient].IsZero() {
		return Delivery{}, ErrNotFound
	}
	return Delivery{Status: StatusDelivered, UpdatedAt: e.delivered[recipient]}, nil
}

func (rec *storedMessage) message() *Message {
	m := &Message{
		ID: rec.ID, MessageID: rec.MessageID, Account: rec.Account, From: rec.From,
		SubmitIP: rec.SubmitIP, AcceptedAt: rec.AcceptedAt, Mode: rec.Mode,
		Recipients: make([]Recipient, len(rec.Recipients)),
	}
	for i, r := range rec.Recipients {
		m.Recipients[i] = Recipient{Address: r.Address, Tracked: r.Tracked}
	}
	return m
}

// resolve finds the message of account named by ref (queue id or
// Message-ID, with or without <>).
func resolve(tx *bolt.Tx, account, ref string) (storedMessage, error) {
	var rec storedMessage
	mb := tx.Bucket(bucketMessages)
	if v := mb.Get([]byte(ref)); v != nil {
		if err := json.Unmarshal(v, &rec); err != nil {
			return rec, err
		}
		if rec.Account == account {
			return rec, nil
		}
	}
	id := tx.Bucket(bucketMsgIDs).Get(msgIDKey(account, trimAngles(ref)))
	if id == nil {
		return rec, ErrNotFound
	}
	v := mb.Get(id)
	if v == nil {
		return rec, ErrNotFound
	}
	rec = storedMessage{}
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, err
	}
	if rec.Account != account {
		return rec, ErrNotFound
	}
	return rec, nil
}

// Lookup implements Store.
func (s *BoltStore) Lookup(ctx context.Context, account, ref string) (*MessageView, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ref == "" || len(ref) > maxIDLen+2 {
		return nil, ErrNotFound
	}
	var (
		rec        storedMessage
		links      []string
		deliveries = map[int]Delivery{}
		tallies    = map[int]*tally{}
		events     []Event
	)
	s.caughtUp(ctx)
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if rec, err = resolve(tx, account, ref); err != nil {
			return err
		}
		if v := tx.Bucket(bucketLinks).Get([]byte(rec.ID)); v != nil {
			if err := json.Unmarshal(v, &links); err != nil {
				return err
			}
		}
		prefix := prefixKey(rec.ID)
		c := tx.Bucket(bucketDeliveries).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+4 {
				continue
			}
			var d storedDelivery
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			deliveries[int(binary.BigEndian.Uint32(k[len(prefix):]))] = Delivery(d)
		}
		c = tx.Bucket(bucketRecipients).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+4 {
				continue
			}
			var r storedRcpt
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if r.Tally != nil {
				tallies[int(binary.BigEndian.Uint32(k[len(prefix):]))] = r.Tally
			}
		}
		c = tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+8 {
				continue
			}
			var e storedEvent
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			events = append(events, Event{
				ID:   s.eventID(keySeq(k)),
				Type: e.Type, At: e.At, Message: rec.ID, Recipient: e.Recipient, Link: e.Link,
				IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Country: e.Country, City: e.City,
				Class: e.Class, Reasons: e.Reasons, URL: e.URL,
			})
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("tracker: lookup %q: %w", ref, err)
	}
	return buildView(rec.message(), links, deliveries, events, tallies), nil
}

// Erase implements Store.
func (s *BoltStore) Erase(ctx context.Context, account, ref string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ref == "" || len(ref) > maxIDLen+2 {
		return ErrNotFound
	}
	var id string
	err := s.db.Update(func(tx *bolt.Tx) error {
		rec, err := resolve(tx, account, ref)
		if err != nil {
			return err
		}
		id = rec.ID
		prefix := prefixKey(id)
		for _, name := range [][]byte{bucketEvents, bucketDeliveries, bucketRecipients, bucketClicks} {
			if err := deletePrefix(tx.Bucket(name), prefix); err != nil {
				return err
			}
		}
		// Delivery entries of the feed hold upstream responses: remove
		// them. Event entries only point at events, which are gone.
		mf := tx.Bucket(bucketMsgFeed)
		feed := tx.Bucket(bucketFeed)
		c := mf.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if err := feed.Delete(feedKey(string(v), keySeq(k))); err != nil {
				return err
			}
		}
		if err := deletePrefix(mf, prefix); err != nil {
			return err
		}
		if err := tx.Bucket(bucketLinks).Delete([]byte(id)); err != nil {
			return err
		}
		if rec.MessageID != "" {
			if err := tx.Bucket(bucketMsgIDs).Delete(msgIDKey(rec.Account, rec.MessageID)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMessages).Delete([]byte(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketErased).Put([]byte(id), []byte(time.Now().UTC().Format(time.RFC3339)))
	})
	if id != "" {
		s.cache.invalidate(id)
	}
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("tracker: erase %q: %w", ref, err)
	}
	return nil
}

// deletePrefix deletes every key of b that starts with prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// trimAngles removes one pair of surrounding angle brackets and spaces.
func trimAngles(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = s[1 : len(s)-1]
	}
	return s
}
