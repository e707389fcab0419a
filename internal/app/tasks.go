package app

import (
	"container/list"
	"context"
	"sync"

	"github.com/gamelan-go/executor/internal/domain"
)

// job is one admitted task on its way from a source to an acknowledged
// result.
type job struct {
	key       string
	task      *domain.Task
	exec      *hostedExecutor // nil when answer is decided at intake
	transport *transport
	// redeliverable: the source delivers the task again if it is handed back.
	redeliverable bool
	// untracked: the job is not in the task table, so it is neither found
	// by duplicates nor remembered when it finishes. It answers a duplicate
	// of a finished task with its stored result, or an invalid task.
	untracked bool

	// Guarded by scheduler.mu.
	lane    *lane // nil: the immediate lane
	started bool  // a worker took it from its lane
	// overran: its handler was abandoned at its deadline and still runs,
	// holding its lane's slot until it returns (see Runtime.work).
	overran bool

	// Guarded by taskTable.mu.
	answer   *domain.Result // decided without running the handler
	settles  []func(error)  // the original delivery's and its duplicates'
	running  bool
	finished bool
	cancel   context.CancelCauseFunc
}

// taskTable tracks admitted tasks until their results are acknowledged, and
// remembers the results of finished tasks, for deduplication and for
// cancellation by task id.
type taskTable struct {
	mu       sync.Mutex
	active   map[string]*job // by idempotency key
	byTaskID map[string]*job
	finished *resultCache
}

func newTaskTable(capacity int) *taskTable {
	return &taskTable{
		active:   make(map[string]*job),
		byTaskID: make(map[string]*job),
		finished: newResultCache(capacity),
	}
}

// lookup finds an active job by task id or idempotency key. Callers hold mu.
func (t *taskTable) lookup(id string) *job {
	if j := t.byTaskID[id]; j != nil {
		return j
	}
	return t.active[id]
}

// add tracks j. Callers hold mu.
func (t *taskTable) add(j *job) {
	t.active[j.key] = j
	t.byTaskID[j.task.ID()] = j
}

// remove stops tracking j. Callers hold mu.
func (t *taskTable) remove(j *job) {
	if t.active[j.key] == j {
		delete(t.active, j.key)
	}
	if t.byTaskID[j.task.ID()] == j {
		delete(t.byTaskID, j.task.ID())
	}
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
