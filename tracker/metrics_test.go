package tracker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

func gather(t testing.TB, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// counterValue returns the value of the counter name whose labels include
// labels (name/value pairs); 0 when absent.
func counterValue(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mf := gather(t, reg)[name]
	if mf == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		sum += m.GetCounter().GetValue()
	}
	return sum
}

func histogramCount(t testing.TB, reg prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mf := gather(t, reg)[name]
	if mf == nil {
		return 0
	}
	var n uint64
	for _, m := range mf.GetMetric() {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

func TestMetrics_lint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	m.invalidTokens.Inc()
	m.Store.Lost()
	m.Store.Committed(time.Millisecond, 3)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{
		"trackrelay_tracking_requests_total",
		"trackrelay_tracking_events_total",
		"trackrelay_tracking_invalid_tokens_total",
		"trackrelay_tracking_events_lost_total",
		"trackrelay_store_commit_duration_seconds",
		"trackrelay_store_commit_batch_size",
		"trackrelay_tracking_request_duration_seconds",
	} {
		if _, ok := gather(t, reg)[name]; !ok {
			t.Errorf("metric %s not exported", name)
		}
	}
}
