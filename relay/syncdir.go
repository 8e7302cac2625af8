package relay

import (
	"sync"

	"github.com/trackrelay/trackrelay/internal/durable"
)

// dirSyncer shares directory fsyncs between concurrent callers: a new file
// is durable once its directory entry is, and one fsync of the directory
// covers every entry made before it started. Callers that arrive while a
// sync runs wait for the next one, which covers them all.
type dirSyncer struct {
	dir string

	mu      sync.Mutex
	next    *syncRound
	running bool
}

type syncRound struct {
	done chan struct{}
	err  error
}

func newDirSyncer(dir string) *dirSyncer { return &dirSyncer{dir: dir} }

// sync returns once an fsync of the directory that started after the call
// has completed.
func (s *dirSyncer) sync() error {
	s.mu.Lock()
	if s.next == nil {
		s.next = &syncRound{done: make(chan struct{})}
	}
	r := s.next
	if !s.running {
		s.running = true
		go s.run()
	}
	s.mu.Unlock()
	<-r.done
	return r.err
}

func (s *dirSyncer) run() {
	for {
		s.mu.Lock()
		r := s.next
		if r == nil {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.next = nil
		s.mu.Unlock()
		r.err = durable.SyncDir(s.dir)
		close(r.done)
	}
}
