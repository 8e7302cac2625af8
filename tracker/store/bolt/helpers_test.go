package bolt

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/trackrelay/trackrelay/tracker/store"
)

// lastClasses returns, for each event id, the class that the last of
// entries to speak of it gave it.
func lastClasses(entries []store.FeedEntry) map[string]string {
	last := map[string]string{}
	for _, fe := range entries {
		switch fe.Type {
		case store.EventOpen, store.EventClick:
			last[fe.ID] = fe.Class
		case store.EventReclassified:
			last[fe.EventID] = fe.Class
		}
	}
	return last
}

// testMetrics returns store metrics registered on a registry of their own.
func testMetrics() (*store.Metrics, *prometheus.Registry) {
	reg := prometheus.NewPedanticRegistry()
	return store.NewMetrics(reg), reg
}

// metricValue sums the values of the counter or gauge name in reg, and
// the sample counts of the histogram name.
func metricValue(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += metricOf(m)
		}
	}
	return sum
}

func metricOf(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}
