package app

import (
	"container/list"

	"github.com/gamelan-go/executor/internal/domain"
)

// job is one task offered by a source, on its way to its settlement.
type job struct {
	key       string
	task      *domain.Task
	exec      *hostedExecutor // nil when its answer is decided at intake
	transport *transport
	// redeliverable: the source delivers the task again if it is handed back.
	redeliverable bool
	// untracked: the job is not in the task table, so it is neither found
	// by duplicates nor remembered when it finishes. It answers a duplicate
	// of a finished task with its stored result, or an invalid task.
	untracked bool

	// lane is where the job waits, guarded by scheduler.mu: nil for the
	// immediate lane. A job a worker took from a lane holds one of its slots.
	lane *lane

	// life is its stage in the task lifecycle, guarded by taskTable.mu and
	// read or written only in lifecycle.go.
	life lifecycle
}

// resultCache is a fixed-size LRU of acknowledged results by idempotency key.
type resultCache struct {
	capacity int
	order    *list.List // front: most recent; values are *cacheEntry
	byKey    map[string]*list.Element
}

type cacheEntry struct {
	key    string
	result domain.Result
}

func newResultCache(capacity int) *resultCache {
	return &resultCache{capacity: capacity, order: list.New(), byKey: make(map[string]*list.Element)}
}

func (c *resultCache) get(key string) (domain.Result, bool) {
	el, ok := c.byKey[key]
	if !ok {
		return domain.Result{}, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*cacheEntry).result, true
}

func (c *resultCache) add(key string, res domain.Result) {
	if el, ok := c.byKey[key]; ok {
		el.Value.(*cacheEntry).result = res
		c.order.MoveToFront(el)
		return
	}
	c.byKey[key] = c.order.PushFront(&cacheEntry{key: key, result: res})
	if c.order.Len() > c.capacity {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.byKey, oldest.Value.(*cacheEntry).key)
	}
}
