package app

import (
	"github.com/gamelan-go/executor/internal/domain"
)

// job is one task offered by a source, on its way to its settlement.
type job struct {
	// key is the task's "runId:nodeId:attempt" and id its task id (the key
	// when the engine sent none), each built once: the task table, results
	// and logs read them many times per task.
	key       string
	id        string
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

// newJob returns the job of a task offered through tr.
func newJob(task *domain.Task, tr *transport, redeliverable bool) *job {
	j := &job{key: task.Key(), task: task, transport: tr, redeliverable: redeliverable}
	j.id = j.key
	if task.TaskID != "" {
		j.id = task.TaskID
	}
	return j
}

// resultCache is a fixed-size LRU of acknowledged results by idempotency
// key. Its entries live in one slice, linked by index from the most to the
// least recently used; once full, the least recent entry's slot is reused
// for the next result, so that remembering a result allocates nothing.
type resultCache struct {
	capacity int
	entries  []cacheEntry
	byKey    map[string]int32 // index in entries
	// newest and oldest are the ends of the recency list (-1: empty).
	newest, oldest int32
}

// cacheSizeHint bounds the room the cache's index is made with: a large
// capacity is reached only over time, and need not cost memory at start.
const cacheSizeHint = 1 << 14

type cacheEntry struct {
	key    string
	result domain.Result
	// newer and older link the recency list (-1: none).
	newer, older int32
}

func newResultCache(capacity int) *resultCache {
	return &resultCache{
		capacity: capacity,
		byKey:    make(map[string]int32, min(capacity, cacheSizeHint)),
		newest:   -1,
		oldest:   -1,
	}
}

func (c *resultCache) get(key string) (domain.Result, bool) {
	i, ok := c.byKey[key]
	if !ok {
		return domain.Result{}, false
	}
	c.touch(i)
	return c.entries[i].result, true
}

func (c *resultCache) add(key string, res domain.Result) {
	if i, ok := c.byKey[key]; ok {
		c.entries[i].result = res
		c.touch(i)
		return
	}
	var i int32
	if len(c.entries) < c.capacity {
		c.entries = append(c.entries, cacheEntry{})
		i = int32(len(c.entries) - 1)
	} else {
		i = c.oldest // forget the least recent result, and reuse its slot
		c.unlink(i)
		delete(c.byKey, c.entries[i].key)
	}
	c.entries[i] = cacheEntry{key: key, result: res, newer: -1, older: -1}
	c.byKey[key] = i
	c.pushNewest(i)
}

// touch makes entry i the most recent.
func (c *resultCache) touch(i int32) {
	if c.newest == i {
		return
	}
	c.unlink(i)
	c.pushNewest(i)
}

// unlink takes entry i out of the recency list.
func (c *resultCache) unlink(i int32) {
	e := &c.entries[i]
	if e.newer >= 0 {
		c.entries[e.newer].older = e.older
	} else {
		c.newest = e.older
	}
	if e.older >= 0 {
		c.entries[e.older].newer = e.newer
	} else {
		c.oldest = e.newer
	}
	e.newer, e.older = -1, -1
}

// pushNewest puts entry i, unlinked, at the most recent end.
func (c *resultCache) pushNewest(i int32) {
	e := &c.entries[i]
	e.older = c.newest
	if c.newest >= 0 {
		c.entries[c.newest].newer = i
	} else {
		c.oldest = i
	}
	c.newest = i
}

// len returns how many results the cache holds.
func (c *resultCache) len() int { return len(c.byKey) }
