package tracker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// storeDeadlines hands out the contexts that bound a hit's wait for the
// store. A context of its own per hit costs a timer, three allocations and
// a lock on the way in and out, a few microseconds a hit at the rates the
// tracker serves; hits taken within half a timeout of each other share
// one instead, so each gets between d and 1.5×d.
type storeDeadlines struct {
	d   time.Duration
	cur atomic.Pointer[deadlineEpoch]
	mu  sync.Mutex // held to start an epoch
}

type deadlineEpoch struct {
	ctx   context.Context
	until time.Time // when hits stop taking this epoch: its start + d/2
	// cancel is never called: the epoch's hits may wait until its deadline,
	// whose timer then releases it.
	cancel context.CancelFunc
}

func newStoreDeadlines(d time.Duration) *storeDeadlines {
	return &storeDeadlines{d: d}
}

// context returns a context that ends between d and 1.5×d from now.
func (s *storeDeadlines) context() context.Context {
	now := time.Now()
	if e := s.cur.Load(); e != nil && now.Before(e.until) {
		return e.ctx
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.cur.Load(); e != nil && now.Before(e.until) {
		return e.ctx
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(s.d+s.d/2))
	s.cur.Store(&deadlineEpoch{ctx: ctx, until: now.Add(s.d / 2), cancel: cancel})
	return ctx
}
