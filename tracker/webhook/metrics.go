package webhook

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the webhook sender's Prometheus metrics. (The outbox gauge is
// the store's, which keeps the outbox: see store.Metrics.)
type Metrics struct {
	attempts *prometheus.CounterVec
	duration prometheus.Histogram
	expired  prometheus.Counter
}

// NewMetrics creates the sender's metrics and registers them on reg. A nil
// reg leaves them unregistered (useful in tests). It panics if a metric of
// the same name is already registered on reg, like prometheus.MustRegister.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "trackrelay",
			Subsystem: "webhook",
			Name:      "attempts_total",
			Help:      "Webhook POST attempts, by result (success: a 2xx answer; failure: anything else, retried with backoff).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "trackrelay",
			Subsystem: "webhook",
			Name:      "attempt_duration_seconds",
			Help:      "Time of one webhook POST attempt.",
			Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "trackrelay",
			Subsystem: "webhook",
			Name:      "expired_total",
			Help:      "Webhook deliveries abandoned after failing for the whole retry period (24 hours).",
		}),
	}
	for _, r := range []string{"success", "failure"} {
		m.attempts.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.attempts, m.duration, m.expired)
	}
	return m
}
