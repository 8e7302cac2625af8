package store

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a store's Prometheus metrics, which every backend reports:
// its commits, the hits it could not keep, and its webhook outbox. Labels
// take only bounded values. A nil *Metrics counts nothing.
type Metrics struct {
	eventsLost     prometheus.Counter
	commitDuration prometheus.Histogram
	commitBatch    prometheus.Histogram
	logSync        prometheus.Histogram
	eventsDropped  *prometheus.CounterVec
	reclassified   *prometheus.CounterVec
	eventsExpired  prometheus.Counter
	outbox         prometheus.GaugeFunc
	outboxFn       atomic.Pointer[func() float64]
	fallback       *prometheus.CounterVec
	shipped        prometheus.Counter
	db             *databaseCollector
}

// Causes of Metrics.Fallback: why a hit went to the hit log rather than
// being committed to the database before its response.
var fallbackCauses = []string{"error", "slow", "unreachable"}

// DatabaseStats is the state of a store's database and hit log, read at
// each scrape (SetDatabaseFunc).
type DatabaseStats struct {
	// Up: the database answers and takes commits.
	Up bool
	// Connections of the pool: in use, idle, both, and its size.
	Acquired, Idle, Total, Max int32
	// Backlog is the hits in the hit log not yet shipped to the
	// database, Oldest when the oldest of them was logged.
	Backlog int
	Oldest  time.Time
}

// Reasons of Metrics.Unlisted.
const (
	UnlistedOverCap     = "over_cap"
	UnlistedErased      = "erased"
	UnlistedRateLimited = "rate_limited"
)

// NewMetrics creates a store's metrics and registers them on reg. A nil
// reg leaves them unregistered (useful in tests). It panics if a metric of
// the same name is already registered on reg, like prometheus.MustRegister.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		eventsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "trackrelay",
			Subsystem: "tracking",
			Name:      "events_lost_total",
			Help:      "Tracking hits served but not recorded because the store failed or timed out.",
		}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "trackrelay",
			Subsystem: "store",
			Name:      "commit_duration_seconds",
			Help:      "Time of one store commit (write and fsync) of a batch of events.",
			Buckets:   []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1},
		}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "trackrelay",
			Subsystem: "store",
			Name:      "commit_batch_size",
			Help:      "Number of events written by one store commit.",
			Buckets:   []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
		}),
		logSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "trackrelay",
			Subsystem: "store",
			Name:      "log_sync_duration_seconds",
			Help:      "Time of one append (write and fdatasync) of a batch of hits to the hit log: what a hit waits for before its response.",
			Buckets:   []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1},
		}),
	}
	m.eventsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "trackrelay",
		Subsystem: "store",
		Name:      "events_unlisted_total",
		Help:      "Hits served but not kept as detailed events, by reason: over_cap (the copy reached tracking.max_events_per_recipient; its counters still count it), erased (the message's tracking data was deleted) or rate_limited (its client address exceeded the recording rate; not counted at all).",
	}, []string{"reason"})
	m.reclassified = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "trackrelay",
		Subsystem: "tracking",
		Name:      "reclassified_total",
		Help:      "Events whose class changed as later evidence arrived, by new class (human, proxy, prefetch, scanner, self).",
	}, []string{"class"})
	m.eventsExpired = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "trackrelay",
		Subsystem: "store",
		Name:      "events_expired_total",
		Help:      "Events deleted by the retention sweep (tracking.retention); their counts stay.",
	})
	m.outbox = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "trackrelay",
		Subsystem: "webhook",
		Name:      "outbox_entries",
		Help:      "Webhook deliveries waiting in the durable outbox.",
	}, func() float64 {
		if f := m.outboxFn.Load(); f != nil {
			return (*f)()
		}
		return 0
	})
	m.fallback = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "trackrelay",
		Subsystem: "store",
		Name:      "fallback_hits_total",
		Help:      "Hits answered once in the node's hit log instead of committed to PostgreSQL first, by cause: error (their commit failed), slow (it took longer than store.postgres.fallback_after), unreachable (a commit had failed and the log was not yet shipped).",
	}, []string{"cause"})
	for _, c := range fallbackCauses {
		m.fallback.WithLabelValues(c)
	}
	m.shipped = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "trackrelay",
		Subsystem: "store",
		Name:      "hitlog_shipped_total",
		Help:      "Hits of the hit log committed to PostgreSQL by the shipper (a hit both committed late and logged counts here too, stored once).",
	})
	m.db = newDatabaseCollector()
	for _, r := range []string{UnlistedOverCap, UnlistedErased, UnlistedRateLimited} {
		m.eventsDropped.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.eventsLost, m.commitDuration, m.commitBatch, m.logSync, m.eventsDropped,
			m.reclassified, m.eventsExpired, m.outbox, m.fallback, m.shipped, m.db)
	}
	return m
}

// Fallback counts a hit that went to the hit log, for cause ("error",
// "slow", "unreachable").
func (m *Metrics) Fallback(cause string) {
	if m != nil {
		m.fallback.WithLabelValues(cause).Inc()
	}
}

// Shipped counts n hits of the hit log committed to the database.
func (m *Metrics) Shipped(n int) {
	if m != nil && n > 0 {
		m.shipped.Add(float64(n))
	}
}

// SetDatabaseFunc makes the database's metrics (up, pool, hit log backlog)
// read f at each scrape: the store that has a database sets it once open.
// Without it they are not exported.
func (m *Metrics) SetDatabaseFunc(f func() DatabaseStats) {
	if m != nil {
		m.db.fn.Store(&f)
	}
}

// databaseCollector exports DatabaseStats, when a store has set its
// function.
type databaseCollector struct {
	fn                                   atomic.Pointer[func() DatabaseStats]
	up, conns, maxConns, backlog, oldest *prometheus.Desc
}

func newDatabaseCollector() *databaseCollector {
	name := func(n string) string { return prometheus.BuildFQName("trackrelay", "store", n) }
	return &databaseCollector{
		up:       prometheus.NewDesc(name("database_up"), "1 when the database answers and takes commits, 0 while hits go to the hit log (PostgreSQL store only).", nil, nil),
		conns:    prometheus.NewDesc(name("database_connections"), "Connections of the pool to PostgreSQL, by state: acquired (in use), idle, total.", []string{"state"}, nil),
		maxConns: prometheus.NewDesc(name("database_max_connections"), "Size of the pool of connections to PostgreSQL (store.postgres.max_connections).", nil, nil),
		backlog:  prometheus.NewDesc(name("hitlog_backlog_hits"), "Hits in the node's hit log not yet shipped to PostgreSQL.", nil, nil),
		oldest:   prometheus.NewDesc(name("hitlog_backlog_oldest_seconds"), "Age of the oldest hit in the hit log not yet shipped to PostgreSQL; 0 when none.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *databaseCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.conns, c.maxConns, c.backlog, c.oldest} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *databaseCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.fn.Load()
	if f == nil {
		return
	}
	st := (*f)()
	up := 0.0
	if st.Up {
		up = 1
	}
	age := 0.0
	if st.Backlog > 0 && !st.Oldest.IsZero() {
		age = max(0, time.Since(st.Oldest).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(st.Acquired), "acquired")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(st.Idle), "idle")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(st.Total), "total")
	ch <- prometheus.MustNewConstMetric(c.maxConns, prometheus.GaugeValue, float64(st.Max))
	ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(st.Backlog))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
}

// Lost counts a hit that was served but not recorded.
func (m *Metrics) Lost() {
	if m != nil {
		m.eventsLost.Inc()
	}
}

// Unlisted counts n hits served but not kept as detailed events, for
// reason (UnlistedOverCap, UnlistedErased, UnlistedRateLimited).
func (m *Metrics) Unlisted(reason string, n int) {
	if m != nil && n > 0 {
		m.eventsDropped.WithLabelValues(reason).Add(float64(n))
	}
}

// Committed observes one commit of writes writes that took d.
func (m *Metrics) Committed(d time.Duration, writes int) {
	if m != nil {
		m.commitDuration.Observe(d.Seconds())
		m.commitBatch.Observe(float64(writes))
	}
}

// LogSynced observes one append of a batch of hits to a hit log that
// took d, fdatasync included.
func (m *Metrics) LogSynced(d time.Duration) {
	if m != nil {
		m.logSync.Observe(d.Seconds())
	}
}

// Reclassified counts an event whose class became class.
func (m *Metrics) Reclassified(class string) {
	if m != nil {
		m.reclassified.WithLabelValues(class).Inc()
	}
}

// Expired counts n events deleted by retention.
func (m *Metrics) Expired(n int) {
	if m != nil && n > 0 {
		m.eventsExpired.Add(float64(n))
	}
}

// SetOutboxFunc makes the outbox gauge read f: the store that keeps the
// outbox sets it once open.
func (m *Metrics) SetOutboxFunc(f func() float64) {
	if m != nil {
		m.outboxFn.Store(&f)
	}
}
