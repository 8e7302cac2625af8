package tracker

import (
	"context"
	"testing"
	"time"
)

func TestStoreDeadlines(t *testing.T) {
	const d = 200 * time.Millisecond
	s := newStoreDeadlines(d)
	start := time.Now()
	first := s.context()
	if got := s.context(); got != first {
		t.Error("hits within half a timeout do not share a deadline")
	}
	dl, ok := first.Deadline()
	if !ok {
		t.Fatal("no deadline")
	}
	if dl.Before(start.Add(d)) || dl.After(time.Now().Add(d+d/2)) {
		t.Errorf("deadline %v after the first hit, want between %v and %v", dl.Sub(start), d, d+d/2)
	}

	// Past half a timeout, a hit starts a new epoch: it still gets at
	// least d, whatever is left of the first.
	time.Sleep(d/2 + 10*time.Millisecond)
	taken := time.Now()
	second := s.context()
	if second == first {
		t.Fatal("a hit past half a timeout shares the old deadline")
	}
	dl2, _ := second.Deadline()
	if dl2.Before(taken.Add(d)) {
		t.Errorf("second deadline %v after its hit, want at least %v", dl2.Sub(taken), d)
	}

	// Every context ends, and with DeadlineExceeded. (The guard only keeps
	// a context that never ends from hanging the test.)
	for _, ctx := range []context.Context{first, second} {
		select {
		case <-ctx.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("a deadline never ended")
		}
		if ctx.Err() != context.DeadlineExceeded {
			t.Errorf("err %v", ctx.Err())
		}
	}
}
