package guard

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRun(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	before := testutil.ToFloat64(Panics.WithLabelValues(Webhook))

	if p := Run(Webhook, log, func() {}); p != nil {
		t.Fatalf("Run of a job that returns: %v", p)
	}
	p := Run(Webhook, log, func() { panic("boom") })
	if p == nil || p.Value != "boom" || p.Component != Webhook {
		t.Fatalf("Run of a panicking job = %+v", p)
	}
	if !strings.Contains(string(p.Stack), "guard_test.go") {
		t.Errorf("stack does not show where the panic was:\n%s", p.Stack)
	}
	if got := testutil.ToFloat64(Panics.WithLabelValues(Webhook)) - before; got != 1 {
		t.Errorf("panics counted: %v, want 1", got)
	}
	if n := strings.Count(buf.String(), "recovered a panic"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, buf.String())
	}
	if strings.Contains(p.Error(), "goroutine") {
		t.Errorf("Error() carries the stack: %q", p.Error())
	}
}

func TestRecover(t *testing.T) {
	var got *Panic
	func() {
		defer Recover(Applier, slog.New(slog.DiscardHandler), func(p *Panic) { got = p })
		panic(42)
	}()
	if got == nil || got.Value != 42 {
		t.Fatalf("Recover handed %+v", got)
	}
	// No panic: onPanic is not called.
	called := false
	func() {
		defer Recover(Applier, nil, func(*Panic) { called = true })
	}()
	if called {
		t.Error("onPanic called without a panic")
	}
}

func TestInject(t *testing.T) {
	remove := Inject(func(c, item string) bool { return c == Delivery && item == "bad" })
	defer remove()
	Check(Delivery, "good")
	Check(Applier, "bad")
	p := Run(Delivery, slog.New(slog.DiscardHandler), func() { Check(Delivery, "bad") })
	if p == nil {
		t.Fatal("injected panic did not happen")
	}
	remove()
	Check(Delivery, "bad")
}

func TestAllComponentsPresentAtZero(t *testing.T) {
	if n := testutil.CollectAndCount(Panics); n != len(AllComponents) {
		t.Errorf("series = %d, want %d", n, len(AllComponents))
	}
}
