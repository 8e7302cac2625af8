package tracker

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/trackrelay/trackrelay/tracker/classify"
)

// Metrics are the tracker's Prometheus metrics. Labels take only bounded
// values (handler names, status codes, event types and classes).
type Metrics struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	events          *prometheus.CounterVec
	eventsByLabel   map[[2]string]prometheus.Counter // events' children, looked up once
	invalidTokens   prometheus.Counter
	eventsLost      prometheus.Counter
	commitDuration  prometheus.Histogram
	commitBatch     prometheus.Histogram
	logSync         prometheus.Histogram
	eventsDropped   *prometheus.CounterVec
	reclassified    *prometheus.CounterVec
	eventsExpired   prometheus.Counter
	outbox          prometheus.GaugeFunc
	outboxFn        atomic.Pointer[func() float64]
	webhookAttempts *prometheus.CounterVec
	webhookDuration prometheus.Histogram
	webhookExpired  prometheus.Counter
}

// eventRecorded counts a recorded event of type typ and class class.
func (m *Metrics) eventRecorded(typ, class string) {
	if c, ok := m.eventsByLabel[[2]string{typ, class}]; ok {
		c.Inc()
		return
	}
	m.events.WithLabelValues(typ, class).Inc()
}

func (m *Metrics) setOutboxFunc(f func() float64) { m.outboxFn.Store(&f) }

// Handler label values.
const (
	handlerOpen   = "open"
	handlerClick  = "click"
	handlerAPI    = "api"
	handlerEvents = "events"
	handlerHealth = "health"
	handlerOther  = "other"
)

// NewMetrics creates the tracker's metrics and registers them on reg. A nil
// reg leaves them unregistered (useful in tests). It panics if a metric of the
// same name is already registered on reg, like prometheus.MustRegister.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "trackrelay",
			Subsystem: "tracking",
			Name:      "requests_total",
			Help:      "HTTP requests served by the tracker, by handler (open, click, api, events, health, other) and status code.",
		}, []string{"handler", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "trackrelay",
			Subsystem: "tracking",
			Name:      "request_duration_seconds",
			Help:      "Time to serve a tracker HTTP request, recording included, by handler (open, click, api, events, health, other).",
			Buckets:   []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"handler"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "trackrelay",
			Subsystem: "tracking",
			Name:      "events_total",
			Help:      "Tracking events recorded, by type (open, click) and class (human, proxy, prefetch, scanner, self).",
		}, []string{"type", "class"}),
		invalidTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "trackrelay",
			Subsystem: "tracking",
			Name:      "invalid_tokens_total",
			Help:      "Tracking requests whose token was malformed, tampered with or signed by an unknown key.",
		}),
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
	m.webhookAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "trackrelay",
		Subsystem: "webhook",
		Name:      "attempts_total",
		Help:      "Webhook POST attempts, by result (success: a 2xx answer; failure: anything else, retried with backoff).",
	}, []string{"result"})
	m.webhookDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "trackrelay",
		Subsystem: "webhook",
		Name:      "attempt_duration_seconds",
		Help:      "Time of one webhook POST attempt.",
		Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	m.webhookExpired = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "trackrelay",
		Subsystem: "webhook",
		Name:      "expired_total",
		Help:      "Webhook deliveries abandoned after failing for the whole retry period (24 hours).",
	})
	for _, r := range []string{"over_cap", "erased", "rate_limited"} {
		m.eventsDropped.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.webhookAttempts.WithLabelValues(r)
	}
	for _, h := range []string{handlerOpen, handlerClick} {
		for _, code := range []string{"200", "302", "404", "405"} {
			if (h == handlerOpen && code == "302") || (h == handlerClick && code == "200") {
				continue
			}
			m.requests.WithLabelValues(h, code)
		}
		m.requestDuration.WithLabelValues(h)
	}
	m.eventsByLabel = make(map[[2]string]prometheus.Counter)
	for _, typ := range []string{EventOpen, EventClick} {
		for _, c := range classify.Classes {
			m.eventsByLabel[[2]string{typ, c}] = m.events.WithLabelValues(typ, c)
		}
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.requestDuration, m.events, m.invalidTokens,
			m.eventsLost, m.commitDuration, m.commitBatch, m.logSync, m.eventsDropped, m.reclassified,
			m.eventsExpired, m.outbox, m.webhookAttempts, m.webhookDuration, m.webhookExpired)
	}
	return m
}
