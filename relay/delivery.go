package relay

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/internal/durable"
)

// DeliveryConfig says where and how copies are delivered.
type DeliveryConfig struct {
	Hostname string
	// Upstream is the smarthost; nil means capture mode: each delivered
	// copy is written as a .eml file under CaptureDir.
	Upstream   *UpstreamConfig
	CaptureDir string
	// Workers is the number of copies being sent at once (default 16, and
	// at least four per upstream connection): a worker waits for the
	// ledger's commit before each send, and only the send holds a
	// connection. Recording an attempt's outcome does not hold a worker.
	Workers int
	// RetryInitial is the wait after the first failed attempt; it doubles
	// after each failure up to RetryMax, with jitter.
	RetryInitial time.Duration
	RetryMax     time.Duration
	// Lifetime is how long a copy is retried before it bounces.
	Lifetime time.Duration
	// DelayWarning: a copy still not delivered this long after acceptance
	// makes the sender a "delayed" notice, once. Zero: never.
	DelayWarning time.Duration
	// MemoryCopyLimit: copies up to this size are instrumented in memory,
	// larger ones through a temporary file in the spool.
	MemoryCopyLimit int64
	// DKIM, when set, signs each copy for the domain of its From after
	// instrumenting it (see DKIMSigner); nil: copies go unsigned.
	DKIM *DKIMSigner
	// Honeypot: each instrumented copy whose clicks are tracked gets one
	// honeypot link (rewrite.Options.Honeypot), when its Minter mints one
	// (HoneypotMinter; tracker/token's does).
	Honeypot bool
	// ReportWait, when positive, makes the SMTP server give the ledger a
	// new message's record before the 250 and wait up to this long for its
	// commit (a ledger shared by a fleet: any node then finds the message
	// as soon as the client has its queue id). A record not committed by
	// then follows after the 250: the spool is durable, and a report the
	// ledger fails is owed and retried (owed.go). Zero: the ledger hears of
	// the message after the 250, from the first worker or an announcer.
	ReportWait time.Duration
}

// Deliverer runs the delivery jobs: one per recipient copy, retried on a
// schedule, bounced on a permanent failure or expiry.
type Deliverer struct {
	cfg     DeliveryConfig
	spool   *Spool
	ledger  Ledger
	minters Minters
	log     *slog.Logger
	metrics *Metrics
	up      *upstreamPool

	// holdMu orders holding copies against releasing or deleting them: a
	// hold's spool record and its in-memory mark change together, so a
	// Retry never misses a copy the spool already shows held, nor leaves
	// one marked held that it released. Taken before mu.
	holdMu sync.Mutex

	mu   sync.Mutex
	jobs jobHeap
	// pending holds the messages whose ledger record is still to be
	// written, by queue id and by account and Message-ID (see Pending).
	pending      map[string]*Envelope
	pendingByMID map[string]string
	// announcing holds the messages whose ledger record is being written,
	// so that an announcer and a worker never write one twice.
	announcing map[string]chan struct{}
	linked     map[string]bool // messages whose links the ledger has
	// held holds the copies that wait for the operator (StatusHeld): in
	// no schedule, counted by the queue gauge, released by Retry.
	held      map[copyRef]bool
	announceQ chan announcement
	outbox    *dirSyncer
	sending   int
	wake      chan struct{}
	stopping  bool
	wg        sync.WaitGroup
	stopWork  chan struct{}
	// finishing bounds the outcomes being recorded at once, so that
	// attempts failing fast cannot pile up goroutines.
	finishing chan struct{}
	// announceDelay is announceDelayDefault; tests change it.
	announceDelay time.Duration
	// recordRetry is how long a copy waits when its record could not be
	// read or its outcome written (a minute; tests change it).
	recordRetry time.Duration
	bufs        sync.Pool
	startOnce   sync.Once
	// owed holds the reports the ledger has not acknowledged (owed.go).
	owed owedState
}

// NewDeliverer returns a deliverer; Start sets it running.
func NewDeliverer(cfg DeliveryConfig, spool *Spool, ledger Ledger, minters Minters, log *slog.Logger, m *Metrics) *Deliverer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if ledger == nil {
		ledger = NopLedger{}
	}
	if cfg.RetryInitial == 0 {
		cfg.RetryInitial = time.Minute
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = time.Hour
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = 5 * 24 * time.Hour
	}
	if cfg.MemoryCopyLimit == 0 {
		cfg.MemoryCopyLimit = 4 << 20
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	d := &Deliverer{
		cfg: cfg, spool: spool, ledger: ledger, minters: minters, log: log, metrics: m,
		pending:       map[string]*Envelope{},
		pendingByMID:  map[string]string{},
		announcing:    map[string]chan struct{}{},
		linked:        map[string]bool{},
		held:          map[copyRef]bool{},
		announceQ:     make(chan announcement, 4096),
		outbox:        newDirSyncer(cfg.CaptureDir),
		wake:          make(chan struct{}, 1),
		stopWork:      make(chan struct{}),
		announceDelay: announceDelayDefault,
		recordRetry:   time.Minute,
		owed:          owedState{msgs: map[string]*owedMessage{}, wake: make(chan struct{}, 1)},
	}
	m.queue.source(d.countQueue)
	m.owed.source(d.OwedReports)
	if cfg.Upstream != nil {
		up := *cfg.Upstream
		if up.Hostname == "" {
			up.Hostname = cfg.Hostname
		}
		d.up = newUpstreamPool(up, m)
		if d.cfg.Workers == 0 {
			d.cfg.Workers = max(16, 4*d.up.cfg.MaxConnections)
		}
	}
	if d.cfg.Workers <= 0 {
		d.cfg.Workers = 16
	}
	d.finishing = make(chan struct{}, 4*d.cfg.Workers)
	return d
}

// Start loads what the spool holds (after a restart: every copy not yet
// final) and starts the workers.
func (d *Deliverer) Start() error {
	envs, err := d.spool.Load()
	if err != nil {
		return fmt.Errorf("delivery: load spool: %w", err)
	}
	for _, env := range envs {
		if len(env.Owed) > 0 && !env.Bounce {
			d.owe(env, env.Owed, env.Done())
		}
		if env.Done() {
			// Kept in the ledger bucket while reports are owed (owe has
			// marked it retired).
			if _, err := d.spool.RemoveOwing(env.ID, env.Owed); err != nil {
				return err
			}
			continue
		}
		// The relay's own notices are not the app's messages: never
		// reported.
		d.Submit(env, env.Bounce)
	}
	// Messages that left the queue with reports still owed to the ledger.
	owed, err := d.spool.LoadOwed()
	if err != nil {
		return fmt.Errorf("delivery: load the ledger's owed reports: %w", err)
	}
	for _, env := range owed {
		d.owe(env, env.Owed, true)
	}
	if n, _ := d.OwedReports(); n > 0 {
		d.log.Warn("reports owed to the ledger loaded; given as soon as it takes them", "reports", n)
	}
	if len(envs) > 0 {
		d.mu.Lock()
		held := len(d.held)
		d.mu.Unlock()
		d.log.Info("spool loaded", "messages", len(envs), "held_copies", held)
		if held > 0 {
			d.log.Warn("copies held after an internal error stay held until the operator retries them (trackrelay queue list, trackrelay queue retry)", "held_copies", held)
		}
	}
	if d.cfg.CaptureDir != "" && d.up == nil {
		if err := durable.MkdirAll(d.cfg.CaptureDir, 0o700); err != nil {
			return err
		}
	}
	d.startOnce.Do(func() {
		for range d.cfg.Workers {
			d.wg.Add(1)
			go d.worker()
		}
		d.wg.Add(2)
		go d.announcer()
		go d.retrier()
	})
	return nil
}

// Submit schedules every copy of env that is neither final nor held (a
// held copy is only noted: see StatusHeld). announced says whether the
// ledger already knows the message.
func (d *Deliverer) Submit(env *Envelope, announced bool) {
	d.mu.Lock()
	if !announced {
		d.addPending(env)
		select {
		case d.announceQ <- announcement{env: env, due: time.Now().Add(d.announceDelay)}:
		default: // the worker announces it before its first attempt
		}
	}
	for i := range env.Recipients {
		r := &env.Recipients[i]
		if r.Final() {
			continue
		}
		if r.Held() {
			d.held[copyRef{env.ID, i}] = true
			continue
		}
		heap.Push(&d.jobs, job{id: env.ID, rcpt: i, due: r.NextAttempt})
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// countQueue counts the copies by state, for the queue gauge.
func (d *Deliverer) countQueue() queueCounts {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	c := queueCounts{sending: d.sending, held: len(d.held)}
	for _, j := range d.jobs {
		if j.due.After(now) {
			c.deferred++
		} else {
			c.queued++
		}
	}
	return c
}

// Shutdown stops starting new attempts and waits, until ctx ends, for the
// attempts under way. Copies not delivered stay in the spool for the next
// start.
func (d *Deliverer) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	close(d.stopWork)
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("delivery: attempts still under way at shutdown (they are retried after restart): %w", ctx.Err())
	}
	if d.up != nil {
		d.up.Close()
	}
	d.keepOwed()
	return err
}

// keepOwed writes the reports still owed of the queued messages into
// their spool records, for the next start: those made since a record was
// last written (a held copy's state, say) would be lost otherwise.
func (d *Deliverer) keepOwed() {
	d.owed.mu.Lock()
	owed := map[string][]LedgerReport{}
	for id, m := range d.owed.msgs {
		if !m.retired && len(m.reports) > 0 {
			owed[id] = slices.Clone(m.reports)
		}
	}
	d.owed.mu.Unlock()
	for id, reports := range owed {
		_, err := d.spool.Update(id, func(e *Envelope) error { e.Owed = reports; return nil })
		if err != nil && !errors.Is(err, ErrNoSuchMessage) {
			d.log.Error("spool: could not keep the reports owed to the ledger", "queue_id", id, "err", err)
		}
	}
}
