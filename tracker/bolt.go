package tracker

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names of the bbolt layout.
//
//	messages    queue id                      -> JSON storedMessage
//	msgids      account NUL Message-ID        -> queue id
//	links       queue id                      -> JSON []string
//	deliveries  queue id NUL uint32 recipient -> JSON storedDelivery
//	events      queue id NUL uint64 sequence  -> JSON storedEvent
//
// Integers in keys are big-endian, so a message's deliveries and events are
// one ordered prefix scan.
var (
	bucketMessages   = []byte("messages")
	bucketMsgIDs     = []byte("msgids")
	bucketLinks      = []byte("links")
	bucketDeliveries = []byte("deliveries")
	bucketEvents     = []byte("events")
)

// maxIDLen bounds queue ids and Message-IDs used as keys.
const maxIDLen = 998

// Defaults of BoltOptions.
const (
	DefaultCommitInterval = time.Millisecond
	DefaultMaxBatch       = 256
	DefaultLockTimeout    = 5 * time.Second
)

// BoltOptions tunes a BoltStore. Zero fields take the defaults.
type BoltOptions struct {
	// CommitInterval is how long the event collector waits, after the first
	// event of a batch, for more events to commit with it.
	CommitInterval time.Duration
	// MaxBatch is the most events committed in one transaction.
	MaxBatch int
	// Metrics receives commit latency and batch size; nil records nothing.
	Metrics *Metrics
	// LockTimeout bounds the wait for the database file lock, held by any
	// other process that has the file open.
	LockTimeout time.Duration
}

// BoltStore is the embedded Store, in one bbolt file. Events are written by
// one collector goroutine that commits them in batches (group commit): one
// transaction and one fsync for many concurrent AddEvent calls.
type BoltStore struct {
	db       *bolt.DB
	opts     BoltOptions
	reqs     chan *eventReq
	closing  chan struct{}
	stopped  chan struct{}
	closeErr error
	once     sync.Once
	commits  atomic.Int64
}

var _ Store = (*BoltStore)(nil)
var _ DeliveryReader = (*BoltStore)(nil)

type eventReq struct {
	prefix []byte // queue id NUL
	value  []byte // JSON storedEvent
	done   chan error
}

// OpenBolt opens (creating if needed) the bbolt store at path and starts its
// event collector. It fails if another process holds the file for longer
// than opts.LockTimeout.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if opts.CommitInterval <= 0 {
		opts.CommitInterval = DefaultCommitInterval
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("tracker: open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMessages, bucketMsgIDs, bucketLinks, bucketDeliveries, bucketEvents} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("tracker: init store %s: %w", path, err)
	}
	s := &BoltStore{
		db:      db,
		opts:    opts,
		reqs:    make(chan *eventReq),
		closing: make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go s.collect()
	return s, nil
}

// Close stops the collector, after committing the batch it holds, and closes
// the database. Later calls return the first call's result.
func (s *BoltStore) Close() error {
	s.once.Do(func() {
		close(s.closing)
		<-s.stopped
		s.closeErr = s.db.Close()
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
	Class     string    `json:"c"`
	Reasons   []string  `json:"why,omitempty"`
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

// PutMessage implements Store. Putting the same message again replaces it.
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
	err = s.db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMessages)
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
	})
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
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLinks).Put([]byte(message), val)
	})
	if err != nil {
		return fmt.Errorf("tracker: set links of %s: %w", message, err)
	}
	return nil
}

// SetDelivery implements Store. Once a copy is delivered, reporting it
// delivered again keeps the first delivery time, which is what scanner
// detection measures clicks against.
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
	rec := storedDelivery{Status: d.Status, Attempts: d.Attempts, LastResponse: d.LastResponse, UpdatedAt: d.UpdatedAt.UTC()}
	key := deliveryKey(message, recipient)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDeliveries)
		if old := b.Get(key); old != nil && rec.Status == StatusDelivered {
			var prev storedDelivery
			if json.Unmarshal(old, &prev) == nil && prev.Status == StatusDelivered && prev.UpdatedAt.Before(rec.UpdatedAt) {
				rec.UpdatedAt = prev.UpdatedAt
			}
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put(key, val)
	})
	if err != nil {
		return fmt.Errorf("tracker: set delivery of %s/%d: %w", message, recipient, err)
	}
	return nil
}

// Delivery implements DeliveryReader.
func (s *BoltStore) Delivery(ctx context.Context, message string, recipient int) (Delivery, error) {
	if err := ctx.Err(); err != nil {
		return Delivery{}, err
	}
	if validID(message) != nil || recipient < 0 || int64(recipient) > int64(^uint32(0)) {
		return Delivery{}, ErrNotFound
	}
	var rec storedDelivery
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDeliveries).Get(deliveryKey(message, recipient))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return Delivery{}, err
	}
	return Delivery(rec), nil
}

// AddEvent implements Store: it hands e to the collector and waits until the
// batch holding it is committed and synced. If ctx ends first, AddEvent
// returns ctx's error, though the event may still be committed later.
func (s *BoltStore) AddEvent(ctx context.Context, e Event) error {
	if err := validID(e.Message); err != nil {
		return err
	}
	val, err := json.Marshal(storedEvent{
		Type: e.Type, At: e.At.UTC(), Recipient: e.Recipient, Link: e.Link, URL: e.URL,
		IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Class: e.Class, Reasons: e.Reasons,
	})
	if err != nil {
		return fmt.Errorf("tracker: encode event: %w", err)
	}
	r := &eventReq{prefix: prefixKey(e.Message), value: val, done: make(chan error, 1)}
	select {
	case s.reqs <- r:
	case <-s.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// collect is the single writer of events. It takes a first request, gathers
// more for up to CommitInterval or MaxBatch, commits them in one transaction
// and answers every waiter with the result.
func (s *BoltStore) collect() {
	defer close(s.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]*eventReq, 0, s.opts.MaxBatch)
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		case <-s.closing:
			return
		}
		timer.Reset(s.opts.CommitInterval)
	gather:
		for len(batch) < s.opts.MaxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			case <-timer.C:
				break gather
			case <-s.closing:
				break gather
			}
		}
		timer.Stop()
		err := s.commit(batch)
		for i, r := range batch {
			r.done <- err
			batch[i] = nil
		}
	}
}

func (s *BoltStore) commit(batch []*eventReq) error {
	start := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for _, r := range batch {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(binary.BigEndian.AppendUint64(r.prefix, seq), r.value); err != nil {
				return err
			}
		}
		return nil
	})
	s.commits.Add(1)
	if m := s.opts.Metrics; m != nil {
		m.commitDuration.Observe(time.Since(start).Seconds())
		m.commitBatch.Observe(float64(len(batch)))
	}
	if err != nil {
		return fmt.Errorf("tracker: commit %d events: %w", len(batch), err)
	}
	return nil
}

// Message implements Store.
func (s *BoltStore) Message(ctx context.Context, id string) (*Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if validID(id) != nil {
		return nil, ErrNotFound
	}
	var rec storedMessage
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMessages).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return nil, err
	}
	return rec.message(), nil
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
		events     []Event
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMessages)
		v := mb.Get([]byte(ref))
		if v != nil {
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			if rec.Account != account {
				v = nil
			}
		}
		if v == nil {
			id := tx.Bucket(bucketMsgIDs).Get(msgIDKey(account, trimAngles(ref)))
			if id == nil {
				return ErrNotFound
			}
			if v = mb.Get(id); v == nil {
				return ErrNotFound
			}
			rec = storedMessage{}
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			if rec.Account != account {
				return ErrNotFound
			}
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
				Type: e.Type, At: e.At, Message: rec.ID, Recipient: e.Recipient, Link: e.Link,
				IP: e.IP, UserAgent: e.UserAgent, Client: e.Client, Class: e.Class,
				Reasons: e.Reasons, URL: e.URL,
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
	return buildView(rec.message(), links, deliveries, events), nil
}

// trimAngles removes one pair of surrounding angle brackets and spaces.
func trimAngles(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = s[1 : len(s)-1]
	}
	return s
}
