package tracker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// Metrics are the tracker's Prometheus metrics. Labels take only bounded
// values (handler names, status codes, event types and classes).
type Metrics struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	events          *prometheus.CounterVec
	eventsByLabel   map[[2]string]prometheus.Counter // events' children, looked up once
	invalidTokens   prometheus.Counter

	// Store are the store's metrics, registered with these: the handler
	// counts the hits it loses or does not record there, and the store's
	// backend (bolt.Options.Metrics) the rest.
	Store *store.Metrics
}

// eventRecorded counts a recorded event of type typ and class class.
func (m *Metrics) eventRecorded(typ, class string) {
	if c, ok := m.eventsByLabel[[2]string{typ, class}]; ok {
		c.Inc()
		return
	}
	m.events.WithLabelValues(typ, class).Inc()
}

// Handler label values.
const (
	handlerOpen   = "open"
	handlerClick  = "click"
	handlerAPI    = "api"
	handlerEvents = "events"
	handlerHealth = "health"
	handlerOther  = "other"
)

// NewMetrics creates the tracker's metrics, the store's among them, and
// registers them on reg. A nil
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
	for _, typ := range []string{store.EventOpen, store.EventClick} {
		for _, c := range classify.Classes {
			m.eventsByLabel[[2]string{typ, c}] = m.events.WithLabelValues(typ, c)
		}
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.requestDuration, m.events, m.invalidTokens)
	}
	m.Store = store.NewMetrics(reg)
	return m
}
