package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/gamelan-go/executor/internal/domain"
)

// The task lifecycle. Every job is in one stage, guarded by the job's own
// lock (lifecycle.mu) and moved only by the taskTable methods in this file,
// each of which checks its move against the table below.
// docs/architecture.md ("The task lifecycle") draws the same diagram:
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
// A lock per job, rather than the table's, lets a worker start and finish
// its job without waiting for the table, which every offer and settlement
// takes: one lock for all would make the workers queue behind each other.
// The table's lock guards what is found by key or task id (and each job's
// Settle callbacks, which a duplicate adds to by key).
//
// The scheduler's lock is a separate concern: it guards where a job waits
// (job.lane) and which lane slots are held, not what happened to the task.
// The lock order is taskTable.mu, then lifecycle.mu, then scheduler.mu.

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

// lifecycle is the part of a job that only this file reads or writes.
type lifecycle struct {
	// mu guards stage, answer and cancel.
	mu    sync.Mutex
	stage stage
	// answer is the result decided without running the handler (answered).
	answer *domain.Result
	// settles are the Settle callbacks of the original delivery and of its
	// duplicates, called once the job is settled; guarded by taskTable.mu.
	// It starts as a slice of original, so that a job without duplicates
	// (almost every one) needs no slice of its own.
	settles  []func(error)
	original [1]func(error)
	// cancel ends the handler's context (running): the worker's, which
	// runs it (see worker.cancelRunning).
	cancel context.CancelCauseFunc
}

// taskTable owns the lifecycle of every job: it tracks admitted tasks until
// they are settled, and remembers the results of finished tasks, for
// deduplication and for cancellation by task id.
type taskTable struct {
	mu sync.Mutex
	// sched is told, under the job's lock, where an admitted or newly
	// answered job waits, so that no worker sees a job whose stage and
	// queue disagree.
	sched *scheduler
	// byKey finds the jobs in flight and the remembered results of
	// finished tasks by idempotency key; byTaskID finds the jobs in flight
	// that carry a task id of their own.
	byKey    *keyIndex
	byTaskID map[string]*job
	// shutdown, once set when the drain deadline passes, answers every job
	// that has not started running. It is read without mu, by start.
	shutdown atomic.Pointer[shutdownCause]
}

// shutdownCause is the cause given to shutDown.
type shutdownCause struct{ err error }

func newTaskTable(capacity int, sched *scheduler) *taskTable {
	return &taskTable{
		sched:    sched,
		byKey:    newKeyIndex(capacity),
		byTaskID: make(map[string]*job),
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
// result. Otherwise j runs on e, its executor as routed, or is answered
// answer when routing found none; a task of a stalled executor type is
// answered HANDLERS_STALLED. That check runs under the table's lock, which
// answerStalled takes too: if j's type stalls after the check found it not
// stalled, answerStalled finds j in its queue.
func (t *taskTable) offer(j *job, settle func(error), e *hostedExecutor, answer *domain.Result) (offerOutcome, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if from := j.stage(); from != offered {
		return refused, &illegalTransition{j.id, from, queued}
	}
	original, res, found := t.byKey.find(j.key)
	if original != nil {
		original.life.settles = append(original.life.settles, settle)
		return joined, nil
	}
	switch {
	case found:
		// The same result, addressed to this delivery: an engine that
		// re-dispatched the attempt may have given it a new token.
		stored := res // a copy of its own, so that res stays off the heap
		stamp(&stored, j.task, j.id)
		answer, j.untracked = &stored, true
	case e != nil && t.sched.stalled(e.lane):
		answer = stalledAnswer(j, e)
	case e != nil:
		j.exec, j.lane = e, e.lane
	}
	return t.admit(j, settle, answer)
}

// offerUntracked admits j answered, without tracking it: an invalid task
// must neither be taken for nor stand in for a valid one with the same
// identity.
func (t *taskTable) offerUntracked(j *job, settle func(error), answer *domain.Result) (offerOutcome, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if from := j.stage(); from != offered {
		return refused, &illegalTransition{j.id, from, answered}
	}
	j.untracked = true
	return t.admit(j, settle, answer)
}

// stage returns j's stage.
func (j *job) stage() stage {
	j.life.mu.Lock()
	defer j.life.mu.Unlock()
	return j.life.stage
}

// admit moves j from offered to queued, or to answered when its answer is
// known, if the scheduler takes it. Callers hold mu.
func (t *taskTable) admit(j *job, settle func(error), answer *domain.Result) (offerOutcome, error) {
	to := queued
	if answer != nil {
		to = answered
	}
	// The stage is set before the scheduler may hand j to a worker, and
	// undone if the scheduler refuses it: until then, nothing else can
	// reach j. j's lock is not held across admit, so that a worker taking
	// j at once does not wait for it.
	j.life.mu.Lock()
	from := j.life.stage
	if !from.canMoveTo(to) {
		j.life.mu.Unlock()
		return refused, &illegalTransition{j.id, from, to}
	}
	j.life.stage, j.life.answer = to, answer
	j.life.mu.Unlock()
	if !t.sched.admit(j) {
		j.life.mu.Lock()
		j.life.stage, j.life.answer = from, nil
		j.life.mu.Unlock()
		return refused, nil
	}
	j.life.original[0] = settle
	j.life.settles = j.life.original[:]
	if !j.untracked {
		t.byKey.track(j)
		if j.id != j.key {
			// A task without a task id is found by its key.
			t.byTaskID[j.id] = j
		}
	}
	return admitted, nil
}

// start moves a job a worker took from the scheduler. An answered job
// finishes with its answer, and so does a queued one once the runtime shuts
// down; a queued one otherwise starts running, and until it finishes,
// cancel and shutDown end it by calling cancel: the worker's, which ends
// the handler's context with the cause they give.
func (t *taskTable) start(j *job, cancel context.CancelCauseFunc) (answer *domain.Result, err error) {
	j.life.mu.Lock()
	defer j.life.mu.Unlock()
	if shutdown := t.shutdown.Load(); j.life.stage == queued && shutdown != nil {
		res := failedResult(j.task, errorInfo(shutdown.err))
		if err := t.answer(j, &res); err != nil {
			return nil, err
		}
	}
	if j.life.stage == answered {
		if err := t.move(j, finished); err != nil {
			return nil, err
		}
		return j.life.answer, nil
	}
	if err := t.move(j, running); err != nil {
		return nil, err
	}
	j.life.cancel = cancel
	return nil, nil
}

// finish moves a job whose handler returned, or was abandoned at its
// deadline, from running to finished: from now on nothing cancels it. Its
// handler's context is the worker's to release.
func (t *taskTable) finish(j *job) error {
	j.life.mu.Lock()
	defer j.life.mu.Unlock()
	if err := t.move(j, finished); err != nil {
		return err
	}
	j.life.cancel = nil
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
		j = t.byKey.inFlight(id)
	}
	if j == nil {
		return false
	}
	j.life.mu.Lock()
	defer j.life.mu.Unlock()
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
		ok, err := t.answerQueuedJob(j, answer(j))
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			answered++
		}
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
	// Set before the jobs are visited: a job a worker starts from now on
	// is answered (start), one that started before is cancelled here.
	t.shutdown.Store(&shutdownCause{cause})
	for _, j := range t.byKey.jobs() {
		j.life.mu.Lock()
		if j.life.stage == running {
			j.life.cancel(cause)
		}
		j.life.mu.Unlock()
	}
	var errs []error
	for _, j := range t.sched.queued() {
		res := failedResult(j.task, errorInfo(cause))
		ok, err := t.answerQueuedJob(j, &res)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			answered++
		}
	}
	return answered, errors.Join(errs...)
}

// answerQueuedJob is answerQueued, taking j's lock, for a job found in a
// snapshot of the scheduler's queues. It reports false, and no error, when a
// worker has taken and started j since the snapshot: start then ran it, or
// answered it itself (shutDown). A job taken but not yet started is still
// queued, and answered here: start finds the answer.
func (t *taskTable) answerQueuedJob(j *job, res *domain.Result) (bool, error) {
	j.life.mu.Lock()
	defer j.life.mu.Unlock()
	if j.life.stage != queued {
		return false, nil
	}
	return true, t.answerQueued(j, res)
}

// answerQueued moves a queued job to answered and to the scheduler's
// immediate lane; if a worker already took it, start finds the answer.
// Callers hold j.life.mu.
func (t *taskTable) answerQueued(j *job, res *domain.Result) error {
	if err := t.answer(j, res); err != nil {
		return err
	}
	t.sched.expedite(j)
	return nil
}

// answer moves a queued job to answered. Callers hold j.life.mu.
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
	return t.settleLocked(j, remember)
}

// settleItems settles the job of every item, as settle does, under one
// taking of the lock: a sender settles a whole batch at once. When
// delivered, each item's result is remembered. Each item's settles are set
// to the Settle callbacks of its job's deliveries (nil for a job that could
// not be settled: a lifecycle bug, in the error returned).
func (t *taskTable) settleItems(items []outboxItem, delivered bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for i := range items {
		it := &items[i]
		var remember *domain.Result
		if delivered {
			remember = &it.result
		}
		var err error
		if it.settles, err = t.settleLocked(it.job, remember); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// settleLocked is settle, for callers holding mu.
func (t *taskTable) settleLocked(j *job, remember *domain.Result) ([]func(error), error) {
	j.life.mu.Lock()
	err := t.move(j, settled)
	j.life.mu.Unlock()
	if err != nil {
		return nil, err
	}
	settles := j.life.settles
	j.life.settles = nil
	if !j.untracked {
		t.byKey.untrack(j, remember)
		if j.id != j.key && t.byTaskID[j.id] == j {
			delete(t.byTaskID, j.id)
		}
	}
	return settles, nil
}

// move moves j to stage to if the lifecycle allows it. Callers hold
// j.life.mu.
func (t *taskTable) move(j *job, to stage) error {
	if !j.life.stage.canMoveTo(to) {
		return &illegalTransition{j.id, j.life.stage, to}
	}
	j.life.stage = to
	return nil
}
