package guard

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Panics counts recovered panics by component. cmd registers it on the
// metrics registry; the component values are the Component constants.
var Panics = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "trackrelay_panics_total",
	Help: "Panics recovered at a job boundary, by component; the job was quarantined and the component went on.",
}, []string{"component"})

// Components whose job boundaries recover panics. Each is a label value of
// trackrelay_panics_total, present at 0 from the start so that an alert
// on its increase sees the first panic.
const (
	Delivery    = "delivery"     // delivering one recipient copy (instrumenting, DKIM, sending)
	Finish      = "finish"       // recording one delivery outcome
	Announce    = "announce"     // reporting one accepted message to the ledger
	Bounce      = "bounce"       // building one delivery status notification
	GroupCommit = "group_commit" // one group commit of the spool
	Collector   = "collector"    // one batch of hits written to the hit log
	Applier     = "applier"      // applying one hit-log record to the store
	Replay      = "replay"       // replaying one hit-log record at start
	Retention   = "retention"    // one retention sweep
	Webhook     = "webhook"      // sending one webhook event
)

// AllComponents lists every component, for metrics and tests.
var AllComponents = []string{Delivery, Finish, Announce, Bounce, GroupCommit,
	Collector, Applier, Replay, Retention, Webhook}

func init() {
	for _, c := range AllComponents {
		Panics.WithLabelValues(c)
	}
}

// A Panic is a recovered panic: its value and the stack where it happened.
type Panic struct {
	Component string
	Value     any
	Stack     []byte
}

// Error makes a Panic usable as an error: it says where and what, never
// the stack, so that it can be shown as a job's failure.
func (p *Panic) Error() string {
	return fmt.Sprintf("panic in %s: %v", p.Component, p.Value)
}

// Run runs fn and returns nil, or the Panic that fn raised, after logging it
// with its stack and counting it. log may be nil (slog.Default is used).
func Run(component string, log *slog.Logger, fn func()) (p *Panic) {
	defer func() {
		if v := recover(); v != nil {
			p = record(component, log, v)
		}
	}()
	fn()
	return nil
}

// Recover is Run's deferred form, for a job that is a whole function:
//
//	defer guard.Recover(guard.Webhook, log, func(p *guard.Panic) { ... quarantine ... })
//
// It must be deferred directly, as recover only works there. onPanic may be nil.
func Recover(component string, log *slog.Logger, onPanic func(*Panic)) {
	v := recover()
	if v == nil {
		return
	}
	p := record(component, log, v)
	if onPanic != nil {
		onPanic(p)
	}
}

// injected holds a test's panic injection: the component whose next job
// boundary panics.
var injected atomic.Pointer[func(component string, item string) bool]

// Inject makes Check panic for the jobs for which match returns true, so
// that tests can prove each boundary recovers and quarantines. It returns a
// function that removes the injection. Not for use outside tests.
func Inject(match func(component, item string) bool) (remove func()) {
	injected.Store(&match)
	return func() { injected.Store(nil) }
}

// Check panics when a test injected a panic for this component and item (a
// queue id, a record sequence, an event id). It costs one atomic load when
// no test injected anything, so job boundaries call it unconditionally.
func Check(component, item string) {
	if f := injected.Load(); f != nil && (*f)(component, item) {
		panic(fmt.Sprintf("injected panic in %s for %q", component, item))
	}
}

func record(component string, log *slog.Logger, v any) *Panic {
	p := &Panic{Component: component, Value: v, Stack: debug.Stack()}
	if log == nil {
		log = slog.Default()
	}
	Panics.WithLabelValues(component).Inc()
	log.Error("recovered a panic; the job is quarantined", "component", component,
		"panic", fmt.Sprint(v), "stack", string(p.Stack))
	return p
}
