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
	// slot is where the task table's index tracks the job (-1: nowhere),
	// guarded by taskTable.mu. It sits by the flags, which leave room for
	// it: a job is allocated per task, and fits a smaller size class so.
	slot int32

	// lane is where the job waits, guarded by scheduler.mu: nil for the
	// immediate lane. A job a worker took from a lane holds one of its slots.
	lane *lane
	// queuedAt is when the job entered its lane (see monotonicNow),
	// guarded by scheduler.mu: the metrics report the age of the oldest job
	// waiting (see laneLoad).
	queuedAt int64

	// spans are the task's spans, nil when tracing is off (tracing.go).
	spans *jobSpans
	// scope is the context its handler runs under (see handlerScope),
	// kept here so that it costs no allocation of its own.
	scope handlerScope

	// life is its stage in the task lifecycle, guarded by taskTable.mu and
	// read or written only in lifecycle.go.
	life lifecycle
}

// newJob returns the job of a task offered through tr.
func newJob(task *domain.Task, tr *transport, redeliverable bool) *job {
	j := &job{key: task.Key(), task: task, transport: tr, redeliverable: redeliverable, slot: -1}
	j.id = j.key
	if task.TaskID != "" {
		j.id = task.TaskID
	}
	return j
}

// keyIndex finds tasks by idempotency key: each task in flight (its job),
// and the last capacity finished tasks whose result was acknowledged (the
// result, for their duplicates), least recently used forgotten first. One
// map serves both, so that a task costs a lookup and an insertion when
// offered, and nothing more when settled unless an old result is
// forgotten. It is guarded by taskTable.mu.
//
// Its entries live in one slice whose slots are reused (free lists them),
// linked by index from the most to the least recently used result, so that
// tracking a task or remembering its result allocates nothing.
type keyIndex struct {
	capacity int // results remembered
	slots    []keySlot
	free     []int32
	byKey    map[string]int32 // slot index
	// newest and oldest are the ends of the recency list of remembered
	// results (-1: none), which holds remembered of them.
	newest, oldest int32
	remembered     int
}

// keySlot is a task in flight (job set) or a remembered result.
type keySlot struct {
	key    string
	job    *job
	result domain.Result
	// newer and older link the recency list (-1: none).
	newer, older int32
}

// indexSizeHint bounds the room the index is made with: it grows to its
// capacity over time, and need not cost memory at start.
const indexSizeHint = 1 << 10

func newKeyIndex(capacity int) *keyIndex {
	hint := min(capacity, indexSizeHint)
	return &keyIndex{
		capacity: capacity,
		slots:    make([]keySlot, 0, hint),
		byKey:    make(map[string]int32, hint),
		newest:   -1,
		oldest:   -1,
	}
}

// find returns the job in flight with that key, else the remembered result
// with that key (now the most recently used), else neither.
func (x *keyIndex) find(key string) (*job, domain.Result, bool) {
	i, ok := x.byKey[key]
	if !ok {
		return nil, domain.Result{}, false
	}
	if s := &x.slots[i]; s.job != nil {
		return s.job, domain.Result{}, true
	}
	x.touch(i)
	return nil, x.slots[i].result, true
}

// inFlight returns the job in flight with that key, or nil.
func (x *keyIndex) inFlight(key string) *job {
	if i, ok := x.byKey[key]; ok {
		return x.slots[i].job
	}
	return nil
}

// track adds j, which is in flight, under its key, replacing what the key
// found (callers track only keys that found nothing).
func (x *keyIndex) track(j *job) {
	var i int32
	if n := len(x.free); n > 0 {
		i, x.free = x.free[n-1], x.free[:n-1]
	} else {
		x.slots = append(x.slots, keySlot{})
		i = int32(len(x.slots) - 1)
	}
	x.slots[i] = keySlot{key: j.key, job: j, newer: -1, older: -1}
	x.byKey[j.key] = i
	j.slot = i
}

// untrack ends j's tracking: its key finds res from now on when res is
// not nil (a result acknowledged), else nothing. It does nothing for a job
// it does not track.
func (x *keyIndex) untrack(j *job, res *domain.Result) {
	i := j.slot
	if i < 0 || int(i) >= len(x.slots) || x.slots[i].job != j {
		return
	}
	if res == nil {
		x.forget(i)
		return
	}
	s := &x.slots[i]
	s.job, s.result = nil, *res
	x.pushNewest(i)
	x.remembered++
	if x.remembered > x.capacity {
		x.forget(x.oldest)
	}
}

// forget empties slot i, removing its key.
func (x *keyIndex) forget(i int32) {
	s := &x.slots[i]
	if s.job == nil {
		x.unlink(i)
		x.remembered--
	}
	if x.byKey[s.key] == i {
		delete(x.byKey, s.key)
	}
	*s = keySlot{}
	x.free = append(x.free, i)
}

// jobs returns the jobs in flight.
func (x *keyIndex) jobs() []*job {
	var jobs []*job
	for _, s := range x.slots {
		if s.job != nil {
			jobs = append(jobs, s.job)
		}
	}
	return jobs
}

// touch makes the remembered result in slot i the most recent.
func (x *keyIndex) touch(i int32) {
	if x.newest == i {
		return
	}
	x.unlink(i)
	x.pushNewest(i)
}

// unlink takes slot i out of the recency list.
func (x *keyIndex) unlink(i int32) {
	s := &x.slots[i]
	if s.newer >= 0 {
		x.slots[s.newer].older = s.older
	} else {
		x.newest = s.older
	}
	if s.older >= 0 {
		x.slots[s.older].newer = s.newer
	} else {
		x.oldest = s.newer
	}
	s.newer, s.older = -1, -1
}

// pushNewest puts slot i, unlinked, at the most recent end.
func (x *keyIndex) pushNewest(i int32) {
	s := &x.slots[i]
	s.older = x.newest
	if x.newest >= 0 {
		x.slots[x.newest].newer = i
	} else {
		x.oldest = i
	}
	x.newest = i
}
