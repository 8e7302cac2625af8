package relay

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the relay's Prometheus metrics. Labels take bounded values
// only: never an address, a queue id or a response text.
type Metrics struct {
	sessions        prometheus.Counter
	connRejected    prometheus.Counter
	authFailures    *prometheus.CounterVec
	messages        *prometheus.CounterVec
	acceptedBytes   prometheus.Counter
	attempts        *prometheus.CounterVec
	attemptDuration *prometheus.HistogramVec
	rewrites        *prometheus.CounterVec
	rewriteDuration prometheus.Histogram
	linksRewritten  prometheus.Counter
	bounces         prometheus.Counter
	queue           *queueCollector
	upstreamDials   *prometheus.CounterVec
	ledgerErrors    prometheus.Counter
	dkimSignatures  *prometheus.CounterVec
	owed            *owedCollector
	reportWaits     *prometheus.CounterVec
}

// NewMetrics creates the relay's metrics and registers them on reg (nil:
// unregistered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessions: counter("trackrelay_smtp_sessions_total",
			"SMTP sessions started."),
		connRejected: counter("trackrelay_smtp_connections_rejected_total",
			"SMTP connections refused with 421 because a connection limit was reached."),
		authFailures: counterVec("trackrelay_smtp_auth_failures_total",
			"Failed SMTP AUTH attempts, by reason (bad_credentials, rate_limited).", "reason"),
		messages: counterVec("trackrelay_smtp_messages_total",
			"Messages by result (accepted, rejected) and rejection reason (auth_required, tls_required, bad_address, too_large, line_too_long, bad_message, timeout, spool_error).", "result", "reason"),
		acceptedBytes: counter("trackrelay_smtp_accepted_bytes_total",
			"Bytes of accepted messages, as spooled."),
		attempts: counterVec("trackrelay_delivery_attempts_total",
			"Delivery attempts of recipient copies, by result (delivered, deferred, bounced).", "result"),
		attemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trackrelay_delivery_attempt_duration_seconds",
			Help:    "Time taken by one delivery attempt (instrumenting and sending one copy), by result.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"result"}),
		rewrites: counterVec("trackrelay_rewrite_total",
			"Copies passed through the rewriter, by outcome (rewritten, unchanged, dkim_signed, failed, untracked).", "outcome"),
		rewriteDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trackrelay_rewrite_duration_seconds",
			Help:    "Time taken to instrument one recipient copy.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 10),
		}),
		linksRewritten: counter("trackrelay_rewrite_links_total",
			"Links turned into click redirects, summed over all copies."),
		bounces: counter("trackrelay_delivery_bounces_total",
			"Delivery status notifications (bounces) generated."),
		queue: &queueCollector{desc: prometheus.NewDesc("trackrelay_queue_recipients",
			"Recipient copies in the spool, by state (queued, deferred, sending, held: after an internal error, until the operator retries them).", []string{"state"}, nil)},
		upstreamDials: counterVec("trackrelay_upstream_connections_total",
			"Connections opened to the upstream server, by result (ok, error).", "result"),
		ledgerErrors: counter("trackrelay_ledger_errors_total",
			"Failures to record acceptance or delivery status in the tracking store."),
		dkimSignatures: counterVec("trackrelay_dkim_signatures_total",
			"DKIM signing of outgoing copies, by result (signed; error: delivered unsigned).", "result"),
		owed: &owedCollector{
			count: prometheus.NewDesc("trackrelay_ledger_owed_reports",
				"Reports (message records, links, delivery states) the tracking store has not acknowledged yet: retried until it does, kept in the spool across restarts.", nil, nil),
			oldest: prometheus.NewDesc("trackrelay_ledger_owed_oldest_age_seconds",
				"Age of the oldest report the tracking store has not acknowledged; 0 when none.", nil, nil),
		},
		reportWaits: counterVec("trackrelay_ledger_report_waits_total",
			"Accepted messages whose 250 waited for their record in the tracking store (fleet mode), by result (committed: before the 250; timeout: not within the wait, it follows; owed: the store failed or is down, retried).", "result"),
	}
	for _, r := range []string{reportCommitted, reportTimeout, reportOwed} {
		m.reportWaits.WithLabelValues(r)
	}
	for _, r := range []string{"signed", "error"} {
		m.dkimSignatures.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.connRejected, m.authFailures, m.messages, m.acceptedBytes,
			m.attempts, m.attemptDuration, m.rewrites, m.rewriteDuration, m.linksRewritten,
			m.bounces, m.queue, m.upstreamDials, m.ledgerErrors, m.dkimSignatures, m.owed, m.reportWaits)
	}
	return m
}

// counter and counterVec make a counter, and one with labels, named and
// described so.
func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// queueCollector counts the queue's copies by state when scraped: telling
// queued from deferred needs a look at every job, which is cheap every few
// seconds and quadratic on every change (a restart with a backlog of
// 100,000 copies submits each of them).
type queueCollector struct {
	desc *prometheus.Desc

	mu    sync.Mutex
	count func() queueCounts
}

// queueCounts are the queue's copies by state.
type queueCounts struct {
	queued, deferred, sending, held int
}

// source sets the function that counts the queue.
func (c *queueCollector) source(count func() queueCounts) {
	c.mu.Lock()
	c.count = count
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	count := c.count
	c.mu.Unlock()
	var n queueCounts
	if count != nil {
		n = count()
	}
	for _, v := range []struct {
		state string
		n     int
	}{{"queued", n.queued}, {"deferred", n.deferred}, {"sending", n.sending}, {"held", n.held}} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v.n), v.state)
	}
}

// Results of trackrelay_ledger_report_waits_total.
const (
	reportCommitted = "committed"
	reportTimeout   = "timeout"
	reportOwed      = "owed"
)

// owedCollector reports the reports owed to the ledger when scraped.
type owedCollector struct {
	count, oldest *prometheus.Desc

	mu  sync.Mutex
	get func() (int, time.Time)
}

// source sets the function that counts the owed reports.
func (c *owedCollector) source(get func() (int, time.Time)) {
	c.mu.Lock()
	c.get = get
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *owedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.count; ch <- c.oldest }

// Collect implements prometheus.Collector.
func (c *owedCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	get := c.get
	c.mu.Unlock()
	var n int
	var oldest time.Time
	if get != nil {
		n, oldest = get()
	}
	age := 0.0
	if !oldest.IsZero() {
		age = max(0, time.Since(oldest).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
}
