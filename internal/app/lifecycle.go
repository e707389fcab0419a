package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/gamelan-go/executor/internal/domain"
)

// The task lifecycle. Every job is in one stage, guarded by taskTable.mu
// and moved only by the taskTable methods in this file, each of which checks
// its move against the table below. docs/architecture.md ("The task
// lifecycle") draws the same diagram:
//
//	           offer                start                finish
//	offered ─────────▶ queued ──────────────▶ running ──────────────▶ finished
//	   │                │  │                                             ▲  │
//	   │ offer          │  │ answerQueued                          start │  │ settle
//	   │ (answer known) │  ▼ (cancel, shutdown, stalled type)            │  ▼
//	   └────────────────┼▶ answered ───────────────────────────────────────┘ settled
//	                    │     │                                             ▲
//	                    └─────┴──── settle (handed back or given up) ───────┘
//
// The scheduler's lock is a separate concern: it guards where a job waits
// (job.lane) and which lane slots are held, not what happened to the task.
// The lock order is taskTable.mu, then scheduler.mu.

// stage is where a job is in its lifecycle.
type stage uint8

const (
	// offered: built by Offer and not admitted yet. A refused offer, or a
	// duplicate that joins the task in flight, is dropped in this stage.
	offered stage = iota
	// queued: admitted; waits for a worker to run its handler.
	queued
	// answered: admitted with its result decided without running the
	// handler (invalid task, duplicate of a finished task, no executor,
	// stalled type, cancelled or shut down while queued); waits for a
	// worker to send it.
	answered
	// running: its handler runs, under a context that cancel and shutDown
	// end.
	running
	// finished: its result is decided and on its way through the outbox.
	// A handler abandoned at its deadline may still run: the slot it holds
	// is the scheduler's business, not the task's.
	finished
	// settled: the deliveries of the task are settled (result acknowledged,
	// dead-lettered or given up, or the task handed back); it is no longer
	// tracked. The end.
	settled
)

var stageNames = [...]string{offered: "offered", queued: "queued", answered: "answered", running: "running", finished: "finished", settled: "settled"}

func (s stage) String() string {
	if int(s) < len(stageNames) {
		return stageNames[s]
	}
	return fmt.Sprintf("stage(%d)", s)
}

// transitions lists, for each stage, the stages a job may move to from it.
var transitions = [...][]stage{
	offered:  {queued, answered},
	queued:   {running, answered, settled},
	answered: {finished, settled},
	running:  {finished},
	finished: {settled},
	settled:  nil,
}

func (s stage) canMoveTo(to stage) bool {
	return int(s) < len(transitions) && slices.Contains(transitions[s], to)
}

// illegalTransition is a move the lifecycle does not allow: a bug in the
// runtime. The job is left as it was, and the caller logs it.
type illegalTransition struct {
	taskID   string
	from, to stage
}

func (e *illegalTransition) Error() string {
	return fmt.Sprintf("task %s: illegal lifecycle transition %s -> %s", e.taskID, e.from, e.to)
}

// lifecycle is the part of a job that only this file reads or writes,
// under taskTable.mu.
type lifecycle struct {
	stage stage
	// answer is the result decided without running the handler (answered).
	answer *domain.Result
	// settles are the Settle callbacks of the original delivery and of its
	// duplicates, called once the job is settled.
	settles []func(error)
	// cancel ends the handler's context (running).
	cancel context.CancelCauseFunc
}

// taskTable owns the lifecycle of every job: it tracks admitted tasks until
// they are settled, and remembers the results of finished tasks, for
// deduplication and for cancellation by task id.
type taskTable struct {
	mu sync.Mutex
	// sched is told, under mu, where an admitted or newly answered job
	// waits, so that no worker sees a job whose stage and queue disagree.
	sched    *scheduler
	active   map[string]*job // by idempotency key
	byTaskID map[string]*job
	finished *resultCache
	// shutdown, once set when the drain deadline passes, answers every job
	// that has not started running. Handlers' contexts have no shared
	// parent: a shared parent would serialise every task start on its lock.
	shutdown error
}

func newTaskTable(capacity int, sched *scheduler) *taskTable {
	return &taskTable{
		sched:    sched,
		active:   make(map[string]*job),
		byTaskID: make(map[string]*job),
		finished: newResultCache(capacity),
	}
}

// offerOutcome is what became of an offered job.
type offerOutcome uint8

const (
	admitted offerOutcome = iota
	// joined: a task with the same key is in flight; the delivery is
	// settled with it, and the offered job is dropped.
	joined
	// refused: the scheduler has no room, or is closed.
	refused
)

// offer admits j, or joins its delivery (settle) to the task in flight with
// the same key. A duplicate of a finished task is answered its stored
// result. Otherwise decide picks j's executor, or its answer. decide runs
// under the table's lock, which answerStalled takes too: if j's type stalls
// after decide found it not stalled, answerStalled finds j in its queue.
func (t *taskTable) offer(j *job, settle func(error), decide func() (*hostedExecutor, *domain.Result)) (offerOutcome, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if j.life.stage != offered {
		return refused, &illegalTransition{j.task.ID(), j.life.stage, queued}
	}
	if original := t.active[j.key]; original != nil {
		original.life.settles = append(original.life.settles, settle)
		return joined, nil
	}
	var answer *domain.Result
	if res, ok := t.finished.get(j.key); ok {
		// The same result, addressed to this delivery: an engine that
		// re-dispatched the attempt may have given it a new token.
		stamp(&res, j.task)
		answer, j.untracked = &res, true
	} else {
		j.exec, answer = decide()
		if j.exec != nil {
			j.lane = j.exec.lane
		}
	}
	return t.admit(j, settle, answer)
}

// offerUntracked admits j answered, without tracking it: an invalid task
// must neither be taken for nor stand in for a valid one with the same
// identity.
func (t *taskTable) offerUntracked(j *job, settle func(error), answer *domain.Result) (offerOutcome, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if j.life.stage != offered {
		return refused, &illegalTransition{j.task.ID(), j.life.stage, answered}
	}
	j.untracked = true
	return t.admit(j, settle, answer)
}

// admit moves j from offered to queued, or to answered when its answer is
// known, if the scheduler takes it. Callers hold mu.
func (t *taskTable) admit(j *job, settle func(error), answer *domain.Result) (offerOutcome, error) {
	to := queued
	if answer != nil {
		to = answered
	}
	if !j.life.stage.canMoveTo(to) {
		return refused, &illegalTransition{j.task.ID(), j.life.stage, to}
	}
	if !t.sched.admit(j) {
		return refused, nil
	}
	j.life = lifecycle{stage: to, answer: answer, settles: []func(error){settle}}
	if !j.untracked {
		t.active[j.key] = j
		t.byTaskID[j.task.ID()] = j
	}
	return admitted, nil
}

// start moves a job a worker took from the scheduler. An answered job
// finishes with its answer, and so does a queued one once the runtime shuts
// down; a queued one otherwise starts running under ctx, which cancel and
// shutDown end.
func (t *taskTable) start(j *job) (ctx context.Context, answer *domain.Result, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if j.life.stage == queued && t.shutdown != nil {
		res := failedResult(j.task, errorInfo(t.shutdown))
		if err := t.answer(j, &res); err != nil {
			return nil, nil, err
		}
	}
	if j.life.stage == answered {
		if err := t.move(j, finished); err != nil {
			return nil, nil, err
		}
		return nil, j.life.answer, nil
	}
	if err := t.move(j, running); err != nil {
		return nil, nil, err
	}
	ctx, j.life.cancel = context.WithCancelCause(context.Background())
	return ctx, nil, nil
}

// finish moves a job whose handler returned, or was abandoned at its
// deadline, from running to finished, and releases its context.
func (t *taskTable) finish(j *job) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.move(j, finished); err != nil {
		return err
	}
	j.life.cancel(nil)
	return nil
}

// cancel ends the task with that task id or idempotency key: its handler's
// context if it runs, its answer (cause) if it is queued. It reports false
// for a task unknown, finished, or already answered.
func (t *taskTable) cancel(id string, cause error) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	j := t.byTaskID[id]
	if j == nil {
		j = t.active[id]
	}
	if j == nil {
		return false
	}
	switch j.life.stage {
	case running:
		j.life.cancel(cause)
		return true
	case queued:
		res := failedResult(j.task, errorInfo(cause))
		return t.answerQueued(j, &res) == nil
	}
	return false
}

// answerStalled answers every job queued in l with answer(j), if every slot
// of l is held by a handler that ignored its deadline (scheduler.stalled).
// It reports whether l was stalled, and how many jobs it answered.
func (t *taskTable) answerStalled(l *lane, answer func(*job) *domain.Result) (stalled bool, answered int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.sched.stalled(l) {
		return false, 0, nil
	}
	var errs []error
	for _, j := range t.sched.queuedIn(l) {
		if err := t.answerQueued(j, answer(j)); err != nil {
			errs = append(errs, err)
			continue
		}
		answered++
	}
	return true, answered, errors.Join(errs...)
}

// shutDown ends what the drain deadline left: running handlers are
// cancelled with cause, queued jobs are answered with it, and so is every
// job a worker takes from now on. It returns how many queued jobs it
// answered.
func (t *taskTable) shutDown(cause error) (answered int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.shutdown = cause
	for _, j := range t.active {
		if j.life.stage == running {
			j.life.cancel(cause)
		}
	}
	var errs []error
	for _, j := range t.sched.queued() {
		res := failedResult(j.task, errorInfo(cause))
		if err := t.answerQueued(j, &res); err != nil {
			errs = append(errs, err)
			continue
		}
		answered++
	}
	return answered, errors.Join(errs...)
}

// answerQueued moves a queued job to answered and to the scheduler's
// immediate lane; if a worker already took it, start finds the answer.
// Callers hold mu.
func (t *taskTable) answerQueued(j *job, res *domain.Result) error {
	if err := t.answer(j, res); err != nil {
		return err
	}
	t.sched.expedite(j)
	return nil
}

// answer moves a queued job to answered. Callers hold mu.
func (t *taskTable) answer(j *job, res *domain.Result) error {
	if err := t.move(j, answered); err != nil {
		return err
	}
	j.life.answer = res
	return nil
}

// settle ends j: its result was acknowledged (remember is then kept for
// duplicates), dead-lettered or given up, or j is handed back unstarted.
// It returns the Settle callbacks of j's deliveries, for the caller to call
// outside the lock.
func (t *taskTable) settle(j *job, remember *domain.Result) ([]func(error), error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.move(j, settled); err != nil {
		return nil, err
	}
	settles := j.life.settles
	j.life.settles = nil
	if !j.untracked {
		if t.active[j.key] == j {
			delete(t.active, j.key)
		}
		if t.byTaskID[j.task.ID()] == j {
			delete(t.byTaskID, j.task.ID())
		}
		if remember != nil {
			t.finished.add(j.key, *remember)
		}
	}
	return settles, nil
}

// move moves j to stage to if the lifecycle allows it. Callers hold mu.
func (t *taskTable) move(j *job, to stage) error {
	if !j.life.stage.canMoveTo(to) {
		return &illegalTransition{j.task.ID(), j.life.stage, to}
	}
	j.life.stage = to
	return nil
}
