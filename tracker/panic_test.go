package tracker

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
)

// injectPanic makes the job boundaries of component panic for item, the
// first times times (always, if times < 0), until the test ends. It
// returns how many panics it caused.
func injectPanic(t *testing.T, component, item string, times int32) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	t.Cleanup(guard.Inject(func(c, it string) bool {
		if c != component || it != item {
			return false
		}
		if times >= 0 && n.Load() >= times {
			return false
		}
		n.Add(1)
		return true
	}))
	return &n
}

func panicsOf(component string) float64 {
	return testutil.ToFloat64(guard.Panics.WithLabelValues(component))
}

// waitFor polls cond until it holds, failing the test after a generous
// while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A panic while the collector logs a batch is counted once; the batch's
// hit is served all the same and its loss counted as a store failure; the
// collector goes on with the next hits.
func TestPanic_collectorAnswersItsBatch(t *testing.T) {
	s := testStore(t, bolt.Options{})
	e := newTestEnv(t, s, nil)
	before := panicsOf(guard.Collector)
	injectPanic(t, guard.Collector, e.msg.ID, 1)

	if resp, body := e.do(t, http.MethodGet, e.mint.OpenURL(), nil); resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("pixel: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := panicsOf(guard.Collector) - before; got != 1 {
		t.Errorf("collector panics counted: %v, want 1", got)
	}
	if got := counterValue(t, e.reg, "trackrelay_tracking_events_lost_total"); got != 1 {
		t.Errorf("events_lost_total = %v, want 1", got)
	}
	if resp, _ := e.do(t, http.MethodGet, e.mint.ClickURL(0, "https://example.com/a"), nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("click: %d", resp.StatusCode)
	}
	v := e.view(t)
	if len(v.Events) != 1 || v.Events[0].Type != store.EventClick {
		t.Errorf("events %+v, want the click after the panic only", v.Events)
	}
}
