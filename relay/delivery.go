package relay

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/internal/backoff"
	"github.com/trackrelay/trackrelay/internal/delivery"
	"github.com/trackrelay/trackrelay/internal/durable"
	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/internal/msgid"
	"github.com/trackrelay/trackrelay/rewrite"
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
	// BaseURL is the tracking base URL (links on it are not re-tracked).
	BaseURL string
	// MemoryCopyLimit: copies up to this size are instrumented in memory,
	// larger ones through a temporary file in the spool.
	MemoryCopyLimit int64
	// DKIM, when set, signs each copy for the domain of its From after
	// instrumenting it (see DKIMSigner); nil: copies go unsigned.
	DKIM *DKIMSigner
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
}

type job struct {
	id   string
	rcpt int
	due  time.Time
}

// copyRef names one recipient copy.
type copyRef struct {
	id   string
	rcpt int
}

type jobHeap []job

func (h jobHeap) Len() int           { return len(h) }
func (h jobHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h jobHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *jobHeap) Push(x any)        { *h = append(*h, x.(job)) }
func (h *jobHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	*h = old[:len(old)-1]
	return j
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
	}
	m.queue.source(d.countQueue)
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
		if env.Done() {
			if err := d.spool.Remove(env.ID); err != nil {
				return err
			}
			continue
		}
		// The relay's own notices are not the app's messages: never
		// reported.
		d.Submit(env, env.Bounce)
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
		d.wg.Add(1)
		go d.announcer()
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

// next blocks until a job is due, or returns false once stopping.
func (d *Deliverer) next() (job, bool) {
	for {
		d.mu.Lock()
		if d.stopping {
			d.mu.Unlock()
			return job{}, false
		}
		var wait time.Duration = time.Hour
		if len(d.jobs) > 0 {
			wait = time.Until(d.jobs[0].due)
			if wait <= 0 {
				j := heap.Pop(&d.jobs).(job)
				d.sending++
				d.mu.Unlock()
				// Let another worker look at the next job.
				select {
				case d.wake <- struct{}{}:
				default:
				}
				return j, true
			}
		}
		d.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-d.wake:
		case <-t.C:
		case <-d.stopWork:
		}
		t.Stop()
	}
}

func (d *Deliverer) worker() {
	defer d.wg.Done()
	for {
		j, ok := d.next()
		if !ok {
			return
		}
		d.run(j)
	}
}

// endTurn ends a copy's turn in hand (counted as "sending").
func (d *Deliverer) endTurn() {
	d.mu.Lock()
	d.sending--
	d.mu.Unlock()
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
	return err
}

// run makes one delivery attempt of one copy, then hands its outcome to a
// goroutine of its own to record: the records wait for company to share
// their commits, and the worker goes on to the next copy meanwhile.
//
// The attempt (instrumenting, DKIM signing, sending) is a job boundary: a
// panic in it holds the copy and the worker goes on.
func (d *Deliverer) run(j job) {
	start := time.Now()
	env, err := d.spool.Get(j.id)
	if err != nil {
		if !errors.Is(err, ErrNoSuchMessage) {
			d.log.Error("delivery: reading spool record", "queue_id", j.id, "err", err)
			d.retryLater(j, d.recordRetry)
		}
		d.endTurn()
		return
	}
	if j.rcpt >= len(env.Recipients) || env.Recipients[j.rcpt].Final() {
		d.endTurn()
		return
	}
	if env.Recipients[j.rcpt].Held() {
		// Held while this job waited (an outcome recorded meanwhile may
		// have scheduled it): it waits for the operator.
		d.mu.Lock()
		d.held[copyRef{j.id, j.rcpt}] = true
		d.mu.Unlock()
		d.endTurn()
		return
	}
	rc := env.Recipients[j.rcpt]
	log := d.log.With("queue_id", env.ID, "rcpt", j.rcpt)

	var resp string
	var sendErr error
	p := guard.Run(guard.Delivery, log, func() {
		guard.Check(guard.Delivery, env.ID)
		resp, sendErr = d.attempt(env, j.rcpt, log)
	})
	if p == nil {
		// A panic of the DKIM key, recovered on the signing library's
		// goroutine (see recoveringSigner), comes back as the error.
		errors.As(sendErr, &p)
	}
	if p != nil {
		// The copy may even have gone out: it waits for the operator
		// rather than being retried into the same panic.
		d.hold(env.ID, []int{j.rcpt}, guard.Delivery, log)
		d.endTurn()
		return
	}
	now := time.Now().UTC()
	var result delivery.Status
	rc.Attempts++
	rc.UpdatedAt = now
	switch {
	case sendErr == nil:
		result = StatusDelivered
		rc.Status, rc.LastResponse = StatusDelivered, resp
	case permanent(sendErr):
		result = StatusBounced
		rc.Status, rc.LastResponse = StatusBounced, replyText(sendErr)
	case now.Sub(env.AcceptedAt) >= d.cfg.Lifetime:
		result = StatusBounced
		rc.Status = StatusBounced
		rc.LastResponse = "message expired after " + d.cfg.Lifetime.String() + ": " + replyText(sendErr)
	default:
		result = StatusDeferred
		rc.Status, rc.LastResponse = StatusDeferred, replyText(sendErr)
		rc.NextAttempt = now.Add(d.backoff(rc.Attempts))
	}
	d.metrics.attempts.WithLabelValues(string(result)).Inc()
	d.metrics.attemptDuration.WithLabelValues(string(result)).Observe(time.Since(start).Seconds())
	d.finishing <- struct{}{}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() { <-d.finishing }()
		defer d.endTurn()
		// Recording is a job boundary too: a panic holds the copy (still
		// counted as sending until then).
		defer guard.Recover(guard.Finish, log, func(*guard.Panic) {
			d.hold(env.ID, []int{j.rcpt}, guard.Finish, log)
		})
		d.finish(env, j, rc, string(result), log)
	}()
}

// finish records the outcome rc of an attempt on copy j of env. Notices
// first, then the ledger, then the spool record: a crash in between
// repeats a step (a second notice, a second attempt), it never loses one.
// Until the record is written the copy is in no queue, so nothing else
// attempts it. A notice that panics while it is built holds the copy.
func (d *Deliverer) finish(env *Envelope, j job, rc Recipient, result string, log *slog.Logger) {
	guard.Check(guard.Finish, env.ID)
	if !env.Bounce {
		// The attempt may have failed before its copy was reported (no
		// message file): the ledger must know the message before a status
		// of its copy, or that status reaches no feed.
		d.announce(env, nil)
	}
	now := rc.UpdatedAt
	if rc.Status == StatusDeferred && !rc.Warned && d.cfg.DelayWarning > 0 &&
		now.Sub(env.AcceptedAt) >= d.cfg.DelayWarning && !env.Bounce && env.From != "" {
		if err := d.notify(env, rc, actionDelayed); err != nil {
			log.Error("could not queue the delayed notice", "err", err)
			if errors.Is(err, errNoticePanic) {
				d.hold(env.ID, []int{j.rcpt}, guard.Bounce, log)
				return
			}
		} else {
			rc.Warned = true
		}
	}
	if rc.Status == StatusBounced {
		if err := d.bounce(env, rc); err != nil {
			log.Error("bounce: could not queue the delivery status notification", "err", err)
			if errors.Is(err, errNoticePanic) {
				d.hold(env.ID, []int{j.rcpt}, guard.Bounce, log)
				return
			}
		}
	}
	log.Info("delivery "+result, "to", rc.Address, "attempt", rc.Attempts, "response", rc.LastResponse)
	if !env.Bounce { // the relay's own notifications are not the app's messages
		if err := d.ledger.Delivery(context.Background(), env.ID, j.rcpt, rc); err != nil {
			d.metrics.ledgerErrors.Inc()
			log.Error("ledger: recording delivery status failed", "err", err)
		}
	}
	done, err := d.spool.Record(env.ID, j.rcpt, rc)
	if err != nil {
		if errors.Is(err, ErrNoSuchMessage) {
			return // deleted by the operator meanwhile
		}
		// Not recorded: the copy is tried again; at least once is kept.
		log.Error("delivery: recording outcome failed; will retry", "err", err)
		d.retryLater(j, d.recordRetry)
		return
	}
	d.mu.Lock()
	// Held by an announcer's panic during this attempt: the outcome
	// recorded replaces the hold.
	delete(d.held, copyRef{env.ID, j.rcpt})
	if rc.Status == StatusDeferred {
		heap.Push(&d.jobs, job{id: env.ID, rcpt: j.rcpt, due: rc.NextAttempt})
	}
	if done {
		d.dropPending(env.ID)
		delete(d.linked, env.ID)
	}
	d.mu.Unlock()
	if rc.Status == StatusDeferred {
		d.wakeWorker()
	}
}

// retryLater schedules copy j again after a failure of the relay's own
// (reading its record, writing its outcome).
func (d *Deliverer) retryLater(j job, after time.Duration) {
	d.mu.Lock()
	j.due = time.Now().Add(after)
	heap.Push(&d.jobs, j)
	d.mu.Unlock()
	// A sleeping worker waits for the earliest job it saw, or an hour:
	// this one may be due before.
	d.wakeWorker()
}

// wakeWorker makes a waiting worker look at the schedule again.
func (d *Deliverer) wakeWorker() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// hold quarantines copies idxs of message id (nil: each one not final)
// after a panic in their job (component's): they are marked held in the
// spool, taken out of the schedule and reported to the ledger, and wait
// there, across restarts, for the operator's retry (Retry). Never
// re-queued by itself, a bad message cannot become a crash loop.
func (d *Deliverer) hold(id string, idxs []int, component string, log *slog.Logger) {
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	env, held, err := d.spool.Hold(id, idxs, time.Now().UTC())
	switch {
	case errors.Is(err, ErrNoSuchMessage):
		return // final and removed meanwhile, or deleted by the operator
	case err != nil:
		// Held in this process only: after a restart the copy is tried
		// again, and held again if it panics again.
		log.Error("delivery: could not record the held copy in the spool; it is held until a restart", "err", err)
		env, held = nil, idxs
	}
	d.mu.Lock()
	if env == nil && held == nil {
		// Every copy, and the record could not be read: every copy this
		// process schedules.
		for _, j := range d.jobs {
			if j.id == id {
				held = append(held, j.rcpt)
			}
		}
	}
	for _, i := range held {
		d.held[copyRef{id, i}] = true
	}
	d.dropJobs(func(j job) bool { return j.id == id && slices.Contains(held, j.rcpt) })
	d.mu.Unlock()
	if len(held) == 0 {
		return // final, or held already
	}
	log.Warn("delivery: copy held after a panic; trackrelay queue retry releases it", "component", component, "copies", held)
	if env == nil || env.Bounce {
		return
	}
	for _, i := range held {
		guard.Run(component, log, func() {
			if err := d.ledger.Delivery(context.Background(), id, i, env.Recipients[i]); err != nil {
				d.metrics.ledgerErrors.Inc()
				log.Error("ledger: recording the held copy failed", "rcpt", i, "err", err)
			}
		})
	}
}

// dropJobs takes the jobs that drop reports out of the schedule; d.mu must
// be held.
func (d *Deliverer) dropJobs(drop func(job) bool) {
	kept := d.jobs[:0]
	for _, j := range d.jobs {
		if !drop(j) {
			kept = append(kept, j)
		}
	}
	clear(d.jobs[len(kept):])
	d.jobs = kept
	heap.Init(&d.jobs)
}

func pendingKey(account, messageID string) string {
	// Normalised as the tracking store does, so that both find a message
	// by the same references.
	return account + "\x00" + msgid.Normalize(messageID)
}

// addPending and dropPending must be called with d.mu held.
func (d *Deliverer) addPending(env *Envelope) {
	d.pending[env.ID] = env
	if env.MessageID != "" {
		d.pendingByMID[pendingKey(env.Account, env.MessageID)] = env.ID
	}
}

func (d *Deliverer) dropPending(id string) {
	env := d.pending[id]
	if env == nil {
		return
	}
	delete(d.pending, id)
	if k := pendingKey(env.Account, env.MessageID); d.pendingByMID[k] == id {
		delete(d.pendingByMID, k)
	}
}

// Pending returns a message of account accepted but not yet in the ledger
// (the ledger hears of it moments after the 250), by queue id or by
// Message-ID with or without <>. The API answers for such a message from
// it, so that the app finds a message as soon as it has the queue id and
// the SMTP path never waits for the ledger. The envelope is shared: the
// caller must not change it.
func (d *Deliverer) Pending(account, ref string) (*Envelope, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	env := d.pending[ref]
	if env == nil {
		env = d.pending[d.pendingByMID[pendingKey(account, ref)]]
	}
	if env == nil || env.Account != account {
		return nil, false
	}
	return env, true
}

// announceDelayDefault is how long a new message waits for a worker to
// announce it (with its links, in the same commit) before an announcer
// does.
const announceDelayDefault = 100 * time.Millisecond

// announcement is a new message for the announcer, due at due.
type announcement struct {
	env *Envelope
	due time.Time
}

// announcers is how many announcements may wait for their commit at
// once: they share it, so a backlog is announced at thousands a second.
const announcers = 64

// announcer reports the messages whose first attempt has not started
// announceDelay after they were queued (a backlog, a copy deferred at
// load), so that the app sees every accepted message soon.
func (d *Deliverer) announcer() {
	defer d.wg.Done()
	busy := make(chan struct{}, announcers)
	for {
		select {
		case a := <-d.announceQ:
			if wait := time.Until(a.due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-d.stopWork:
					t.Stop()
					return
				}
			}
			select {
			case busy <- struct{}{}:
			case <-d.stopWork:
				return
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				defer func() { <-busy }()
				// A message whose report panics is held, all of it: its
				// copies wait for the operator.
				defer guard.Recover(guard.Announce, d.log, func(*guard.Panic) {
					d.hold(a.env.ID, nil, guard.Announce, d.log.With("queue_id", a.env.ID))
				})
				d.announce(a.env, nil)
			}()
		case <-d.stopWork:
			return
		}
	}
}

// announce writes the ledger record of a newly accepted message (or of one
// loaded after a restart), once, with links when they are known: the
// worker that first delivers the message does it, or the announcer if no
// worker has after announceDelay. If one is writing it already, announce
// waits for that write and tries itself only if it failed. It reports
// whether it wrote links too.
func (d *Deliverer) announce(env *Envelope, links []string) bool {
	for {
		d.mu.Lock()
		if d.pending[env.ID] == nil {
			d.mu.Unlock()
			return false
		}
		if busy, ok := d.announcing[env.ID]; ok {
			d.mu.Unlock()
			<-busy
			continue
		}
		busy := make(chan struct{})
		d.announcing[env.ID] = busy
		d.mu.Unlock()

		err := d.writeAccepted(env, links, busy)
		if err != nil {
			d.metrics.ledgerErrors.Inc()
			d.log.Error("ledger: recording accepted message failed", "queue_id", env.ID, "err", err)
			return false
		}
		return links != nil
	}
}

// writeAccepted writes the ledger record of env and then ends the
// announcement busy, also when the write panics: a waiter on busy must
// never wait forever.
func (d *Deliverer) writeAccepted(env *Envelope, links []string, busy chan struct{}) (err error) {
	written := false
	defer func() {
		d.mu.Lock()
		delete(d.announcing, env.ID)
		if written {
			d.dropPending(env.ID)
			if links != nil {
				d.linked[env.ID] = true
			}
		}
		d.mu.Unlock()
		close(busy)
	}()
	guard.Check(guard.Announce, env.ID)
	err = d.ledger.Accepted(context.Background(), env, links)
	written = err == nil
	return err
}

// backoff is the wait after the n-th failed attempt: exponential, capped,
// with ±20% jitter so that a queue does not retry in lockstep.
func (d *Deliverer) backoff(n int) time.Duration {
	return backoff.Jitter(backoff.Exp(d.cfg.RetryInitial, d.cfg.RetryMax, n))
}

// attempt instruments the copy and delivers it. Its error is one that may
// be shown to the app and the sender (see publicError).
func (d *Deliverer) attempt(env *Envelope, idx int, log *slog.Logger) (string, error) {
	resp, err := d.deliverCopy(env, idx, log)
	return resp, publicError(err, log)
}

// deliverCopy is attempt with the errors as they came, those of this host
// marked local.
func (d *Deliverer) deliverCopy(env *Envelope, idx int, log *slog.Logger) (string, error) {
	f, err := d.spool.Open(env.ID)
	if err != nil {
		return "", local(fmt.Errorf("open spool file: %w", err))
	}
	defer f.Close()

	body, size, release, links, err := d.instrument(env, idx, f, log)
	if err != nil {
		return "", local(err)
	}
	defer release()
	d.report(env, links, log)
	if body, size, err = d.signCopy(body, size, log); err != nil {
		return "", local(err)
	}

	rc := env.Recipients[idx]
	if d.up == nil {
		resp, err := d.capture(env, idx, rc.Address, body)
		return resp, local(err)
	}
	from := env.From
	if env.Bounce {
		from = ""
	}
	return d.up.send(from, rc.Address, size, body, env.SMTPUTF8)
}

// report makes sure the ledger knows the message, and its links when the
// copy has tracked ones, before the copy goes out: a click must find its
// link. The first copy's worker usually reports both, in one commit.
func (d *Deliverer) report(env *Envelope, links []string, log *slog.Logger) {
	if d.announce(env, links) || links == nil {
		return
	}
	d.mu.Lock()
	linked := d.linked[env.ID]
	d.mu.Unlock()
	if linked {
		return // every copy has the same links: the ledger needs them once
	}
	if err := d.ledger.Links(context.Background(), env.ID, links); err != nil {
		d.metrics.ledgerErrors.Inc()
		log.Error("ledger: recording links failed", "err", err)
		return
	}
	d.mu.Lock()
	d.linked[env.ID] = true
	d.mu.Unlock()
}

// instrument returns the bytes to send for one copy (the spool file itself
// when the copy is untracked or rewriting fails, else the rewritten copy)
// and the copy's tracked links, nil if none.
func (d *Deliverer) instrument(env *Envelope, idx int, f *os.File, log *slog.Logger) (io.ReadSeeker, int64, func(), []string, error) {
	nop := func() {}
	rc := env.Recipients[idx]
	opens, clicks := ModeFlags(env.Mode)
	if !rc.Tracked || env.Bounce || (!opens && !clicks) || d.minters == nil {
		d.metrics.rewrites.WithLabelValues("untracked").Inc()
		return f, env.Size, nop, nil, nil
	}
	src, err := d.dkimSource(f)
	if err != nil {
		return nil, 0, nil, nil, err
	}
	start := time.Now()
	var out interface {
		io.Writer
		io.ReadSeeker
	}
	release := nop
	if env.Size <= d.cfg.MemoryCopyLimit {
		buf, _ := d.bufs.Get().(*bytes.Buffer)
		if buf == nil {
			buf = new(bytes.Buffer)
		}
		buf.Reset()
		mb := &memCopy{buf: buf}
		out = mb
		release = func() {
			if buf.Cap() <= int(2*d.cfg.MemoryCopyLimit) {
				d.bufs.Put(buf)
			}
		}
	} else {
		tmp, err := os.CreateTemp(filepath.Join(d.spool.dir), "copy-*.tmp")
		if err != nil {
			return nil, 0, nil, nil, fmt.Errorf("temporary copy: %w", err)
		}
		os.Remove(tmp.Name()) // unlinked: nothing is left behind by a crash
		out = tmp
		release = func() { tmp.Close() }
	}
	res, err := rewrite.Message(out, src, rewrite.Options{
		Opens:   opens,
		Clicks:  clicks,
		Minter:  d.minters.Minter(env.ID, idx),
		BaseURL: d.cfg.BaseURL,
	})
	d.metrics.rewriteDuration.Observe(time.Since(start).Seconds())
	if err != nil || !res.Changed {
		release()
		outcome := "unchanged"
		switch {
		case err != nil:
			outcome = "failed"
			log.Warn("rewrite failed; delivering the copy unchanged", "err", err)
		case res.Skipped == "dkim-signed":
			outcome = "dkim_signed"
		}
		d.metrics.rewrites.WithLabelValues(outcome).Inc()
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, 0, nil, nil, err
		}
		return f, env.Size, nop, nil, nil
	}
	d.metrics.rewrites.WithLabelValues("rewritten").Inc()
	d.metrics.linksRewritten.Add(float64(len(res.Links)))
	var links []string
	if len(res.Links) > 0 {
		links = res.Links
	}
	size, err := out.Seek(0, io.SeekCurrent)
	if err != nil {
		release()
		return nil, 0, nil, nil, err
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		release()
		return nil, 0, nil, nil, err
	}
	return out, size, release, links, nil
}

// memCopy is a bytes.Buffer that can be read back from the start.
type memCopy struct {
	buf *bytes.Buffer
	r   *bytes.Reader
}

func (m *memCopy) Write(p []byte) (int, error) { return m.buf.Write(p) }

func (m *memCopy) Read(p []byte) (int, error) {
	if m.r == nil {
		m.r = bytes.NewReader(m.buf.Bytes())
	}
	return m.r.Read(p)
}

func (m *memCopy) Seek(off int64, whence int) (int64, error) {
	if m.r == nil {
		if whence == io.SeekCurrent && off == 0 {
			return int64(m.buf.Len()), nil
		}
		m.r = bytes.NewReader(m.buf.Bytes())
	}
	return m.r.Seek(off, whence)
}

// capture writes the copy as <CaptureDir>/<queue id>-<n>.eml, made durable
// before it counts as delivered; the workers capturing at once share the
// outbox's directory fsyncs.
func (d *Deliverer) capture(env *Envelope, idx int, rcpt string, body io.Reader) (string, error) {
	name := fmt.Sprintf("%s-%d.eml", env.ID, idx)
	err := durable.Write(filepath.Join(d.cfg.CaptureDir, name), durable.Options{SyncDir: d.outbox.sync}, func(w io.Writer) error {
		if _, err := fmt.Fprintf(w, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", env.From, rcpt); err != nil {
			return err
		}
		_, err := io.Copy(w, body)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("capture: %w", err)
	}
	return "250 2.0.0 captured as " + name, nil
}
