package bolt

import (
	"container/list"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
)

// DefaultCacheSize is the number of messages whose classification data a
// Store keeps in memory.
const DefaultCacheSize = 10000

// metaEntry is what a hit needs to know about its message: the message
// itself (nil when unknown), whether its data was erased, and when each
// copy was delivered. Entries are immutable once cached; a change replaces
// them.
type metaEntry struct {
	id        string
	msg       *store.Message
	erased    bool
	delivered []time.Time // by recipient; zero: not delivered
}

// metaCache is a bounded LRU of metaEntry, so that a hit needs no read
// transaction. A writer that changes a message invalidates its entry after
// its commit; a reader that loaded an entry from the store inserts it only
// if no invalidation happened since it started (gen), so a stale load never
// outlives the write that made it stale.
type metaCache struct {
	mu  sync.Mutex
	gen uint64
	max int
	ll  *list.List
	m   map[string]*list.Element
}

func newMetaCache(size int) *metaCache {
	return &metaCache{max: size, ll: list.New(), m: make(map[string]*list.Element, size)}
}

func (c *metaCache) get(id string) (*metaEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[id]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*metaEntry), true
}

// begin returns the generation to pass to add after loading an entry.
func (c *metaCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *metaCache) add(gen uint64, e *metaEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if el, ok := c.m[e.id]; ok {
		el.Value = e
		c.ll.MoveToFront(el)
		return
	}
	c.m[e.id] = c.ll.PushFront(e)
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*metaEntry).id)
	}
}

func (c *metaCache) invalidate(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if el, ok := c.m[id]; ok {
		c.ll.Remove(el)
		delete(c.m, id)
	}
}
