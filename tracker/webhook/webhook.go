package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/internal/backoff"
	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Defaults of Options.
const (
	DefaultMaxAge     = 24 * time.Hour
	DefaultBackoffMin = 10 * time.Second
	DefaultBackoffMax = time.Hour
	DefaultTimeout    = 10 * time.Second
	DefaultWorkers    = 4
	poll              = time.Second
	batch             = 64
)

// SignatureHeader is the header that carries a webhook's signature:
// "t=UNIX,v1=HEX", HEX being the HMAC-SHA256 of "UNIX.BODY" under the
// account's webhook secret.
const SignatureHeader = "Trackrelay-Signature"

// Hook is one account's webhook endpoint.
type Hook struct {
	Account string
	URL     string
	Secret  []byte
}

// Options configures a Sender. Zero fields take the defaults.
type Options struct {
	Hooks []Hook
	// Client sends the requests; nil uses a client with Timeout.
	Client  *http.Client
	Timeout time.Duration
	// MaxAge is how long an entry is retried before it is abandoned.
	MaxAge time.Duration
	// BackoffMin is the wait after the first failure; it doubles with each
	// failure up to BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Workers is the number of concurrent POSTs.
	Workers int
	Logger  *slog.Logger
	Metrics *Metrics
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// Sender POSTs the feed entries queued in a store's durable
// outbox to each account's webhook, at least once: an entry leaves the
// outbox only after a 2xx answer, or once it has failed for MaxAge.
type Sender struct {
	outbox store.Outbox
	opts   Options
	hooks  map[string]Hook
	log    *slog.Logger
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// Sign returns the value of the signature header for body at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Start starts sending outbox. Its store must queue the entries of the
// accounts of opts.Hooks (for package bolt, Options.WebhookAccounts).
func Start(outbox store.Outbox, opts Options) *Sender {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = DefaultBackoffMin
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(DefaultBackoffMax, opts.BackoffMin)
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	w := &Sender{outbox: outbox, opts: opts, hooks: map[string]Hook{}, log: opts.Logger,
		stop: make(chan struct{}), done: make(chan struct{})}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	for _, h := range opts.Hooks {
		w.hooks[h.Account] = h
	}
	go w.run()
	return w
}

// Close stops sending; entries not yet delivered stay in the outbox.
func (w *Sender) Close() {
	w.once.Do(func() {
		close(w.stop)
		<-w.done
	})
}

func (w *Sender) run() {
	defer close(w.done)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		// A panic outside one event's send (reading or updating the
		// outbox) ends the round, whose transactions it rolled back; the
		// sender goes on with the next.
		n := 0
		guard.Run(guard.Webhook, w.log, func() { n = w.round() })
		if n == batch {
			continue // more may be due
		}
		select {
		case <-w.stop:
			return
		case <-t.C:
		case <-w.outbox.OutboxAdded():
		}
	}
}

// round sends what is due, and returns how many items it handled.
func (w *Sender) round() int {
	now := w.opts.Now()
	items, err := w.outbox.OutboxDue(now, batch)
	if err != nil {
		w.log.Error("webhook: outbox", "err", err)
		return 0
	}
	ok := make([]bool, len(items))
	sem := make(chan struct{}, w.opts.Workers)
	var wg sync.WaitGroup
	for i := range items {
		hook, found := w.hooks[items[i].Account]
		if !found {
			ok[i] = true // account no longer has a webhook: drop
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ok[i] = w.send(hook, &items[i])
		})
	}
	wg.Wait()
	var done, retry []store.OutboxItem
	var next []time.Time
	for i, it := range items {
		switch {
		case ok[i]:
			done = append(done, it)
		case now.Sub(it.First) >= w.opts.MaxAge:
			w.opts.Metrics.expired.Inc()
			w.log.Warn("webhook: abandoned after retrying", "account", it.Account, "id", it.ID, "attempts", it.Attempts+1)
			done = append(done, it)
		default:
			retry = append(retry, it)
			next = append(next, now.Add(w.backoff(it.Attempts)))
		}
	}
	if err := w.outbox.OutboxDone(done); err != nil {
		w.log.Error("webhook: outbox", "err", err)
	}
	if err := w.outbox.OutboxRetry(retry, next); err != nil {
		w.log.Error("webhook: outbox", "err", err)
	}
	return len(items)
}

// backoff is the wait after the attempts+1'th failure.
func (w *Sender) backoff(attempts int) time.Duration {
	return backoff.Exp(w.opts.BackoffMin, w.opts.BackoffMax, attempts+1)
}

// send POSTs one item and says whether the endpoint took it. A send that
// panics is a failed attempt, retried with backoff and given up after
// MaxAge like any other.
func (w *Sender) send(hook Hook, it *store.OutboxItem) (ok bool) {
	start := time.Now()
	defer func() {
		w.opts.Metrics.duration.Observe(time.Since(start).Seconds())
		result := "failure"
		if ok {
			result = "success"
		}
		w.opts.Metrics.attempts.WithLabelValues(result).Inc()
	}()
	defer guard.Recover(guard.Webhook, w.log, func(*guard.Panic) { ok = false })
	guard.Check(guard.Webhook, it.ID)
	ctx, cancel := context.WithTimeout(context.Background(), w.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook.URL, bytes.NewReader(it.Body))
	if err != nil {
		w.log.Error("webhook: request", "account", hook.Account, "err", err)
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "trackrelay-webhook/1")
	req.Header.Set(SignatureHeader, Sign(hook.Secret, w.opts.Now(), it.Body))
	req.Header.Set("Trackrelay-Event-Id", it.ID)
	resp, err := w.opts.Client.Do(req)
	if err != nil {
		w.log.Warn("webhook: failed", "account", hook.Account, "id", it.ID, "attempt", it.Attempts+1, "err", err)
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if err := resp.Body.Close(); err != nil {
		w.log.Debug("webhook: close", "err", err)
	}
	ok = resp.StatusCode >= 200 && resp.StatusCode < 300
	if !ok {
		w.log.Warn("webhook: refused", "account", hook.Account, "id", it.ID, "attempt", it.Attempts+1, "status", resp.StatusCode)
	}
	return ok
}
